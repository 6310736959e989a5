package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/sock"
	"golang.org/x/sys/unix"
)

// env is a relay serving one listener on 127.0.0.1.
type env struct {
	t     *testing.T
	table *conn.Table
	srv   *Server
	addr  string
	sub   *conn.Subscription
}

func start(t *testing.T, tcfg conn.Config, rcfg Config, listen string) *env {
	t.Helper()
	tb := conn.NewTable(tcfg)
	if rcfg.Keepalive == (sock.KeepaliveConfig{}) {
		rcfg.Keepalive = sock.KeepaliveConfig{Enable: true, Idle: 30, Count: 4, Interval: 5, UserTimeoutMs: -1}
	}
	srv, err := NewServer(tb, rcfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ParseListener(listen, Echo)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := srv.Listen(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ln.Serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		tb.Shutdown(context.Background())
		srv.Close()
	})
	return &env{t: t, table: tb, srv: srv, addr: ln.Addr().String(), sub: tb.Events().Subscribe(0)}
}

func (e *env) dial() *net.TCPConn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// event waits (up to 10 s) for the next closed event.
func (e *env) event() conn.Event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, lost, err := e.sub.Next(ctx, 1)
	if err != nil || lost != nil {
		e.t.Fatalf("waiting for a closed event: %v %v", err, lost)
	}
	return evs[0]
}

// events waits for n closed events and returns them by conid.
func (e *env) events(n int) map[uint64]conn.Event {
	e.t.Helper()
	out := map[uint64]conn.Event{}
	for range n {
		ev := e.event()
		out[ev.ConnID] = ev
	}
	return out
}

// waitConns waits until the table holds n connections in state st.
func (e *env) waitConns(n int, st conn.State) []conn.Info {
	e.t.Helper()
	var infos []conn.Info
	if !testutil.Until(func() bool {
		infos, _ = e.table.List(conn.Filter{State: st})
		return len(infos) == n
	}) {
		e.t.Fatalf("table has %d connections in state %v, want %d", len(infos), st, n)
	}
	return infos
}

// backend is a TCP test server; handle runs per connection.
func backend(t *testing.T, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range open {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().String()
}

// upper answers each line in upper case and, on EOF, sends "bye" and FIN.
// echoBack is a backend handler sending back what it reads, then FIN.
func echoBack(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

func upper(c *net.TCPConn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			c.Write([]byte("bye\n"))
			return
		}
		c.Write([]byte(strings.ToUpper(line)))
	}
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b []byte
	one := make([]byte, 1)
	for {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("read: %v (after %q)", err, b)
		}
		if one[0] == '\n' {
			return string(b)
		}
		b = append(b, one[0])
	}
}

func TestEcho(t *testing.T) {
	e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?backend=echo")
	c := e.dial()
	if st := e.waitConns(1, conn.StateAccepting); st[0].Direction != conn.DirIn {
		t.Fatalf("accepted conn: %+v", st[0])
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, more than the socket buffers
	go c.Write(big)
	got := make([]byte, len(big))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("echo returned different bytes")
	}
	// The relay counts a write when the call returns, which may be just
	// after the client has the bytes.
	var in conn.Info
	if !testutil.Until(func() bool {
		in = e.waitConns(1, conn.StateOK)[0]
		return in.BytesIn == uint64(len(big)) && in.BytesOut == uint64(len(big))
	}) {
		t.Fatalf("bytes in/out = %d/%d, want %d each", in.BytesIn, in.BytesOut, len(big))
	}
	c.Close()
	ev := e.event()
	if ev.Reason != conn.ReasonEOF || ev.BytesIn != uint64(len(big)) {
		t.Fatalf("event = %+v, want eof", ev)
	}
}

