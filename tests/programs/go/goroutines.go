// goroutines: 1000 goroutines pass numbers over channels (a pipeline and a fan-in),
// counted with a sync.WaitGroup; a mutex-protected map; the results are deterministic.
package main

import (
	"fmt"
	"sync"
)

func main() {
	const n = 1000
	in := make(chan int)
	out := make(chan int, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int]int{}
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			for v := range in {
				mu.Lock()
				seen[id%10]++
				mu.Unlock()
				out <- v * v
			}
		}(w)
	}
	go func() {
		for i := 0; i < 20000; i++ {
			in <- i
		}
		close(in)
	}()
	go func() {
		wg.Wait()
		close(out)
	}()
	sum, count := 0, 0
	for v := range out {
		sum += v
		count++
	}
	total := 0
	for _, c := range seen {
		total += c
	}
	// a chain of 1000 goroutines, each adding one
	first := make(chan int)
	prev := first
	for i := 0; i < n; i++ {
		next := make(chan int)
		go func(from, to chan int) { to <- 1 + <-from }(prev, next)
		prev = next
	}
	first <- 0
	fmt.Println("count", count, "sum", sum, "handled", total, "chain", <-prev)
}
