package daemontest

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// DialFrom opens a TCP connection to listener i from the source address
// src (any 127.x.y.z: the whole of 127.0.0.0/8 is on the loopback) and
// waits until the daemon has it in its table; it returns the connection
// and its conid.
func (d *D) DialFrom(t testing.TB, i int, src string) (*net.TCPConn, uint64) {
	t.Helper()
	dl := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0))}
	c, err := dl.Dial("tcp", d.Addr(i))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), d.WaitTabled(t, c.LocalAddr().String())
}

// WaitTabled waits (5 s at most) until the daemon has the inbound
// connection from remote (IP:port) in its table and returns its conid.
func (d *D) WaitTabled(t testing.TB, remote string) uint64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if infos, _ := d.Table.List(filterRemote(remote)); len(infos) == 1 {
			return infos[0].ID
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("daemon did not table the connection from %s", remote)
	return 0
}
