package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// reconnect opens n connections at once, as clients reconnecting together
// after an outage would (every dial starts at the same moment), each
// sending one line to the echo backend through the relay and reading it
// back, then closing. It counts what failed and how: a refused or reset
// connection is one the relay (or the kernel in front of it) did not take.
func reconnect(args []string) error {
	fs := flag.NewFlagSet("reconnect", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:7000", "relay to connect to (its backend: tcpops-load serve)")
	n := fs.Int("n", 9000, "connections, all at once (at most 20,000)")
	sources := fs.Int("sources", 4, "source addresses 127.0.0.1.. to spread over")
	timeout := fs.Duration("timeout", 20*time.Second, "each connection's deadline, dial to answer")
	fs.Parse(args)
	if *n < 1 || *n > 20000 {
		return fmt.Errorf("-n %d: want 1..20000", *n)
	}
	var ok, refused, reset, timedOut, other atomic.Int64
	var mu sync.Mutex
	var firstOther error
	var slowest atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			err := reconnectOne(*addr, i%*sources, *timeout)
			d := int64(time.Since(t0))
			for {
				s := slowest.Load()
				if d <= s || slowest.CompareAndSwap(s, d) {
					break
				}
			}
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, syscall.ECONNREFUSED):
				refused.Add(1)
			case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF):
				reset.Add(1)
			case errors.Is(err, os.ErrDeadlineExceeded):
				timedOut.Add(1)
			default:
				other.Add(1)
				mu.Lock()
				if firstOther == nil {
					firstOther = err
				}
				mu.Unlock()
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	fmt.Printf("reconnect: %d at once: %d answered, %d refused, %d reset, %d timed out, %d other; all done in %.2f s, slowest %.2f s\n",
		*n, ok.Load(), refused.Load(), reset.Load(), timedOut.Load(), other.Load(), time.Since(t0).Seconds(), time.Duration(slowest.Load()).Seconds())
	if firstOther != nil {
		fmt.Println("reconnect: first other error:", firstOther)
	}
	if ok.Load() != int64(*n) {
		return fmt.Errorf("%d of %d connections failed", int64(*n)-ok.Load(), *n)
	}
	return nil
}

func reconnectOne(addr string, k int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c, err := dialFrom(addr, k)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	msg := []byte("Ehello\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg)-1)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != "hello\n" {
		return fmt.Errorf("answer %q", got)
	}
	return nil
}
