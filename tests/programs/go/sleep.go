// sleep: time.Sleep and time.Ticker; prints only what is deterministic (counts and whether
// at least the requested time passed).
package main

import (
	"fmt"
	"time"
)

func main() {
	start := time.Now()
	time.Sleep(100 * time.Millisecond)
	fmt.Println("slept at least 100ms:", time.Since(start) >= 100*time.Millisecond)

	start = time.Now() // before the ticker: its 10th tick comes 200ms or more after it
	ticker := time.NewTicker(20 * time.Millisecond)
	ticks := 0
	for range ticker.C {
		ticks++
		if ticks == 10 {
			break
		}
	}
	ticker.Stop()
	fmt.Println("ticks", ticks, "took at least 200ms:", time.Since(start) >= 200*time.Millisecond)

	select {
	case <-time.After(50 * time.Millisecond):
		fmt.Println("time.After fired")
	case <-make(chan int):
	}
	timer := time.AfterFunc(time.Hour, func() {})
	fmt.Println("stopped a pending timer:", timer.Stop())
}
