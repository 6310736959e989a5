// Command upgrade measures an upgrade of a running tcpops under load:
// IDLE idle relayed pairs and BUSY pairs streaming counter sequences
// through it to this program's own backend, tcpopsctl upgrade in the
// middle, then every stream checked (connections lost, bytes lost or
// duplicated, the longest pause in any stream, the upgrade's time).
//
//	go run ./bench/upgrade -addr 127.0.0.1:7002 -backend 127.0.0.1:7003 -socket S -ctl tcpopsctl -idle 9000 -busy 200
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "", "tcpops relay listener")
	backendAddr := flag.String("backend", "127.0.0.1:7003", "address to serve the echo backend on")
	socket := flag.String("socket", "", "tcpops control socket")
	ctl := flag.String("ctl", "tcpopsctl", "tcpopsctl binary")
	idleN := flag.Int("idle", 9000, "idle pairs")
	busyN := flag.Int("busy", 200, "busy pairs")
	flag.Parse()
	ln, err := net.Listen("tcp", *backendAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// A plain buffer copy: io.Copy between TCP connections splices
			// through a kernel pipe held while the copy waits, two more
			// descriptors a connection, which stopped this backend at
			// 6,665 connections under the 20,000-descriptor limit.
			go func() {
				io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 512))
				c.Close()
			}()
		}
	}()
	if len(os.Args) > 0 && *addr == "" {
		fmt.Println("backend listening; start tcpops with a listener whose backend is", *backendAddr)
		select {}
	}
	var idle []net.Conn
	for i := range *idleN {
		c, err := net.Dial("tcp", *addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "idle", i, err)
			os.Exit(1)
		}
		c.Write([]byte("x"))
		io.ReadFull(c, make([]byte, 1))
		idle = append(idle, c)
	}
	var stop atomic.Bool
	// Every pause over 20 ms in any busy stream, by when it ended.
	type gap struct {
		end time.Time
		d   time.Duration
	}
	var gapMu sync.Mutex
	var gaps []gap
	var bad atomic.Int64
	var total atomic.Uint64
	var wg sync.WaitGroup
	for range *busyN {
		c, err := net.Dial("tcp", *addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "busy", err)
			os.Exit(1)
		}
		var sent atomic.Uint32
		wg.Go(func() {
			buf := make([]byte, 1024)
			for n := uint32(0); !stop.Load(); n += 256 {
				for i := range 256 {
					binary.BigEndian.PutUint32(buf[4*i:], n+uint32(i))
				}
				if _, err := c.Write(buf); err != nil {
					bad.Add(1)
					return
				}
				sent.Store(n + 256)
				time.Sleep(5 * time.Millisecond)
			}
			c.(*net.TCPConn).CloseWrite()
		})
		wg.Go(func() {
			r := bufio.NewReader(c)
			var b [4]byte
			last := time.Now()
			for want := uint32(0); ; want++ {
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.ReadFull(r, b[:]); err != nil {
					if err != io.EOF || want != sent.Load() {
						bad.Add(1)
						fmt.Fprintln(os.Stderr, "busy read:", err, want, sent.Load())
					}
					c.Close()
					return
				}
				if binary.BigEndian.Uint32(b[:]) != want {
					bad.Add(1)
					c.Close()
					return
				}
				total.Add(4)
				if r.Buffered() == 0 {
					now := time.Now()
					if g := now.Sub(last); g > 20*time.Millisecond {
						gapMu.Lock()
						gaps = append(gaps, gap{now, g})
						gapMu.Unlock()
					}
					last = now
				}
			}
		})
	}
	// The same load without an upgrade first, for the floor of what a
	// pause measures here: a busy machine delays a stream on its own.
	time.Sleep(4 * time.Second)
	start := time.Now()
	out, err := exec.Command(*ctl, "-s", *socket, "-o", "json", "upgrade").CombinedOutput()
	took := time.Since(start)
	end := time.Now()
	fmt.Printf("upgrade: %s in %s (err %v)\n", out, took, err)
	time.Sleep(3 * time.Second)
	stop.Store(true)
	wg.Wait()
	lost := 0
	for _, c := range idle {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("y")); err != nil {
			lost++
			continue
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			lost++
		}
	}
	fmt.Printf("idle pairs: %d, lost after the upgrade: %d\n", len(idle), lost)
	fmt.Printf("busy pairs: %d, broken streams (lost, duplicated or reordered bytes, or early end): %d, bytes checked: %d\n", *busyN, bad.Load(), total.Load())
	gapMu.Lock()
	// The longest pause that overlaps the upgrade (from the call to its
	// answer), and the longest in the 2 s before and in the 2 s after it.
	var during, before, after gap
	for _, g := range gaps {
		from := g.end.Add(-g.d)
		switch {
		case g.end.After(start) && from.Before(end):
			if g.d > during.d {
				during = g
			}
		case !g.end.After(start) && g.end.After(start.Add(-2*time.Second)):
			before.d = max(before.d, g.d)
		case !from.Before(end) && from.Before(end.Add(2*time.Second)):
			after.d = max(after.d, g.d)
		}
	}
	fmt.Printf("longest pause in a busy stream during the upgrade: %s, ending %s after the call (%s)\n",
		during.d.Round(time.Millisecond), during.end.Sub(start).Round(time.Millisecond), during.end.UTC().Format("15:04:05.000"))
	fmt.Printf("longest pause in the 2 s before it and in the 2 s after it (same load, no upgrade): %s, %s\n",
		before.d.Round(time.Millisecond), after.d.Round(time.Millisecond))
	gapMu.Unlock()
}
