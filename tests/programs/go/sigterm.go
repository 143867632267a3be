// sigterm: os/signal catches SIGTERM (sent from outside); prints "ready" first, then
// exits 0 with a message when the signal arrives.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("ready")
	select {
	case s := <-ch:
		fmt.Println("got signal:", s)
	case <-time.After(30 * time.Second):
		fmt.Println("no signal")
		os.Exit(1)
	}
}
