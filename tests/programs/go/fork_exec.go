package main

import (
	"fmt"
	"os/exec"
	"strings"
)

func main() {
	out, err := exec.Command("/bin/busybox", "echo", "from child").Output()
	fmt.Printf("%q %v\n", out, err)
	cmd := exec.Command("/bin/busybox", "tr", "a-z", "A-Z")
	cmd.Stdin = strings.NewReader("piped\n")
	out, err = cmd.Output()
	fmt.Printf("%q %v\n", out, err)
	err = exec.Command("/bin/busybox", "sh", "-c", "exit 5").Run()
	if e, ok := err.(*exec.ExitError); ok {
		fmt.Println("exit", e.ExitCode())
	}
}
