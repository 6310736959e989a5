package control

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/sock"
)

func TestAppendListMatchesEncodingJSON(t *testing.T) {
	infos := []conn.Info{
		{ID: 1, Proto: "tcp", Direction: conn.DirIn, Listener: "tcp://127.0.0.1:5060", Local: netip.MustParseAddrPort("127.0.0.1:5060"),
			Remote: netip.MustParseAddrPort("127.0.0.1:40000"), State: conn.StateAccepting, Created: time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.Local),
			Idle: 1234 * time.Millisecond, Lifetime: 120 * time.Second, ExpiresIn: 118766 * time.Millisecond, ClosedEvent: true, BytesOut: 99},
		{ID: 2, Peer: 1, Proto: "ws", Direction: conn.DirOut, Listener: "odd \"name\" \\ \n\t\x01 é \u2028 <&>",
			Remote: netip.MustParseAddrPort("[::1]:80"), State: conn.StateEOF, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
			Keepalive: &sock.Keepalive{Enabled: true, Idle: 60, Count: 5, Interval: 5, UserTimeoutMs: 7000}, BytesIn: 1 << 40, BytesOut: 3},
		{ID: 3, Listener: "bad utf8 \xff", Keepalive: &sock.Keepalive{}, Idle: time.Millisecond, ExpiresIn: 123456789 * time.Millisecond, State: 9},
		{ID: 4, Proto: "wss", Direction: conn.DirIn, Remote: netip.MustParseAddrPort("198.51.100.7:4660"), Via: netip.MustParseAddrPort("10.0.0.1:33000"),
			TLS: &conn.TLSInfo{Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256", SNI: "sip.example.com\"\x01"},
			WS:  &conn.WSInfo{Path: "/sip", Subprotocol: "sip", Origin: "https://app.example.com <é>"}},
		{ID: 5, Proto: "tls", TLS: &conn.TLSInfo{Version: "TLS 1.2", Cipher: "x", ALPN: "h2", PeerSubject: "CN=a,O=b"}, WS: &conn.WSInfo{Path: "/"}},
		{ID: 6, Overrides: []conn.Override{{What: conn.WhatKeepalive, Until: time.Date(2026, 11, 26, 11, 0, 0, 5, time.Local)},
			{What: conn.WhatClosedEvent, Until: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}}},
		{ID: 16, Proto: "tcp", Rated: true, Rate: 1234.56, Suspect: []conn.Suspect{conn.SuspectSendStalled, conn.SuspectRetransmitting},
			TCPInfo: &sock.TCPInfo{State: 1, StateName: "ESTABLISHED", Unacked: 3, Retransmits: 4, RecvQ: 10, SendQ: 20, SndWnd: 65535}},
		{ID: 17, Rated: true, TCPInfo: &sock.TCPInfo{}},
	}
	for _, next := range []uint64{0, 3} {
		got := appendList(nil, infos, next)
		wire := rpc.ListResult{Next: next}
		for _, in := range infos {
			wire.Connections = append(wire.Connections, wireConn(in))
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		enc.Encode(wire)
		if string(got) != string(bytes.TrimSpace(want.Bytes())) {
			t.Fatalf("hand encoding differs:\n got %s\nwant %s", got, want.Bytes())
		}
	}
	total := 42
	got, want := appendPage(nil, infos[:1], 1, total), rpc.ListResult{Connections: []rpc.Conn{wireConn(infos[0])}, Next: 1, Total: &total}
	if w, _ := json.Marshal(want); string(got) != string(w) {
		t.Fatalf("page with total:\n got %s\nwant %s", got, w)
	}
	if got := string(appendList(nil, nil, 0)); got != `{"connections":[]}` {
		t.Fatalf("empty list = %s", got)
	}
	// A dry run's answer decodes as a BulkResult.
	var br rpc.BulkResult
	if err := json.Unmarshal(appendDryRun(nil, infos), &br); err != nil || br.Matched != len(infos) || !br.DryRun ||
		len(br.Connections) != len(infos) || br.Applied == nil || br.Failed == nil || len(br.Connections[5].Overrides) != 2 {
		t.Fatalf("dry run answer %s: %+v, %v", appendDryRun(nil, infos), br, err)
	}
}
