package relay

import "net/netip"

// netipAddrPort parses a literal IP:PORT; host names give false.
func netipAddrPort(hp string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(hp)
	return ap, err == nil
}
