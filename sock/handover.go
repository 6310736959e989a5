package sock

import (
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// Handlers returns the handler of every watched socket, for a handover
// that stops them all.
func (p *Poller) Handlers() []Handler {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Handler, 0, p.watched)
	for _, s := range p.slots {
		if s.h != nil {
			out = append(out, s.h)
		}
	}
	return out
}

// Sysfd returns the descriptor number, for passing the socket to another
// process (SCM_RIGHTS); -1 once closed. The caller makes sure it is not
// closed meanwhile.
func (f *FD) Sysfd() int {
	n := -1
	f.do(func(fd int) error { n = fd; return nil })
	return n
}

// SocketDesc is what the kernel says of a descriptor received from
// another process, to check it is the socket it was said to be.
type SocketDesc struct {
	Type      int // unix.SOCK_STREAM, ...
	Listening bool
	Local     netip.AddrPort // TCP sockets
	Remote    netip.AddrPort // connected TCP sockets
	Path      string         // Unix sockets: the bound path
}

// Describe reads the type, listening state and addresses of fd.
func Describe(fd int) (SocketDesc, error) {
	var d SocketDesc
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return d, os.NewSyscallError("getsockopt SO_TYPE", err)
	}
	d.Type = typ
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return d, os.NewSyscallError("getsockopt SO_ACCEPTCONN", err)
	}
	d.Listening = acc == 1
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return d, os.NewSyscallError("getsockname", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrUnix:
		d.Path = sa.Name
		return d, nil
	case *unix.SockaddrInet4, *unix.SockaddrInet6:
		d.Local = sockaddrPort(sa)
	default:
		return d, fmt.Errorf("descriptor %d: not a TCP or Unix socket", fd)
	}
	if !d.Listening {
		if pa, err := unix.Getpeername(fd); err == nil {
			d.Remote = sockaddrPort(pa)
		}
	}
	return d, nil
}
