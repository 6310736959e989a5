package control

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
)

// BenchmarkDryRunServerSide is the daemon's work for a dry run of
// tcpops.close over 10,000 connections picked by CIDR: the match, the
// snapshot of each, and the answer's encoding and framing.
func BenchmarkDryRunServerSide(b *testing.B) {
	t := conn.NewTable(conn.Config{Lifetime: 120e9})
	for i := range 10000 {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 5060)
		t.Add(conn.Spec{Proto: "tcp", Direction: conn.DirIn, Remote: ap, State: conn.StateOK,
			Close: func(*conn.Conn, bool) error { return nil }})
	}
	s, err := NewServer(Config{Table: t})
	if err != nil {
		b.Fatal(err)
	}
	raw := json.RawMessage(`{"select":{"remote":"10.1.0.0/16","direction":"in"},"dry_run":true}`)
	cl := &call{s: s, m: s.methods[rpc.MethodClose], params: &raw}
	st := &stream{conn: discardConn{}}
	for b.Loop() {
		r, err := cl.close()
		if err != nil {
			b.Fatal(err)
		}
		if n := len(r.(rawJSON)); n < 10000*200 {
			b.Fatalf("answer of %d bytes for 10,000 connections", n)
		}
		if err := st.writeResult(jsonrpc2.ID{Num: 1}, r); err != nil {
			b.Fatal(err)
		}
	}
	t.CloseAll(conn.ReasonShutdown)
}
