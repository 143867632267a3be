// A net/http server: GET /hello answers "hello from go\n", GET /echo?x=.. echoes x.
// It listens on :PORT (dual-stack) and prints "ready" once listening.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	ln, err := net.Listen("tcp", ":"+os.Args[1])
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from go")
	})
	http.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, r.URL.Query().Get("x"))
	})
	http.HandleFunc("/self", func(w http.ResponseWriter, r *http.Request) {
		// the server as its own client, through the guest's loopback
		resp, err := http.Get("http://127.0.0.1:" + os.Args[1] + "/hello")
		if err != nil {
			fmt.Fprintln(w, "error:", err)
			return
		}
		defer resp.Body.Close()
		buf := make([]byte, 100)
		n, _ := resp.Body.Read(buf)
		fmt.Fprintf(w, "self: %s", buf[:n])
	})
	fmt.Println("ready")
	http.Serve(ln, nil)
}
