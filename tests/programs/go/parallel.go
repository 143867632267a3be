// parallel: CPU-bound work split over GOMAXPROCS goroutines (no syscalls inside the loop).
// Usage: parallel [ROUNDS] [WORKERS]. Prints a checksum (deterministic) on stdout and the
// loop's own wall time in ns on stderr.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

func work(seed uint64, rounds int) uint64 {
	x := seed
	for i := 0; i < rounds; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

func main() {
	rounds := 200_000_000
	if len(os.Args) > 1 {
		rounds, _ = strconv.Atoi(os.Args[1])
	}
	workers := 4
	if len(os.Args) > 2 {
		workers, _ = strconv.Atoi(os.Args[2])
	}
	start := time.Now()
	results := make([]uint64, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			results[w] = work(uint64(w+1), rounds/workers)
		}(w)
	}
	wg.Wait()
	var sum uint64
	for _, r := range results {
		sum ^= r
	}
	fmt.Println("checksum", sum, "workers", workers)
	fmt.Fprintln(os.Stderr, "ns", time.Since(start).Nanoseconds(), "gomaxprocs", runtime.GOMAXPROCS(0))
}
