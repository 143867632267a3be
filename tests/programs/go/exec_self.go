// syscall.Exec from a Go program with its runtime's threads running: the program
// replaces itself through /proc/self/exe (as Go tools re-exec themselves) and the new
// image prints its arguments.
package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Println("exec'd:", os.Args, os.Getenv("EXEC_GO"))
		return
	}
	go func() { // keep other threads busy while the main one execs
		for {
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(20 * time.Millisecond)
	fmt.Println("before exec")
	err := syscall.Exec("/proc/self/exe", []string{"self", "second", "third arg"},
		append(os.Environ(), "EXEC_GO=yes"))
	fmt.Println("exec failed:", err)
	os.Exit(1)
}
