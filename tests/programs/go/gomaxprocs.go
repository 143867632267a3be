// gomaxprocs: what the runtime sees of the CPUs (sched_getaffinity), and runtime.NumCPU.
package main

import (
	"fmt"
	"runtime"
)

func main() {
	fmt.Println("GOMAXPROCS", runtime.GOMAXPROCS(0), "NumCPU", runtime.NumCPU())
}
