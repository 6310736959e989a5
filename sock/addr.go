package sock

import (
	"net"
	"net/netip"
	"syscall"
)

// AddrPort is the address of a TCP endpoint, IPv4-mapped IPv6 unmapped;
// invalid for anything else.
func AddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// Addrs returns the local and remote address of a *net.TCPConn or an *FD
// (invalid ones for anything else).
func Addrs(c syscall.Conn) (local, remote netip.AddrPort) {
	switch c := c.(type) {
	case *FD:
		local, remote, _ = c.Addrs()
	case net.Conn:
		local, remote = AddrPort(c.LocalAddr()), AddrPort(c.RemoteAddr())
	}
	return local, remote
}

// LocalAddr returns the local address of a *net.TCPConn or an *FD
// (invalid for anything else).
func LocalAddr(c syscall.Conn) netip.AddrPort {
	switch c := c.(type) {
	case *FD:
		local, _ := c.LocalAddr()
		return local
	case net.Conn:
		return AddrPort(c.LocalAddr())
	}
	return netip.AddrPort{}
}
