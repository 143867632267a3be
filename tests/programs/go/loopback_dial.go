// A Go program dialling its own dual-stack listener: 20 rounds of concurrent dials over
// 127.0.0.1 and [::1] that close before the server accepts (half after writing a byte),
// then a happy-eyeballs net.Dial to "localhost" that gets an echo back.
package main

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"
)

func main() {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	const rounds = 20
	hosts := []string{"127.0.0.1", "::1"}
	var wg sync.WaitGroup
	errs := make(chan error, rounds*len(hosts))
	for i := 0; i < rounds; i++ {
		for _, host := range hosts {
			wg.Add(1)
			go func(i int, host string) {
				defer wg.Done()
				c, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 10*time.Second)
				if err != nil {
					errs <- err
					return
				}
				if i%2 == 0 {
					c.Write([]byte("x"))
				}
				c.Close()
			}(i, host)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fmt.Println("dial:", err)
	}
	got := map[string]int{}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
	for n := 0; n < rounds*len(hosts); n++ {
		c, err := ln.Accept()
		if err != nil {
			fmt.Println("accept:", err)
			break
		}
		buf := make([]byte, 4)
		k, _ := c.Read(buf)
		got[fmt.Sprintf("closed before accept, read %d byte(s)", k)]++
		c.Close()
	}
	lines := []string{}
	for k, v := range got {
		lines = append(lines, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}

	ln.(*net.TCPListener).SetDeadline(time.Time{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 4)
				n, _ := c.Read(buf)
				c.Write(buf[:n])
				c.Close()
			}()
		}
	}()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("localhost", port), 10*time.Second)
	if err != nil {
		fmt.Println("dial localhost:", err)
		os.Exit(1)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	n, err := c.Read(buf)
	fmt.Printf("localhost echo: %q %v\n", buf[:n], err)
}
