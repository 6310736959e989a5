package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
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

// wsEcho sends total bytes as binary WebSocket messages of size bytes
// over one connection (wss:// or ws://) to an echo and reads each back,
// with up to 8 messages in flight, and reports MB/s each way and the
// server's CPU per GB when its pid is given.
func wsEcho(args []string) error {
	fs := flag.NewFlagSet("wsecho", flag.ExitOnError)
	url := fs.String("url", "", "ws:// or wss:// URL of an echo")
	total := fs.String("bytes", "256MiB", "bytes to send")
	size := fs.Int("size", 16<<10, "message size")
	pid := fs.Int("pid", 0, "server pid, for its CPU")
	fs.Parse(args)
	n, err := parseBytes(*total)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}}}
	c, _, err := websocket.Dial(ctx, *url, opts)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(int64(*size) + 1024)
	msgs := int(n / int64(*size))
	msg := make([]byte, *size)
	cpu0 := cpu(*pid)
	start := time.Now()
	errc := make(chan error, 1)
	inflight := make(chan struct{}, 8)
	go func() {
		for range msgs {
			_, b, err := c.Read(ctx)
			if err != nil || len(b) != *size {
				errc <- fmt.Errorf("read: %d bytes, %v", len(b), err)
				return
			}
			<-inflight
		}
		errc <- nil
	}()
	for range msgs {
		inflight <- struct{}{}
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			return err
		}
	}
	if err := <-errc; err != nil {
		return err
	}
	took := time.Since(start)
	moved := float64(msgs) * float64(*size)
	fmt.Printf("ws echo: %d x %d B in %s = %.0f MB/s each way", msgs, *size, took.Round(time.Millisecond), moved/took.Seconds()/1e6)
	if *pid > 0 {
		used := cpu(*pid) - cpu0
		fmt.Printf(", server CPU %s = %.2f s/GB", used.Round(time.Millisecond), used.Seconds()/(moved/1e9))
	}
	fmt.Println()
	c.Close(websocket.StatusNormalClosure, "")
	return nil
}
