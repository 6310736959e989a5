// Command tcpops-load measures tcpops (or any TCP relay) from outside:
// memory and CPU of many idle connections, list times, a burst close
// followed by an events follower, relay throughput and small-message
// latency. BENCHMARKS.md says how each figure there was made with it.
//
//	tcpops-load serve -listen 127.0.0.1:7100              echo and sink backend
//	tcpops-load idle -addr 127.0.0.1:7000 -n 9000 -pid PID [-socket S] [-ctl tcpopsctl]
//	tcpops-load relay -addr 127.0.0.1:7000 [-bytes 1GiB] [-streams 1,64] [-msgs 20000]
//	tcpops-load fleetlist -nats URL -addrs A,B,C [-n 3000] [-ctl tcpopsctl]
//	tcpops-load burst -addr A -socket S [-n 10000] [-nats URL -host H]
//	tcpops-load bulk -addr 127.0.0.1:7001 -socket S [-n 9000] [-rate 1000]
//	tcpops-load tlsrate -addr 127.0.0.1:7650 [-c 16] [-d 5s] [-pid PID]
//	tcpops-load wsecho -url wss://127.0.0.1:7652/ [-bytes 256MiB] [-size 16384] [-pid PID]
//	tcpops-load reconnect -addr 127.0.0.1:7000 [-n 9000]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/internal/proc"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "idle":
		err = idle(os.Args[2:])
	case "relay":
		err = relay(os.Args[2:])
	case "fleetlist":
		err = fleetList(os.Args[2:])
	case "burst":
		err = burst(os.Args[2:])
	case "bulk":
		err = bulk(os.Args[2:])
	case "tlsrate":
		err = tlsRate(os.Args[2:])
	case "wsecho":
		err = wsEcho(os.Args[2:])
	case "reconnect":
		err = reconnect(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcpops-load:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  tcpops-load serve -listen ADDR        backend: first byte 'E' echoes, 'S' sinks until EOF and answers "K"
  tcpops-load idle  -addr ADDR -n N -pid PID [-socket PATH] [-ctl PATH] [-sources K] [-hold DUR] [-events]
  tcpops-load relay -addr ADDR [-bytes N] [-streams 1,64] [-msgs N] [-size N]
  tcpops-load fleetlist -nats URL -addrs A,B,C [-n N] [-ctl PATH] [-rounds N]
  tcpops-load burst -addr ADDR -socket PATH [-n N] [-nats URL -host NAME]
  tcpops-load bulk  -addr ADDR -socket PATH [-n N] [-sources K] [-rate R]
  tcpops-load tlsrate -addr ADDR [-c K] [-d DUR] [-pid PID]
  tcpops-load wsecho -url wss://ADDR/PATH [-bytes N] [-size N] [-pid PID]
  tcpops-load reconnect -addr ADDR [-n N] [-sources K] [-timeout DUR]`)
	os.Exit(2)
}

// serve is the backend: echo or sink, chosen by the first byte.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:7100", "address to listen on")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Println("serving on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			mode := make([]byte, 1)
			if _, err := io.ReadFull(c, mode); err != nil {
				return
			}
			switch mode[0] {
			case 'E':
				buf := make([]byte, 32<<10)
				io.CopyBuffer(c, c, buf)
			case 'S':
				sink(c)
				c.Write([]byte("K"))
			default:
				io.Copy(io.Discard, c) // idle holders: wait for the close
			}
		}()
	}
}

// sink reads c to EOF with a large buffer, as iperf3's receiver does
// (io.Discard would read 8 KiB at a time and spend the cores the relay
// under test needs).
func sink(c net.Conn) {
	buf := make([]byte, 256<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// memory reads a process's RSS and PSS in bytes (-1 if unreadable).
func memory(pid int) (rss, pss int64) {
	rss, pss, err := proc.Memory(pid)
	if err != nil {
		return -1, -1
	}
	return rss, pss
}

// cpu reads a process's user+system time (-1 if unreadable).
func cpu(pid int) time.Duration {
	d, err := proc.CPU(pid)
	if err != nil {
		return -1
	}
	return d
}

// dialFrom connects from source 127.0.0.(k+1), spreading connections over
// several source addresses where one runs out of ports.
func dialFrom(addr string, k int) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(k+1))}, Timeout: 10 * time.Second,
		// The port is chosen at connect, per destination, as without a
		// source address: bind(2) alone would want a port no other
		// socket holds, and runs out after a few bursts (TIME_WAIT).
		Control: func(_, _ string, rc syscall.RawConn) error {
			var err error
			rc.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			return err
		}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func idle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:7000", "listener to connect to")
	n := fs.Int("n", 1000, "connections to open")
	pid := fs.Int("pid", 0, "process to measure (the relay)")
	sock := fs.String("socket", "", "tcpops control socket (list timings, burst-close events); empty: not tcpops")
	ctl := fs.String("ctl", "", "tcpopsctl binary to time '-o json list' with")
	sources := fs.Int("sources", 4, "source addresses 127.0.0.1.. to spread over")
	hold := fs.Duration("hold", 10*time.Second, "how long to hold the connections idle while measuring CPU")
	rounds := fs.Int("lists", 5, "list timings to take")
	fs.Parse(args)
	if *pid == 0 {
		return errors.New("-pid is needed")
	}
	rss0, pss0 := memory(*pid)
	conns := make([]*net.TCPConn, 0, *n)
	for i := range *n {
		c, err := dialFrom(*addr, i%*sources)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		// One byte so that the relay leg reaches its backend and is idle
		// the way a real client is after its first request.
		c.Write([]byte{'I'})
		conns = append(conns, c)
	}
	time.Sleep(3 * time.Second) // settle: dials, first bytes, parking
	rss1, pss1 := memory(*pid)
	fmt.Printf("idle: %d connections: RSS %.1f -> %.1f MiB (+%.0f B/conn), PSS +%.0f B/conn\n",
		*n, mib(rss0), mib(rss1), float64(rss1-rss0)/float64(*n), float64(pss1-pss0)/float64(*n))
	c0 := cpu(*pid)
	time.Sleep(*hold)
	used := cpu(*pid) - c0
	fmt.Printf("idle: CPU over %s holding them: %s (%.2f%%)\n", *hold, used, 100*used.Seconds()/hold.Seconds())
	// Again once they have been idle that long: what the process keeps
	// for them once the garbage of opening them is collected and given
	// back.
	rss2, pss2 := memory(*pid)
	fmt.Printf("idle: after holding them: RSS %.1f MiB (+%.0f B/conn), PSS +%.0f B/conn\n",
		mib(rss2), float64(rss2-rss0)/float64(*n), float64(pss2-pss0)/float64(*n))
	var follow *follower
	if *sock != "" {
		if err := listTimes(*sock, *ctl, *rounds); err != nil {
			return err
		}
		f, err := startFollower(*sock)
		if err != nil {
			return err
		}
		follow = f
	}
	var want int64
	if follow != nil {
		want = follow.tabled(*sock)
	}
	for _, c := range conns {
		c.Close()
	}
	lastFIN := time.Now()
	if follow != nil {
		got, last := follow.wait(want, 30*time.Second)
		fmt.Printf("burst close: %d FINs; follower got %d of %d closed events (%.1f%%), last one %s after the last FIN, %d lost\n",
			len(conns), got, want, 100*float64(got)/float64(want), last.Sub(lastFIN).Round(time.Millisecond), follow.lost.Load())
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// listTimes times tcpops.list (whole result over the socket, undecoded)
// and, if ctl is set, tcpopsctl -o json list as a process.
func listTimes(sock, ctl string, rounds int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		return err
	}
	defer c.Close()
	var rt []time.Duration
	var size int
	for range rounds {
		var raw json.RawMessage
		t := time.Now()
		if err := c.Call(ctx, rpc.MethodList, nil, &raw); err != nil {
			return err
		}
		rt = append(rt, time.Since(t))
		size = len(raw)
	}
	// The first also reads each connection's keepalive from the kernel
	// (the daemon reads it when a snapshot first asks).
	fmt.Printf("list: tcpops.list round trip (%d KiB): first %s, median %s\n", size>>10, rt[0].Round(time.Microsecond), median(rt))
	if ctl == "" {
		return nil
	}
	var pt []time.Duration
	for range rounds {
		t := time.Now()
		cmd := exec.Command(ctl, "-s", sock, "-o", "json", "list")
		cmd.Stdout = io.Discard
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("tcpopsctl: %w", err)
		}
		pt = append(pt, time.Since(t))
	}
	fmt.Printf("list: tcpopsctl -o json list, whole process: median %s\n", median(pt))
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(10 * time.Microsecond)
}

// follower counts closed events.
type follower struct {
	got  atomic.Int64
	lost atomic.Int64
	last atomic.Int64 // unix ns of the latest event
	done chan struct{}
}

func startFollower(sock string) (*follower, error) {
	ctx := context.Background()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		return nil, err
	}
	st, err := c.Stats(ctx)
	if err != nil {
		return nil, err
	}
	f := &follower{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		c.Follow(ctx, ctx, rpc.EventsParams{Since: st.EventSeq}, func(rpc.Event) error {
			f.got.Add(1)
			f.last.Store(time.Now().UnixNano())
			return nil
		}, func(l rpc.EventsLost) error {
			f.lost.Add(int64(l.ToSeq - l.FromSeq + 1))
			return nil
		})
	}()
	return f, nil
}

// tabled is how many events the burst will make: every connection in the
// table now (both legs of each relayed one).
func (f *follower) tabled(sock string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		return 0
	}
	defer c.Close()
	st, _ := c.Stats(ctx)
	return int64(st.Connections)
}

func (f *follower) wait(want int64, max time.Duration) (int64, time.Time) {
	deadline := time.Now().Add(max)
	for f.got.Load()+f.lost.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return f.got.Load(), time.Unix(0, f.last.Load())
}

func relay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:7000", "relay (or backend, for the direct figure) to connect to")
	total := fs.String("bytes", "1GiB", "bytes to send in all, split over the streams")
	streams := fs.String("streams", "1,64", "stream counts to measure")
	msgs := fs.Int("msgs", 20000, "small messages for the latency figure (0: skip)")
	size := fs.Int("size", 64, "small message size")
	fs.Parse(args)
	nbytes, err := parseBytes(*total)
	if err != nil {
		return err
	}
	for _, s := range strings.Split(*streams, ",") {
		k, err := strconv.Atoi(s)
		if err != nil || k < 1 {
			return fmt.Errorf("-streams %q", *streams)
		}
		mbs, err := throughput(*addr, k, nbytes)
		if err != nil {
			return err
		}
		fmt.Printf("throughput: %d stream(s), %d MiB: %.0f MB/s\n", k, nbytes>>20, mbs)
	}
	if *msgs > 0 {
		p50, p99, err := latency(*addr, *msgs, *size)
		if err != nil {
			return err
		}
		fmt.Printf("latency: %d x %d B round trips: p50 %s p99 %s\n", *msgs, *size, p50, p99)
	}
	return nil
}

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"GiB": 1 << 30, "MiB": 1 << 20, "KiB": 1 << 10} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("-bytes %q: want a size such as 1GiB", s)
	}
	return n * mult, nil
}

// throughput sends total bytes over k streams to a sink and waits for
// each sink's acknowledgement of the whole stream.
func throughput(addr string, k int, total int64) (float64, error) {
	per := total / int64(k)
	var wg sync.WaitGroup
	errs := make(chan error, k)
	start := time.Now()
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialFrom(addr, i%4)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			buf := make([]byte, 128<<10)
			buf[0] = 'S'
			for sent := int64(0); sent < per; {
				n := int64(len(buf))
				if per-sent < n {
					n = per - sent
				}
				if _, err := c.Write(buf[:n]); err != nil {
					errs <- err
					return
				}
				sent += n
				buf[0] = 0
			}
			c.CloseWrite()
			ack := make([]byte, 1)
			if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 'K' {
				errs <- fmt.Errorf("no acknowledgement from the sink: %v", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(per*int64(k)) / time.Since(start).Seconds() / 1e6, nil
}

// latency measures round trips of small messages on one connection.
func latency(addr string, n, size int) (p50, p99 time.Duration, err error) {
	c, err := dialFrom(addr, 0)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	c.SetNoDelay(true)
	if _, err := c.Write([]byte{'E'}); err != nil {
		return 0, 0, err
	}
	msg := make([]byte, size)
	back := make([]byte, size)
	rt := make([]time.Duration, 0, n)
	for i := range n + 100 {
		t := time.Now()
		if _, err := c.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, back); err != nil {
			return 0, 0, err
		}
		if i >= 100 { // warm-up
			rt = append(rt, time.Since(t))
		}
	}
	sort.Slice(rt, func(i, j int) bool { return rt[i] < rt[j] })
	return rt[len(rt)/2], rt[len(rt)*99/100], nil
}
