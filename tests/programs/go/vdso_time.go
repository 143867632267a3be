// vdso_time ROUNDS: the Go runtime's clocks (nanotime and walltime, which it reads through the
// vDSO when AT_SYSINFO_EHDR names one). Prints the wall clock it read first and last, in
// ns since the epoch, whether the monotonic reading ever went back over many time.Now()
// calls, and whether time.Since measured a sleep as at least its length.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	rounds, err := 0, error(nil)
	if len(os.Args) == 2 {
		rounds, err = strconv.Atoi(os.Args[1])
	}
	if len(os.Args) != 2 || err != nil {
		fmt.Println("usage: vdso_time ROUNDS")
		os.Exit(2)
	}
	first := time.Now()
	prev := first
	backwards := 0
	for i := 0; i < rounds; i++ {
		now := time.Now()
		if now.Sub(prev) < 0 {
			backwards++
		}
		prev = now
	}
	start := time.Now()
	time.Sleep(50 * time.Millisecond)
	slept := time.Since(start)
	fmt.Println("first_realtime", first.UnixNano())
	fmt.Println("backwards", backwards)
	fmt.Println("slept_at_least_50ms", slept >= 50*time.Millisecond, "under_5s", slept < 5*time.Second)
	fmt.Println("last_realtime", time.Now().UnixNano())
}