func TestRelayBothWaysAndHalfClose(t *testing.T) {
	be := backend(t, upper)
	e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?backend="+be)
	c := e.dial()
	c.Write([]byte("hello\n"))
	if got := readLine(t, c); got != "HELLO" {
		t.Fatalf("got %q, want HELLO", got)
	}
	legs := e.waitConns(2, conn.StateOK)
	in, out := legs[0], legs[1]
	if in.Direction != conn.DirIn || out.Direction != conn.DirOut || in.Peer != out.ID || out.Peer != in.ID {
		t.Fatalf("legs not paired: %+v %+v", in, out)
	}
	if out.Remote.String() != be {
		t.Fatalf("outbound remote = %q, want %q", out.Remote, be)
	}
	// Half-close: our FIN reaches the backend, which still answers.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, c); got != "bye" {
		t.Fatalf("after half-close got %q, want bye", got)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after backend FIN = %d, %v; want EOF", n, err)
	}
	evs := e.events(2)
	if evs[in.ID].Reason != conn.ReasonEOF || evs[out.ID].Reason != conn.ReasonEOF {
		t.Fatalf("reasons in=%q out=%q, want eof both", evs[in.ID].Reason, evs[out.ID].Reason)
	}
	if evs[in.ID].BytesIn != 6 || evs[in.ID].BytesOut != 10 {
		t.Fatalf("inbound bytes in/out = %d/%d, want 6/10", evs[in.ID].BytesIn, evs[in.ID].BytesOut)
	}
}

func TestCloseReasons(t *testing.T) {
	be := backend(t, upper)
	refused := refusedAddr(t)
	resetter := backend(t, func(c *net.TCPConn) {
		bufio.NewReader(c).ReadString('\n')
		c.SetLinger(0)
	})
	tests := []struct {
		name     string
		backend  string
		lifetime time.Duration
		act      func(e *env, c *net.TCPConn, in conn.Info)
		wantIn   conn.Reason
		wantOut  conn.Reason // "" for echo
		wantRead error       // what the client reads at the end (nil: EOF)
	}{
		{name: "client FIN", backend: be, wantIn: conn.ReasonEOF, wantOut: conn.ReasonEOF,
			act: func(e *env, c *net.TCPConn, in conn.Info) { c.Close() }},
		{name: "client RST", backend: be, wantIn: conn.ReasonReset, wantOut: conn.ReasonPeer,
			act: func(e *env, c *net.TCPConn, in conn.Info) { c.SetLinger(0); c.Close() }},
		{name: "backend RST", backend: resetter, wantIn: conn.ReasonPeer, wantOut: conn.ReasonReset,
			act: func(e *env, c *net.TCPConn, in conn.Info) { c.Write([]byte("x\n")) }},
		{name: "lifetime", backend: be, lifetime: 300 * time.Millisecond, wantIn: conn.ReasonLifetime, wantOut: conn.ReasonPeer,
			act: func(e *env, c *net.TCPConn, in conn.Info) {}},
		{name: "api close", backend: be, wantIn: conn.ReasonLocal, wantOut: conn.ReasonPeer,
			act: func(e *env, c *net.TCPConn, in conn.Info) {
				cc, _ := e.table.Get(in.ID)
				cc.Close(conn.ReasonLocal, nil)
			}},
		{name: "api reset", backend: Echo, wantIn: conn.ReasonLocal, wantRead: syscall.ECONNRESET,
			act: func(e *env, c *net.TCPConn, in conn.Info) { cc, _ := e.table.Get(in.ID); cc.Reset(conn.ReasonLocal) }},
		{name: "api close of outbound leg", backend: be, wantIn: conn.ReasonPeer, wantOut: conn.ReasonLocal,
			act: func(e *env, c *net.TCPConn, in conn.Info) {
				cc, _ := e.table.Get(in.Peer)
				cc.Close(conn.ReasonLocal, nil)
			}},
		{name: "shutdown", backend: be, wantIn: conn.ReasonShutdown, wantOut: conn.ReasonShutdown,
			act: func(e *env, c *net.TCPConn, in conn.Info) { e.table.Shutdown(context.Background()) }},
		{name: "backend refused", backend: refused, wantIn: conn.ReasonPeer, wantOut: conn.ReasonError,
			act: func(e *env, c *net.TCPConn, in conn.Info) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, conn.Config{Lifetime: tt.lifetime}, Config{}, "tcp://127.0.0.1:0?backend="+tt.backend)
			c := e.dial()
			var in conn.Info
			if tt.wantOut == conn.ReasonError {
				// The dial fails; nothing to wait for.
			} else if tt.backend == Echo {
				in = e.waitConns(1, conn.StateAccepting)[0]
			} else if tt.backend == resetter {
				e.waitConns(1, conn.StateOK) // the outbound leg; the inbound one has read nothing yet
				in = e.waitConns(1, conn.StateAccepting)[0]
			} else {
				c.Write([]byte("a\n"))
				if tt.backend == be {
					readLine(t, c)
				}
				in = e.waitConns(2, conn.StateOK)[0]
			}
			tt.act(e, c, in)
			n := 2
			if tt.wantOut == "" {
				n = 1
			}
			evs := e.events(n)
			if tt.name == "lifetime" {
				// Both legs idle for the same time: either may expire
				// first and close the other, or both expire together.
				for _, ev := range evs {
					if ev.Direction == conn.DirIn {
						tt.wantIn = ev.Reason
					} else {
						tt.wantOut = ev.Reason
					}
				}
				if (tt.wantIn != conn.ReasonLifetime && tt.wantOut != conn.ReasonLifetime) ||
					(tt.wantIn != conn.ReasonLifetime && tt.wantIn != conn.ReasonPeer) ||
					(tt.wantOut != conn.ReasonLifetime && tt.wantOut != conn.ReasonPeer) {
					t.Errorf("reasons in=%q out=%q, want lifetime and lifetime or peer", tt.wantIn, tt.wantOut)
				}
			}
			for _, ev := range evs {
				want := tt.wantIn
				if ev.Direction == conn.DirOut {
					want = tt.wantOut
				}
				if ev.Reason != want {
					t.Errorf("%s leg reason = %q (error %q), want %q", ev.Direction, ev.Reason, ev.Error, want)
				}
				if ev.Direction == conn.DirOut && tt.wantOut == conn.ReasonError && !strings.Contains(ev.Error, "refused") {
					t.Errorf("refused dial event error = %q, want the errno text", ev.Error)
				}
			}
			if e.table.Len() != 0 {
				t.Errorf("table still holds %d", e.table.Len())
			}
			if tt.name == "client FIN" || tt.name == "client RST" {
				return
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if tt.wantRead == nil && err != nil {
				t.Errorf("client read ended with %v, want EOF", err)
			}
			if tt.wantRead != nil && !errors.Is(err, tt.wantRead) {
				t.Errorf("client read ended with %v, want %v", err, tt.wantRead)
			}
		})
	}
}

