package control

import (
	"net"
	"net/netip"
	"testing"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
)

// BenchmarkListServerSide is the daemon's work for tcpops.list of 10,000
// connections: snapshot, filter, wire conversion and JSON encoding.
func BenchmarkListServerSide(b *testing.B) {
	t := conn.NewTable(conn.Config{Lifetime: 120e9})
	for i := range 10000 {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5060)
		t.Add(conn.Spec{Proto: "tcp", Direction: conn.DirIn, Remote: ap, State: conn.StateOK,
			Close: func(*conn.Conn, bool) error { return nil }})
	}
	s, err := NewServer(Config{Table: t})
	if err != nil {
		b.Fatal(err)
	}
	cl := &call{s: s, m: s.methods[rpc.MethodList]}
	st := &stream{conn: discardConn{}}
	for b.Loop() {
		r, err := cl.list()
		if err != nil {
			b.Fatal(err)
		}
		if err := st.writeResult(jsonrpc2.ID{Num: 1}, r); err != nil {
			b.Fatal(err)
		}
	}
	t.CloseAll(conn.ReasonShutdown)
}

// discardConn is a net.Conn that takes every write.
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }
