package relay

import (
	"net"
	"net/netip"
)

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// netipAddrPort parses a literal IP:PORT; host names give false.
func netipAddrPort(hp string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(hp)
	return ap, err == nil
}
