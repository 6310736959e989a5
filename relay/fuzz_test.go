package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

func FuzzParseListener(f *testing.F) {
	for _, s := range []string{"tcp://127.0.0.1:5060", "tls://[::1]:5061?cert=a&key=b", "ws://0.0.0.0:80/sip?frame=text&ping=30s&origin=*.example.com",
		"wss://h:1/x?max_message=1&backend=10.0.0.1:5060&name=n", "tcp://:0?backend=echo", "udp://x:1", "tcp://a:b", "ws://h:1?ping=1ns", "tcp://h:1?name=",
		"ws://h:1/?subprotocol=sip,foo&subprotocol_required=true&frame=sip", "tcp://h:1?subprotocol=sip", "ws://h:1?subprotocol_required=true"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		l, err := ParseListener(raw, Echo)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if l.Addr == "" || l.Name == "" || CheckBackend(l.Backend) != nil || (l.isWS() && l.Path == "") || l.MaxMessage < 1 ||
			(l.SubprotocolRequired && len(l.Subprotocols) == 0) || (!l.isWS() && (len(l.Subprotocols) > 0 || l.Frame != FrameBinary)) {
			t.Fatalf("accepted %q as %+v", raw, l)
		}
	})
}

func FuzzParseKeepalive(f *testing.F) {
	for _, s := range []string{"on", "off", "60,5,5", "1,1,1", "32767,127,32767", "0,1,1", "a,b,c", "1,2", " 5 , 5 , 5 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := sock.ParseKeepalive(s)
		if err != nil {
			return
		}
		if err := k.Validate(); err != nil {
			t.Fatalf("%q parsed to an invalid %+v: %v", s, k, err)
		}
		back, err := sock.ParseKeepalive(k.String())
		if err != nil || back != k {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, k, k.String(), back, err)
		}
	})
}

var (
	relayOnce  sync.Once
	relayEcho  string // address of an echo listener
	relayPair  string // address of a listener relaying to a plain echo backend
	relayTable *conn.Table
	relayStops []func()
)

// stopFuzzRelays stops what the fuzz iterations shared.
func stopFuzzRelays() {
	for _, stop := range relayStops {
		stop()
	}
	if relayTable != nil {
		relayTable.CloseAll(conn.ReasonShutdown)
	}
}

// FuzzRelayBytes sends arbitrary bytes through the echo backend and
// through a relayed pair to a backend: what comes back is exactly what
// went in, and the half-close ends both cleanly.
func FuzzRelayBytes(f *testing.F) {
	f.Add([]byte("REGISTER sip:example.com SIP/2.0\r\n\r\n"))
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0, 0xff, '\n'}, 30000))
	f.Fuzz(func(t *testing.T, data []byte) {
		echo, pair := fuzzRelays(t)
		relayRoundTrip(t, echo, data)
		relayRoundTrip(t, pair, data)
	})
}

// fuzzRelays starts, once per process, an echo listener and a listener
// relaying to a plain echo backend, and returns their addresses.
func fuzzRelays(t *testing.T) (echo, pair string) {
	relayOnce.Do(func() {
		be, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		relayStops = append(relayStops, func() { be.Close() })
		go func() {
			for {
				c, err := be.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.(*net.TCPConn).CloseWrite(); io.Copy(io.Discard, c); c.Close() }()
			}
		}()
		relayEcho = startFuzzRelay(t, "tcp://127.0.0.1:0?backend=echo")
		relayPair = startFuzzRelay(t, "tcp://127.0.0.1:0?backend="+be.Addr().String())
	})
	return relayEcho, relayPair
}

// relayRoundTrip sends data to addr, half-closes, and requires exactly
// data back and then EOF.
func relayRoundTrip(t *testing.T, addr string, data []byte) {
	t.Helper()
	c := dialFresh(t, addr)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if (err != nil || !bytes.Equal(got, data)) && os.Getenv("TCPOPS_FUZZ_DEBUG") != "" {
		// Before closing: what the relay and the kernel hold now.
		if f, ferr := os.CreateTemp(os.Getenv("TCPOPS_FUZZ_DEBUG"), "stuck-*.txt"); ferr == nil {
			fmt.Fprintf(f, "client %s -> %s, %d of %d bytes back, %v\n", c.LocalAddr(), addr, len(got), len(data), err)
			infos, _ := relayTable.List(conn.Filter{})
			for _, in := range infos {
				fmt.Fprintf(f, "live: %+v\n", in)
			}
			fmt.Fprintf(f, "pipes in use %d\n", pipesInUse.Load())
			port := portOf(addr)
			if out, err := exec.Command("ss", "-tnoie", "( sport = :"+port+" or dport = :"+port+" )").CombinedOutput(); err == nil {
				f.Write(out)
			}
			pprof.Lookup("goroutine").WriteTo(f, 2)
			f.Close()
		}
	}
	c.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("via %s (echo %v): %d bytes back (err %v), want the %d sent", addr, addr == relayEcho, len(got), err, len(data))
	}
}

// dialFresh connects to addr from a fresh source address. A new
// connection on a 4-tuple still in TIME_WAIT can wait a second for its SYN,
// and tens of thousands of connections a second can run the kernel out of
// ports on one address; neither says anything about the relay, so such a
// connect is tried again from another address, a few times, before the
// test fails.
func dialFresh(t *testing.T, addr string) net.Conn {
	t.Helper()
	var err error
	for range 5 {
		src := &net.TCPAddr{IP: net.IPv4(127, byte(1+rand.IntN(254)), byte(rand.IntN(256)), byte(1+rand.IntN(254)))}
		d := net.Dialer{LocalAddr: src, Timeout: 2 * time.Second}
		var c net.Conn
		if c, err = d.Dial("tcp", addr); err == nil {
			return c
		}
		var ne net.Error
		if !errors.Is(err, syscall.EADDRNOTAVAIL) && !(errors.As(err, &ne) && ne.Timeout()) {
			break
		}
	}
	t.Fatalf("connect to %s: %v", addr, err)
	return nil
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// startFuzzRelay serves one listener for the rest of the process.
func startFuzzRelay(t *testing.T, listen string) string {
	if relayTable == nil {
		relayTable = conn.NewTable(conn.Config{})
	}
	srv, err := NewServer(relayTable, Config{Keepalive: sock.KeepaliveConfig{Enable: true, UserTimeoutMs: -1}}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	l, err := ParseListener(listen, Echo)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen(t.Context(), l)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ln.Serve(ctx)
	}()
	relayStops = append(relayStops, func() {
		cancel()
		<-done
		relayTable.CloseAll(conn.ReasonShutdown)
		srv.Close()
	})
	return ln.Addr().String()
}