// refusedAddr returns an address on 127.0.0.1 where nothing listens, so
// a connect is refused. The port stays bound for the test, not listening
// and without SO_REUSEADDR, so that no listener on port 0 is given it: a
// port merely closed again could become the relay's own listener, which
// then dialled itself in a loop until no source port was left.
func refusedAddr(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
}

func TestKeepaliveApplied(t *testing.T) {
	be := backend(t, upper)
	idle, cnt, intvl := kernelKeepalive(t)
	tests := []struct {
		name string
		ka   sock.KeepaliveConfig
		want sock.Keepalive
	}{
		{"explicit", sock.KeepaliveConfig{Enable: true, Idle: 31, Count: 4, Interval: 6, UserTimeoutMs: -1},
			sock.Keepalive{Enabled: true, Idle: 31, Count: 4, Interval: 6}},
		{"on is the kernel's, not Go's 15 s", sock.KeepaliveConfig{Enable: true, UserTimeoutMs: -1},
			sock.Keepalive{Enabled: true, Idle: idle, Count: cnt, Interval: intvl}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, conn.Config{}, Config{Keepalive: tt.ka}, "tcp://127.0.0.1:0?backend="+be)
			c := e.dial()
			c.Write([]byte("a\n"))
			readLine(t, c)
			for _, in := range e.waitConns(2, conn.StateOK) {
				cc, _ := e.table.Get(in.ID)
				got, err := sock.GetKeepalive(cc.TCP())
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Errorf("%s leg keepalive = %+v, want %+v", in.Direction, got, tt.want)
				}
			}
		})
	}
	t.Run("off", func(t *testing.T) {
		e := start(t, conn.Config{}, Config{Keepalive: sock.KeepaliveConfig{UserTimeoutMs: -1}}, "tcp://127.0.0.1:0?backend="+be)
		c := e.dial()
		c.Write([]byte("a\n"))
		readLine(t, c)
		for _, in := range e.waitConns(2, conn.StateOK) {
			cc, _ := e.table.Get(in.ID)
			got, _ := sock.GetKeepalive(cc.TCP())
			if got.Enabled {
				t.Errorf("%s leg has keepalive on with --keepalive off: %+v", in.Direction, got)
			}
		}
	})
	t.Run("ss shows the timer", func(t *testing.T) {
		ss, err := exec.LookPath("ss")
		if err != nil {
			t.Skip("ss (iproute2) not installed")
		}
		e := start(t, conn.Config{}, Config{Keepalive: sock.KeepaliveConfig{Enable: true, Idle: 77, Count: 3, Interval: 9, UserTimeoutMs: -1}}, "tcp://127.0.0.1:0?backend=echo")
		c := e.dial()
		_, port, _ := net.SplitHostPort(e.addr)
		e.waitConns(1, conn.StateAccepting)
		out, err := exec.Command(ss, "-tnoi", "state", "established", "sport", "= :"+port).CombinedOutput()
		if err != nil {
			t.Fatalf("ss: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "timer:(keepalive,1min1") && !strings.Contains(string(out), "timer:(keepalive,1min16") {
			t.Fatalf("ss does not show a ~77 s keepalive timer on the accepted socket:\n%s", out)
		}
		_ = c
	})
}

func kernelKeepalive(t *testing.T) (int, int, int) {
	read := func(n string) int {
		b, err := os.ReadFile("/proc/sys/net/ipv4/" + n)
		if err != nil {
			t.Fatal(err)
		}
		var v int
		for _, ch := range strings.TrimSpace(string(b)) {
			v = v*10 + int(ch-'0')
		}
		return v
	}
	return read("tcp_keepalive_time"), read("tcp_keepalive_probes"), read("tcp_keepalive_intvl")
}

func TestLimitsRejectAtOnce(t *testing.T) {
	e := start(t, conn.Config{MaxConns: 2}, Config{}, "tcp://127.0.0.1:0?backend=echo")
	e.dial()
	e.dial()
	e.waitConns(2, conn.StateAccepting)
	// The kernel completes the handshake; tcpops then resets at once,
	// which the client sees at connect or at its first read.
	if c, err := net.Dial("tcp", e.addr); err == nil {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) && err != io.EOF {
			t.Fatalf("third connection past --max-conns 2: read err = %v, want reset or EOF", err)
		}
		c.Close()
	}
	if s := e.table.Stats(); s.Rejected != 1 || s.Conns != 2 {
		t.Fatalf("rejected=%d conns=%d, want 1 and 2", s.Rejected, s.Conns)
	}
}

func TestIdleCostsNoGoroutine(t *testing.T) {
	e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?backend=echo")
	const n = 200
	cs := make([]*net.TCPConn, n)
	for i := range cs {
		cs[i] = e.dial()
		cs[i].Write([]byte("x\n"))
	}
	for _, c := range cs {
		readLine(t, c)
	}
	e.waitConns(n, conn.StateOK)
	// Each direction's goroutine gives its pipe back and leaves once a
	// read would block, which may be just after the client has its echo.
	if !testutil.Until(func() bool { return runtime.NumGoroutine() <= 50 }) {
		t.Fatalf("%d goroutines for %d idle connections: idle connections must not hold one", runtime.NumGoroutine(), n)
	}
	if !testutil.Until(func() bool { return pipesInUse.Load() == 0 }) {
		t.Fatalf("%d kernel pipes held by idle connections, want 0", pipesInUse.Load())
	}
	if p := e.srv.Watched(); p != n {
		t.Fatalf("poller watches %d sockets, want %d", p, n)
	}
	// And they still work when idle.
	cs[n/2].Write([]byte("again\n"))
	if got := readLine(t, cs[n/2]); got != "again" {
		t.Fatalf("got %q", got)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// proxyBackend is a backend that reads a PROXY protocol header, hands it
// to the test, then answers the first line in upper case.
func proxyBackend(t *testing.T) (string, <-chan *proxyproto.Header) {
	got := make(chan *proxyproto.Header, 1)
	be := backend(t, func(c *net.TCPConn) {
		r := bufio.NewReader(c)
		h, err := proxyproto.Read(r)
		if err != nil {
			t.Errorf("backend: %v", err)
			return
		}
		got <- h
		line, _ := r.ReadString('\n')
		c.Write([]byte(strings.ToUpper(line)))
	})
	return be, got
}

func TestProxyProtocol(t *testing.T) {
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			be, got := proxyBackend(t)
			e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?proxy_protocol="+v+"&backend="+be)
			c := e.dial()
			c.Write([]byte("invite\n"))
			if l := readLine(t, c); l != "INVITE" {
				t.Fatalf("relayed %q, want INVITE after the header", l)
			}
			h := <-got
			if h.Version != map[string]byte{"v1": 1, "v2": 2}[v] || h.SourceAddr.String() != c.LocalAddr().String() || h.DestinationAddr.String() != e.addr {
				t.Fatalf("header %+v: want version %s, source %s, destination %s", h, v, c.LocalAddr(), e.addr)
			}
		})
	}
	if _, err := ParseListener("tcp://127.0.0.1:1?proxy_protocol=v3", "10.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "want v1 or v2") {
		t.Fatalf("v3: %v", err)
	}
	if _, err := ParseListener("tcp://127.0.0.1:1?proxy_protocol=v1", Echo); err == nil || !strings.Contains(err.Error(), "this listener echoes") {
		t.Fatalf("echo: %v", err)
	}
}

