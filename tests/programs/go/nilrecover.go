// nilrecover: a nil-pointer dereference (a SIGSEGV in the runtime's handler) becomes a
// panic that recover() catches, several times and in a goroutine; then an integer
// division by zero (SIGFPE) likewise.
package main

import (
	"fmt"
	"runtime/debug"
)

type node struct{ val int }

func deref(p *node) (v int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return p.val, nil
}

func divide(a, b int) (v int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return a / b, nil
}

func main() {
	debug.SetPanicOnFault(true)
	for i := 0; i < 3; i++ {
		_, err := deref(nil)
		fmt.Println("recovered:", err)
	}
	done := make(chan string)
	go func() {
		_, err := deref(nil)
		done <- fmt.Sprint("in a goroutine: ", err)
	}()
	fmt.Println(<-done)
	v, err := deref(&node{42})
	fmt.Println("no fault:", v, err)
	_, err = divide(1, 0)
	fmt.Println("recovered:", err)
}
