// A Go net/http client with a whole-request timeout of 1.5 s (http.Client.Timeout): the
// timer covers connect and answer together, so the silence after the request is sent is a
// little shorter than that (more than socktrace's default 1 s),
// for tests/src/apps.rs: `goclient get URL` prints one JSON line with its pid, the response
// status or the error, and the time it took. On the timeout the transport closes the
// connection's fd (close), from whichever thread runs the cancellation.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 3 || os.Args[1] != "get" {
		fmt.Fprintln(os.Stderr, "usage: goclient get URL")
		os.Exit(2)
	}
	client := &http.Client{Timeout: 1500 * time.Millisecond}
	start := time.Now()
	out := map[string]any{"pid": os.Getpid()}
	resp, err := client.Get(os.Args[2])
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		out["status"] = resp.StatusCode
	}
	out["elapsed"] = time.Since(start).Seconds()
	if err != nil {
		out["error"] = err.Error()
		if e, ok := err.(interface{ Timeout() bool }); ok {
			out["timeout"] = e.Timeout()
		}
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	// A service lives on after a request fails: the transport's cancellation closes the
	// dial's fd on another goroutine, which may run after Get returned. Exiting at once
	// would leave that close to the process's exit.
	time.Sleep(500 * time.Millisecond)
}
