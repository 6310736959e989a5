package relay

import (
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/tcpops/tcpops/conn"
)

// proxyHeader is the header a balancer sends for client (and its own
// address dst); a LOCAL command when client is invalid.
func proxyHeader(t *testing.T, version byte, client, dst netip.AddrPort) []byte {
	t.Helper()
	h := &proxyproto.Header{Version: version, Command: proxyproto.LOCAL}
	if client.IsValid() {
		h = proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(dst))
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAcceptProxy: behind a balancer the table, the limits and the events
// name the client of the header, and via the balancer; the header never
// reaches the backend, and the client's first bytes, sent with it in one
// segment, do.
func TestAcceptProxy(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.7:4660")
	for _, tt := range []struct {
		name, listen string
		version      byte
	}{
		{"v1", "accept_proxy=v1", 1},
		{"v2", "accept_proxy=v2", 2},
		{"any takes v1", "accept_proxy=any", 1},
		{"any takes v2", "accept_proxy=any&proxy_from=127.0.0.0/8,10.0.0.1", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The backend also gets a header of its own (proxy_protocol):
			// it names the client, not the balancer.
			be, got := proxyBackend(t)
			e := start(t, conn.Config{MaxConnsPerIP: 1}, Config{}, "tcp://127.0.0.1:0?proxy_protocol=v1&backend="+be+"&"+tt.listen)
			c := e.dial()
			c.Write(append(proxyHeader(t, tt.version, client, netip.MustParseAddrPort(e.addr)), "invite\n"...))
			if l := readLine(t, c); l != "INVITE" {
				t.Fatalf("relayed %q, want INVITE: the header taken, the client's bytes passed on", l)
			}
			if h := <-got; h.SourceAddr.String() != client.String() {
				t.Fatalf("backend's header names %v, want the client %v", h.SourceAddr, client)
			}
			infos, _ := e.table.List(conn.Filter{Direction: conn.DirIn})
			if len(infos) != 1 || infos[0].Remote != client || infos[0].Via.String() != c.LocalAddr().String() || infos[0].State != conn.StateOK {
				t.Fatalf("table: %+v; want remote %v via %v, state ok", infos, client, c.LocalAddr())
			}
			pfx, port, _ := conn.ParseRemote(client.String())
			if found, _ := e.table.List(conn.Filter{Remote: pfx, Port: port}); len(found) != 1 {
				t.Fatalf("list --remote %v found %d", client, len(found))
			}
			// A second connection of the same client is over
			// max-conns-per-ip 1: the limit counts the client, not the
			// balancer.
			c2 := e.dial()
			c2.Write(proxyHeader(t, tt.version, client, netip.MustParseAddrPort(e.addr)))
			ev := e.event()
			if ev.Reason != conn.ReasonError || !strings.Contains(ev.Error, "max-conns-per-ip 1") || ev.Remote != client.String() {
				t.Fatalf("second connection of the client: %+v; want closed with the per-IP limit", ev)
			}
			c.Close()
			for _, ev := range e.events(2) {
				if ev.Direction == conn.DirIn && (ev.Remote != client.String() || ev.Via != c.LocalAddr().String()) {
					t.Fatalf("closed event: remote %s via %s; want %v via %v", ev.Remote, ev.Via, client, c.LocalAddr())
				}
			}
		})
	}
}

