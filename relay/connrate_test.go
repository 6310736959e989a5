package relay

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

// rawBackend answers each connection's request with "ok" and closes it,
// on one goroutine with blocking system calls: it allocates nothing, so
// that a benchmark's allocations are the relay's.
func rawBackend(b *testing.B) netip.AddrPort {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		b.Fatal(err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		b.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	b.Cleanup(func() { unix.Shutdown(fd, unix.SHUT_RDWR); unix.Close(fd) })
	go func() {
		buf := make([]byte, 512)
		for {
			c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err != nil {
				return
			}
			if n, _ := unix.Read(c, buf); n > 0 {
				unix.Write(c, []byte("ok"))
			}
			unix.Close(c)
		}
	}()
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
}

// BenchmarkConnRate: one relayed connection after the other, as a client
// making one request would: connect, send a request, read the backend's
// answer and its FIN, close; then both legs leave the table with their
// closed events. The client and the backend use blocking system calls
// and allocate nothing: allocs/op are the relay's and the table's.
func BenchmarkConnRate(b *testing.B) {
	be := rawBackend(b)
	tb := conn.NewTable(conn.Config{})
	srv, err := NewServer(tb, Config{Keepalive: sock.KeepaliveConfig{Enable: true, UserTimeoutMs: -1}}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	l, err := ParseListener("tcp://127.0.0.1:0?backend="+be.String(), Echo)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	bd, err := srv.Listen(ctx, l)
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { bd.Serve(ctx); close(served) }()
	defer func() { cancel(); <-served; srv.Close() }()
	addr := bd.Addr().(*net.TCPAddr).AddrPort()
	sa := &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())}
	req := []byte("GET / HTTP/1.0\r\n\r\n")
	buf := make([]byte, 64)
	one := func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Connect(fd, sa); err != nil {
			b.Fatal(err)
		}
		unix.Write(fd, req)
		got := 0
		for {
			n, err := unix.Read(fd, buf[got:])
			if n <= 0 || err != nil {
				break
			}
			got += n
		}
		if got != 2 {
			b.Fatalf("answer of %d bytes", got)
		}
		unix.Close(fd)
	}
	for range 200 {
		one()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		one()
	}
	b.StopTimer()
	for tb.Len() > 0 {
		unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
	}
}
