package sock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
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
	go func() {
		c, err := Dial(p, time.Second)
		if err == nil {
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
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

func TestPoller(t *testing.T) {
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- p.Run() }()
	c, s := pair(t)
	var fired atomic.Int32
	ready := make(chan struct{}, 4)
	fn := func() { fired.Add(1); ready <- struct{}{} }
	if err := p.Arm(s, 1, fn); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ready:
		t.Fatal("fired with nothing to read")
	case <-time.After(50 * time.Millisecond):
	}
	c.Write([]byte("x"))
	<-ready
	// One-shot: more data does not fire again until re-armed.
	c.Write([]byte("y"))
	select {
	case <-ready:
		t.Fatal("fired twice without Arm")
	case <-time.After(50 * time.Millisecond):
	}
	// Re-arming with data already waiting fires at once: no lost wake-up.
	if err := p.Arm(s, 1, fn); err != nil {
		t.Fatal(err)
	}
	<-ready
	if p.Watched() != 1 {
		t.Fatalf("watched = %d", p.Watched())
	}
	p.Forget(1)
	s.Close()
	if err := p.Arm(s, 2, fn); err == nil {
		t.Fatal("Arm of a closed socket succeeded")
	}
	if p.Watched() != 0 {
		t.Fatalf("a failed Arm left %d tokens", p.Watched())
	}
	p.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.Arm(c, 3, fn); !errors.Is(err, ErrPollerClosed) {
		t.Fatalf("Arm after Close: %v", err)
	}
}