func TestListenerOverrides(t *testing.T) {
	e := start(t, conn.Config{Lifetime: time.Hour}, Config{}, "tcp://127.0.0.1:0?backend=echo&lifetime=300ms&keepalive=41,3,7&max_conns=1")
	e.dial()
	in := e.waitConns(1, conn.StateAccepting)[0]
	cc, _ := e.table.Get(in.ID)
	if ka, _ := sock.GetKeepalive(cc.TCP()); ka.Idle != 41 || ka.Count != 3 || ka.Interval != 7 {
		t.Fatalf("keepalive %+v, want the listener's 41,3,7", ka)
	}
	if lt, _ := cc.Lifetime(); lt != 300*time.Millisecond {
		t.Fatalf("lifetime %v, want the listener's 300ms", lt)
	}
	if c, err := net.Dial("tcp", e.addr); err == nil {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a second connection past the listener's max_conns 1 was served")
		}
		c.Close()
	}
	if ev := e.event(); ev.Reason != conn.ReasonLifetime {
		t.Fatalf("event %+v, want lifetime", ev)
	}
	if s := e.table.Stats(); s.Rejected != 1 {
		t.Fatalf("rejected = %d, want 1", s.Rejected)
	}
	for _, bad := range []string{"lifetime=soon", "keepalive=0,1,1", "max_conns=-1"} {
		if _, err := ParseListener("tcp://127.0.0.1:1?"+bad, Echo); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestHostNameBackend relays to a backend given by host name, which is
// resolved and dialled on the dialling goroutines, then handed to the
// Poller like any other: both directions, FIN and the events.
func TestHostNameBackend(t *testing.T) {
	be := backend(t, echoBack)
	_, port, _ := net.SplitHostPort(be)
	e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?backend=localhost:"+port)
	c := e.dial()
	c.Write([]byte("by name\n"))
	if got := readLine(t, c); got != "by name" {
		t.Fatalf("got %q", got)
	}
	infos := e.waitConns(2, conn.StateOK)
	for _, in := range infos {
		if in.Direction == conn.DirOut && in.Remote.String() != be {
			t.Fatalf("outbound leg remote %v, want %v", in.Remote, be)
		}
		if k, err := sock.GetKeepalive(mustConn(t, e, in.ID).TCP()); err != nil || k.Idle != 30 {
			t.Fatalf("keepalive of %s leg: %+v %v", in.Direction, k, err)
		}
		if !noDelay(t, mustConn(t, e, in.ID).TCP()) {
			t.Fatalf("%s leg: TCP_NODELAY off", in.Direction)
		}
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Fatalf("after FIN: %q %v", b, err)
	}
	for _, ev := range e.events(2) {
		if ev.Reason != conn.ReasonEOF {
			t.Fatalf("%s leg closed with %s, want eof", ev.Direction, ev.Reason)
		}
	}
}

func mustConn(t *testing.T, e *env, id uint64) *conn.Conn {
	t.Helper()
	c, ok := e.table.Get(id)
	if !ok {
		t.Fatalf("conid %d not in the table", id)
	}
	return c
}

// noDelay reads TCP_NODELAY back from the kernel.
func noDelay(t *testing.T, c syscall.Conn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v != 0
}

// TestNoDelay: like Go's own TCP connections, both legs of a relayed
// connection (accepted, and connected by address) pass small writes on at
// once (TCP_NODELAY), and so does an echoed one.
func TestNoDelay(t *testing.T) {
	be := backend(t, echoBack)
	for _, backend := range []string{be, Echo} {
		e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?backend="+backend)
		c := e.dial()
		c.Write([]byte("x\n"))
		readLine(t, c)
		infos, _ := e.table.List(conn.Filter{})
		for _, in := range infos {
			if !noDelay(t, mustConn(t, e, in.ID).TCP()) {
				t.Fatalf("backend %s, %s leg: TCP_NODELAY off", backend, in.Direction)
			}
		}
	}
}

// TestWithoutKernelPipes takes every kernel pipe the relay may use, so
// that it copies through a buffer: bytes still arrive exact through echo
// and a relayed pair, including a large transfer that the receiver reads
// slowly (the part a full socket did not take is kept and sent later).
func TestWithoutKernelPipes(t *testing.T) {
	// Take every kernel pipe the relay may use; connections of earlier
	// tests may still be giving theirs back, so take those as they come.
	var held []*kpipe
	t.Cleanup(func() {
		for _, p := range held {
			putPipe(p)
		}
	})
	if !testutil.Until(func() bool {
		for p := getPipe(); p != nil; p = getPipe() {
			held = append(held, p)
		}
		return len(held) == maxPipes
	}) {
		t.Fatalf("took %d pipes, want %d", len(held), maxPipes)
	}
	be := backend(t, echoBack)
	for _, backend := range []string{Echo, be} {
		e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?backend="+backend)
		data := make([]byte, 8<<20)
		for i := range data {
			data[i] = byte(i * 7)
		}
		c := e.dial()
		go func() {
			c.Write(data)
			c.CloseWrite()
		}()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var got []byte
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
			if len(got)%(1<<20) < 4096 {
				time.Sleep(5 * time.Millisecond) // a slow reader: the relay's writes fill up
			}
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("backend %s: %d bytes back, want the %d sent, exact", backend, len(got), len(data))
		}
		if p := pipesInUse.Load(); int(p) != maxPipes {
			t.Fatalf("pipes in use %d, want the %d held by the test", p, maxPipes)
		}
	}
}

