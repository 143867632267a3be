// N iterations (os.Args[1]) of write, read, fstat and getpid on /dev/null through Go's
// syscall package, whose calls share one windowless site (Syscall6: the number from a
// register). Prints microseconds per iteration (start-up excluded).
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	n := 5000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	fd, err := syscall.Open("/dev/null", syscall.O_RDWR, 0)
	if err != nil {
		os.Exit(1)
	}
	b := make([]byte, 1)
	var st syscall.Stat_t
	start := time.Now()
	for i := 0; i < n; i++ {
		if w, err := syscall.Write(fd, b); w != 1 || err != nil {
			os.Exit(1)
		}
		if r, err := syscall.Read(fd, b); r != 0 || err != nil {
			os.Exit(1)
		}
		if syscall.Fstat(fd, &st) != nil || syscall.Getpid() <= 0 {
			os.Exit(1)
		}
	}
	fmt.Printf("%.3f\n", float64(time.Since(start).Nanoseconds())/1e3/float64(n))
}
