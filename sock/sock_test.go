package sock

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseKeepalive(t *testing.T) {
	tests := []struct {
		in   string
		want KeepaliveConfig
		err  string
	}{
		{in: "off", want: KeepaliveConfig{UserTimeoutMs: -1}},
		{in: "on", want: KeepaliveConfig{Enable: true, UserTimeoutMs: -1}},
		{in: "60,5,5", want: KeepaliveConfig{Enable: true, Idle: 60, Count: 5, Interval: 5, UserTimeoutMs: -1}},
		{in: "60,5", err: `keepalive "60,5": want off, on or IDLE,COUNT,INTERVAL (seconds, e.g. 60,5,5)`},
		{in: "0,5,5", err: `keepalive "0,5,5": idle 0 out of range (want 1..32767)`},
		{in: "1,128,5", err: `keepalive "1,128,5": count 128 out of range (want 1..127)`},
		{in: "1,1,32768", err: `keepalive "1,1,32768": interval 32768 out of range (want 1..32767)`},
		{in: "a,1,1", err: `keepalive "a,1,1": "a" is not a whole number: want IDLE,COUNT,INTERVAL`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseKeepalive(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func pair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestSetKeepaliveReadsBack(t *testing.T) {
	c, _ := pair(t)
	// Go's dialer turned keepalive on with 15 s; we replace every value.
	k := KeepaliveConfig{Enable: true, Idle: 42, Count: 7, Interval: 3, UserTimeoutMs: 5000}
	if err := SetKeepalive(c, k); err != nil {
		t.Fatal(err)
	}
	got, err := GetKeepalive(c)
	want := Keepalive{Enabled: true, Idle: 42, Count: 7, Interval: 3, UserTimeoutMs: 5000}
	if err != nil || got != want {
		t.Fatalf("read back %+v, %v; want %+v", got, err, want)
	}
	// And through the kernel directly.
	rc, _ := c.SyscallConn()
	rc.Control(func(fd uintptr) {
		if v, _ := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); v != 42 {
			t.Errorf("TCP_KEEPIDLE = %d, want 42", v)
		}
	})
	if err := SetKeepalive(c, KeepaliveConfig{UserTimeoutMs: -1}); err != nil {
		t.Fatal(err)
	}
	if got, _ := GetKeepalive(c); got.Enabled || got.UserTimeoutMs != 5000 {
		t.Fatalf("after off: %+v (user timeout left as it was)", got)
	}
	if err := SetKeepalive(c, KeepaliveConfig{Enable: true, Idle: 0, Count: 3, Interval: 1}); err == nil {
		t.Fatal("idle 0 with count set was accepted")
	}
	c.Close()
	var oe *OpError
	if _, err := GetKeepalive(c); !errors.As(err, &oe) {
		t.Fatalf("GetKeepalive on a closed socket: %v, want an OpError", err)
	}
}

func TestTCPInfo(t *testing.T) {
	c, s := pair(t)
	c.Write([]byte("hello"))
	buf := make([]byte, 5)
	s.Read(buf)
	ti, err := GetTCPInfo(s)
	if err != nil || ti.StateName != "ESTABLISHED" || ti.BytesReceived != 5 {
		t.Fatalf("TCP_INFO = %+v, %v", ti, err)
	}
}

func TestPeerCred(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s")
	ln, err := Listen(p, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	read := make(chan struct{})
	dialled := make(chan struct{})
	go func() {
		defer close(dialled)
		c, err := Dial(p, time.Second)
		if err == nil {
			<-read // the client stays until its credentials are read
			c.Close()
		}
	}()
	defer func() { <-dialled }()
	defer close(read)
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cr, err := PeerCred(c)
	if err != nil || cr.UID != uint32(os.Getuid()) || cr.PID != int32(os.Getpid()) {
		t.Fatalf("cred = %+v, %v; want our uid and pid", cr, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := Listen(p, 0o600); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen on a live socket: %v, want ErrInUse", err)
	}
}

func TestDefaultSocketPath(t *testing.T) {
	t.Setenv("TCPOPS_SOCKET", "/x/y.sock")
	if got := DefaultSocketPath(); got != "/x/y.sock" {
		t.Fatalf("got %q", got)
	}
	t.Setenv("TCPOPS_SOCKET", "")
	want := "/run/tcpops/tcpops.sock"
	if os.Geteuid() != 0 {
		t.Setenv("XDG_RUNTIME_DIR", "/run/user/9")
		want = "/run/user/9/tcpops.sock"
	}
	if got := DefaultSocketPath(); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// fdPair is a connected pair: a client and the accepted side as an FD.
func fdPair(t *testing.T) (*net.TCPConn, *FD) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	fl, err := NewListener(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	f, remote, err := fl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if remote.String() != c.LocalAddr().String() {
		t.Fatalf("Accept: peer %v, want %v", remote, c.LocalAddr())
	}
	t.Cleanup(func() { c.Close(); f.Close(false) })
	return c, f
}

type events chan uint32

func (e events) Ready(ev uint32) { e <- ev }

// next waits for an event with any of the bits in want.
func (e events) next(t *testing.T, want uint32) uint32 {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-e:
			if ev&want != 0 {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event %#x within 5s", want)
		}
	}
}

func (e events) none(t *testing.T, what string) {
	t.Helper()
	select {
	case ev := <-e:
		t.Fatalf("%s: event %#x", what, ev)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestPoller(t *testing.T) {
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- p.Run() }()
	c, f := fdPair(t)
	ev := make(events, 16)
	if err := p.Add(f, ev); err != nil {
		t.Fatal(err)
	}
	// The socket's state when added: room to write, nothing to read.
	if got := ev.next(t, unix.EPOLLOUT); got&unix.EPOLLIN != 0 {
		t.Fatalf("first event %#x says readable with nothing sent", got)
	}
	ev.none(t, "edge-triggered, nothing changed")
	c.Write([]byte("x"))
	ev.next(t, unix.EPOLLIN)
	ev.none(t, "one edge per change")
	c.Write([]byte("y"))
	ev.next(t, unix.EPOLLIN) // a new edge though "x" was not read
	b := make([]byte, 8)
	if n, err := f.Read(b); n != 2 || err != nil || string(b[:n]) != "xy" {
		t.Fatalf("Read = %d %q %v", n, b[:n], err)
	}
	if _, err := f.Read(b); err != ErrWouldBlock {
		t.Fatalf("Read of nothing: %v, want ErrWouldBlock", err)
	}
	if p.Watched() != 1 {
		t.Fatalf("watched = %d", p.Watched())
	}
	c.CloseWrite()
	if got := ev.next(t, unix.EPOLLRDHUP); got&unix.EPOLLIN == 0 {
		t.Fatalf("FIN came as %#x", got)
	}
	if n, err := f.Read(b); n != 0 || err != nil {
		t.Fatalf("Read at EOF = %d %v", n, err)
	}
	p.Remove(f)
	if p.Watched() != 0 {
		t.Fatalf("watched after Remove = %d", p.Watched())
	}
	f.Write([]byte("z"))
	ev.none(t, "removed")
	f.Close(false)
	if err := p.Add(f, ev); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Add of a closed socket: %v", err)
	}
	p.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, f2 := fdPair(t)
	if err := p.Add(f2, ev); !errors.Is(err, ErrPollerClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
}

func TestFD(t *testing.T) {
	c, f := fdPair(t)
	local, remote, err := f.Addrs()
	if err != nil || local.String() != c.RemoteAddr().String() || remote.String() != c.LocalAddr().String() {
		t.Fatalf("Addrs = %v %v %v, want %v %v", local, remote, err, c.RemoteAddr(), c.LocalAddr())
	}
	// Socket options go through SyscallConn like for a net.TCPConn.
	if err := SetKeepalive(f, KeepaliveConfig{Enable: true, Idle: 31, Count: 4, Interval: 6, UserTimeoutMs: -1}); err != nil {
		t.Fatal(err)
	}
	if k, err := GetKeepalive(f); err != nil || k.Idle != 31 || k.Count != 4 || k.Interval != 6 || !k.Enabled {
		t.Fatalf("keepalive read back %+v %v", k, err)
	}
	if ti, err := GetTCPInfo(f); err != nil || ti.StateName != "ESTABLISHED" {
		t.Fatalf("TCP_INFO %+v %v", ti, err)
	}
	// Writes take what fits and then would block.
	big := make([]byte, 1<<20)
	total := 0
	for range 1000 {
		n, err := f.Write(big)
		total += n
		if err == ErrWouldBlock {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if total == 0 || total > 64<<20 {
		t.Fatalf("wrote %d bytes to a peer that does not read", total)
	}
	// A reset close: the peer sees RST.
	if err := f.Close(true); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(false); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := f.Read(big); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.Read(big); err != nil {
			if !errors.Is(err, unix.ECONNRESET) {
				t.Fatalf("peer read after a reset close: %v", err)
			}
			break
		}
	}
}

func TestTakeConn(t *testing.T) {
	c, s := pair(t)
	f, err := TakeConn(s)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(false)
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the taken conn still writes: %v", err)
	}
	if n, err := f.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write = %d %v", n, err)
	}
	if err := f.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if string(b) != "hello" || err != nil {
		t.Fatalf("peer read %q %v", b, err)
	}
}