// TestPairWithClosingLeg closes the client's leg (as tcpopsctl close or its
// lifetime would) at the worst moment: its backend leg is tabled but not
// yet paired. The backend leg must not be left behind: it closes with
// reason peer, whichever way the backend is dialled.
func TestPairWithClosingLeg(t *testing.T) {
	be := backend(t, echoBack)
	_, port, _ := net.SplitHostPort(be)
	for _, tt := range []struct{ name, backend string }{
		{"address", be},                    // connected on the poller
		{"host name", "localhost:" + port}, // dialled on a goroutine
	} {
		t.Run(tt.name, func(t *testing.T) {
			var once sync.Once
			testHookBeforePair = func(in, out *conn.Conn) { once.Do(func() { in.Close(conn.ReasonLocal, nil) }) }
			t.Cleanup(func() { testHookBeforePair = nil })
			e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?backend="+tt.backend)
			c := e.dial()
			evs := e.events(2)
			for _, ev := range evs {
				want := conn.ReasonLocal
				if ev.Direction == conn.DirOut {
					want = conn.ReasonPeer
				}
				if ev.Reason != want {
					t.Fatalf("%s leg closed with %q, want %q", ev.Direction, ev.Reason, want)
				}
			}
			if n := e.table.Len(); n != 0 {
				t.Fatalf("%d connections left in the table, want 0", n)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("client connection still open")
			}
		})
	}
}
