package sock

import (
	"net"
	"net/netip"
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
