package sock

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSetKeepaliveOver: setting only what differs from what a socket
// inherits leaves the kernel holding what SetKeepalive would have set, for
// every kind of setting, over a listening socket with keepalive off and
// one with keepalive on (every accepted socket starts with the listening
// socket's options), and over a new socket that connects.
func TestSetKeepaliveOver(t *testing.T) {
	idle, count, intvl := kernelKeepalive()
	configs := []KeepaliveConfig{
		{UserTimeoutMs: -1},               // off
		{Enable: true, UserTimeoutMs: -1}, // on: the kernel's defaults
		{Enable: true, Idle: 45, Count: 4, Interval: 3, UserTimeoutMs: -1},
		{Enable: true, Idle: 45, Count: count, Interval: 3, UserTimeoutMs: 7000},
		{Enable: false, UserTimeoutMs: 0},
	}
	want := func(k KeepaliveConfig, ut int) Keepalive {
		w := Keepalive{Enabled: k.Enable, Idle: k.Idle, Count: k.Count, Interval: k.Interval, UserTimeoutMs: ut}
		if k.UserTimeoutMs >= 0 {
			w.UserTimeoutMs = k.UserTimeoutMs
		}
		if k.Idle == 0 {
			w.Idle, w.Count, w.Interval = idle, count, intvl
		}
		return w
	}
	for _, lk := range []*KeepaliveConfig{nil, {Enable: true, Idle: 100, Count: 2, Interval: 9, UserTimeoutMs: -1}} {
		lc := net.ListenConfig{KeepAlive: -1}
		ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if lk != nil {
			if err := SetKeepalive(ln.(*net.TCPListener), *lk); err != nil {
				t.Fatal(err)
			}
		}
		base, err := ListeningKeepalive(ln.(*net.TCPListener))
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range configs {
			c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
			if err != nil {
				t.Fatal(err)
			}
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			if err := SetKeepaliveOver(s.(*net.TCPConn), k, &base); err != nil {
				t.Fatal(err)
			}
			got, err := GetKeepalive(s.(*net.TCPConn))
			w := want(k, 0)
			if !k.Enable && lk != nil {
				w.Idle, w.Count, w.Interval = lk.Idle, lk.Count, lk.Interval // off leaves them
			} else if !k.Enable {
				w.Idle, w.Count, w.Interval = idle, count, intvl
			}
			if err != nil || got != w {
				t.Errorf("listener keepalive %v, accepted socket set %+v over %+v: kernel holds %+v (%v), want %+v", lk, k, base, got, err, w)
			}
			c.Close()
			s.Close()
		}
	}
	fresh, ok := NewSocketKeepalive()
	if !ok || fresh.Enabled || fresh.Idle != idle || fresh.UserTimeoutMs != 0 {
		t.Fatalf("a new socket's keepalive: %+v %v", fresh, ok)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, k := range configs {
		fd, err := Connect(ln.Addr().(*net.TCPAddr).AddrPort())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if err := SetKeepaliveOver(fd, k, &fresh); err != nil {
			t.Fatal(err)
		}
		w := want(k, 0)
		if !k.Enable {
			w.Idle, w.Count, w.Interval = idle, count, intvl
		}
		if got, err := GetKeepalive(fd); err != nil || got != w {
			t.Errorf("connected socket set %+v: kernel holds %+v (%v), want %+v", k, got, err, w)
		}
		fd.Close(false)
		s.Close()
	}
}

// TestAcceptInherits: a connection accepted from a listening socket that
// has TCP_NODELAY has it too, and Accept gives its peer's address as the
// kernel does.
func TestAcceptInherits(t *testing.T) {
	for _, nodelay := range []bool{false, true} {
		lc := net.ListenConfig{}
		if nodelay {
			lc.Control = func(_, _ string, rc syscall.RawConn) error {
				var err error
				rc.Control(func(fd uintptr) { err = SetNoDelay(fd) })
				return err
			}
		}
		ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := NoDelay(ln.(*net.TCPListener)); err != nil || got != nodelay {
			t.Fatalf("listening socket TCP_NODELAY %v %v, want %v", got, err, nodelay)
		}
		fl, err := NewListener(ln.(*net.TCPListener))
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fd, remote, err := fl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if remote.String() != c.LocalAddr().String() {
			t.Fatalf("accepted from %v, want %v", remote, c.LocalAddr())
		}
		local, peer, err := fd.Addrs()
		if err != nil || local.String() != ln.Addr().String() || peer != remote {
			t.Fatalf("Addrs %v %v %v", local, peer, err)
		}
		var v int
		fd.do(func(fd int) error { v, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); return err })
		if (v != 0) != nodelay {
			t.Fatalf("listening socket TCP_NODELAY %v: accepted socket has %d", nodelay, v)
		}
		fd.Close(false)
		c.Close()
		fl.Close()
		ln.Close()
	}
}
