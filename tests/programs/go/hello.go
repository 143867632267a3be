// hello: the Go runtime starts (threads, signals, futexes) and prints.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Println("hello from Go", runtime.GOOS, runtime.GOARCH, len(os.Args))
}