// TestAcceptProxyRefusals: a connection without a valid header, or from a
// balancer not in proxy_from, is closed with reason error and a text that
// says why; nothing reaches the backend. A LOCAL command (a health check)
// is served with remote = via.
func TestAcceptProxyRefusals(t *testing.T) {
	for _, tt := range []struct {
		name, listen string
		send         []byte
		want         string
	}{
		{"no header", "accept_proxy=any", []byte("OPTIONS sip:x SIP/2.0\r\n"), `no PROXY protocol header: the connection starts with "OPTIONS sip:x SI"`},
		{"v2 where v1", "accept_proxy=v1", proxyHeader(t, 2, netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2")), "takes v1"},
		{"bad v1", "accept_proxy=v1", []byte("PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n"), "invalid PROXY protocol header"},
		{"closed early", "accept_proxy=v2", []byte("\r\n\r\n"), "incomplete: closed after 4 bytes"},
		{"closed at once", "accept_proxy=v2", nil, "closed before one arrived"},
		{"not allowed", "accept_proxy=v2&proxy_from=10.0.0.0/8", nil, "not in proxy_from 10.0.0.0/8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?"+tt.listen)
			c := e.dial()
			c.Write(tt.send)
			if strings.HasPrefix(tt.name, "closed") {
				c.CloseWrite()
			}
			ev := e.event()
			if ev.Reason != conn.ReasonError || !strings.Contains(ev.Error, tt.want) {
				t.Fatalf("event: reason %q, error %q; want error containing %q", ev.Reason, ev.Error, tt.want)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(make([]byte, 64)); err == nil {
				t.Fatalf("read %d bytes, want the connection closed", n)
			}
		})
	}
	t.Run("local command", func(t *testing.T) {
		e := start(t, conn.Config{}, Config{}, "tcp://127.0.0.1:0?accept_proxy=v2")
		c := e.dial()
		c.Write(append(proxyHeader(t, 2, netip.AddrPort{}, netip.AddrPort{}), "ping\n"...))
		if l := readLine(t, c); l != "ping" {
			t.Fatalf("echo %q, want ping", l)
		}
		in := e.waitConns(1, conn.StateOK)[0]
		if in.Remote.String() != c.LocalAddr().String() || in.Via != in.Remote {
			t.Fatalf("remote %v via %v; want both the balancer %v", in.Remote, in.Via, c.LocalAddr())
		}
	})
	for _, bad := range []string{"tcp://127.0.0.1:1?accept_proxy=v3", "tcp://127.0.0.1:1?proxy_from=10.0.0.0/8", "tcp://127.0.0.1:1?accept_proxy=v1&proxy_from=nonsense"} {
		if _, err := ParseListener(bad, Echo); err == nil {
			t.Fatalf("%s accepted", bad)
		}
	}
}

// TestAcceptProxyTLS: the header comes before the TLS handshake, and the
// session is described in the table.
func TestAcceptProxyTLS(t *testing.T) {
	c := certs(t)
	e := start(t, conn.Config{}, tlsConfig(c), "tls://127.0.0.1:0?accept_proxy=v1")
	client := netip.MustParseAddrPort("[2001:db8::7]:5061")
	tc := e.dial()
	tc.Write(proxyHeader(t, 1, client, netip.MustParseAddrPort("[2001:db8::1]:5061")))
	cfg := c.Client.Clone()
	cfg.ServerName = "localhost"
	cs := tls.Client(tc, cfg)
	cs.Write([]byte("hello\n"))
	if l := readLine(t, cs); l != "hello" {
		t.Fatalf("echo %q", l)
	}
	in := e.waitConns(1, conn.StateOK)[0]
	if in.Remote != client || in.TLS == nil || in.TLS.SNI != "localhost" || in.TLS.Version != "TLS 1.3" {
		t.Fatalf("remote %v, tls %+v; want %v and a TLS 1.3 session for localhost", in.Remote, in.TLS, client)
	}
}

// TestProxyHeaderLen: a v2 header is as long as its length field says,
// TLVs included (HAProxy's crc32c, unique-id, ssl options add them).
func TestProxyHeaderLen(t *testing.T) {
	client, dst := netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2")
	// Value sizes; the TLV adds 3 bytes, the IPv4 addresses 12: 16+12+3+1 =
	// 32 (0x20) and 16+12+3+4 = 35 (0x23) have the low length byte's 0x10
	// bit set, which a misread of the length field gets wrong.
	for _, n := range []int{-1, 0, 1, 4, 13, 16, 29, 45, 200} {
		h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(dst))
		if n >= 0 {
			if err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, n)}}); err != nil {
				t.Fatal(err)
			}
		}
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		got, err := proxyHeaderLen(append(b, "OPTIONS"...), ProxyV2)
		if err != nil || got != len(b) {
			t.Fatalf("header with a TLV of %d bytes: length %d, %v; want %d", n, got, err, len(b))
		}
	}
}
