package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tlsRate makes full TLS 1.3 handshakes (no resumption, X25519 as the
// key exchange so that every server does the same work) from k
// goroutines for a while and reports how many completed per second, and
// the server's CPU per handshake when its pid is given.
func tlsRate(args []string) error {
	fs := flag.NewFlagSet("tlsrate", flag.ExitOnError)
	addr := fs.String("addr", "", "TLS listener")
	k := fs.Int("c", 16, "concurrent clients")
	d := fs.Duration("d", 5*time.Second, "how long")
	pid := fs.Int("pid", 0, "server pid, for its CPU")
	fs.Parse(args)
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, CurvePreferences: []tls.CurveID{tls.X25519}}
	var done, failed atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(*d)
	cpu0 := cpu(*pid)
	start := time.Now()
	var wg sync.WaitGroup
	for range *k {
		wg.Go(func() {
			for time.Now().Before(stop) {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", *addr, cfg)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				done.Add(1)
				c.Close()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	used := cpu(*pid) - cpu0
	fmt.Printf("full handshakes: %d in %s = %.0f/s, failed %d", done.Load(), took.Round(time.Millisecond),
		float64(done.Load())/took.Seconds(), failed.Load())
	if *pid > 0 && done.Load() > 0 {
		fmt.Printf(", server CPU %s = %.0f µs/handshake", used.Round(time.Millisecond), float64(used.Microseconds())/float64(done.Load()))
	}
	fmt.Println()
	if e := firstErr.Load(); e != nil {
		fmt.Println("first failure:", e)
	}
	return nil
}
