package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/internal/testcert"
	"github.com/tcpops/tcpops/sock"
)

func certs(t *testing.T) *testcert.Cert {
	t.Helper()
	c, err := testcert.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tlsConfig(c *testcert.Cert) Config {
	return Config{TLSCert: c.CertFile, TLSKey: c.KeyFile, HandshakeTimeout: 2 * time.Second}
}

func TestTLSEcho(t *testing.T) {
	c := certs(t)
	e := start(t, conn.Config{}, tlsConfig(c), "tls://127.0.0.1:0?backend=echo")
	raw := e.dial()
	if in := e.waitConns(1, conn.StateAccepting)[0]; in.Proto != "tls" {
		t.Fatalf("proto = %q, want tls", in.Proto)
	}
	tc := tls.Client(raw, c.Client)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := tc.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, tc); got != "hello" {
		t.Fatalf("got %q", got)
	}
	in := e.waitConns(1, conn.StateOK)[0]
	cc, _ := e.table.Get(in.ID)
	if ka, err := cc.Keepalive(); err != nil || ka.Idle != 30 {
		t.Fatalf("keepalive under TLS = %+v, %v; want the configured 30 s", ka, err)
	}
	if ti, err := cc.TCPInfo(); err != nil || ti.StateName != "ESTABLISHED" {
		t.Fatalf("TCP_INFO under TLS = %+v, %v", ti, err)
	}
	if in.BytesIn < 6 {
		t.Fatalf("bytes in = %d: counted at the socket, TLS records included", in.BytesIn)
	}
	tc.Close()
	if ev := e.event(); ev.Reason != conn.ReasonEOF || ev.Proto != "tls" {
		t.Fatalf("event = %+v", ev)
	}
}

func TestTLSRelayAndHandshakeFailures(t *testing.T) {
	c := certs(t)
	be := backend(t, upper)
	e := start(t, conn.Config{}, tlsConfig(c), "tls://127.0.0.1:0?backend="+be)
	tc := tls.Client(e.dial(), c.Client)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	tc.Write([]byte("sip\n"))
	if got := readLine(t, tc); got != "SIP" {
		t.Fatalf("got %q", got)
	}
	legs := e.waitConns(2, conn.StateOK)
	if legs[0].Proto != "tls" || legs[1].Proto != "tcp" || legs[0].Peer != legs[1].ID {
		t.Fatalf("legs = %+v", legs)
	}
	cc, _ := e.table.Get(legs[0].ID)
	cc.Close(conn.ReasonLocal, nil)
	evs := e.events(2)
	if evs[legs[0].ID].Reason != conn.ReasonLocal || evs[legs[1].ID].Reason != conn.ReasonPeer {
		t.Fatalf("events = %+v", evs)
	}
	if _, err := io.Copy(io.Discard, tc); err != nil {
		t.Fatalf("client after API close: %v, want a clean close_notify", err)
	}

	tests := []struct {
		name string
		do   func(net.Conn)
		want string
	}{
		{"plain text on a TLS port", func(c net.Conn) { c.Write([]byte("GET / HTTP/1.0\r\n\r\n")) }, "tls handshake: tls: first record does not look like a TLS handshake"},
		{"client does not trust us", func(c net.Conn) {
			tls.Client(c, &tls.Config{ServerName: "127.0.0.1"}).Handshake()
		}, "tls handshake: remote error: tls: bad certificate"},
		{"silent client", func(net.Conn) {}, "tls handshake: not done within 2s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := e.dial()
			tt.do(raw)
			ev := e.event()
			if ev.Reason != conn.ReasonError || ev.Error != tt.want || ev.Proto != "tls" {
				t.Fatalf("event reason %q error %q, want error %q", ev.Reason, ev.Error, tt.want)
			}
		})
	}
}

func wsURL(scheme, addr, path string) string { return scheme + "://" + addr + path }

func wsDial(t *testing.T, url string, tlsCfg *tls.Config, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{HTTPHeader: hdr}
	if tlsCfg != nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	}
	c, resp, err := websocket.Dial(ctx, url, opts)
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

func TestWebSocket(t *testing.T) {
	c := certs(t)
	be := backend(t, upper)
	for _, scheme := range []string{"ws", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			var cfg *tls.Config
			if scheme == "wss" {
				cfg = c.Client
			}
			echo := start(t, conn.Config{}, tlsConfig(c), scheme+"://127.0.0.1:0/sip?backend=echo")
			ws, _, err := wsDial(t, wsURL(scheme, echo.addr, "/sip"), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ws.SetReadLimit(1 << 20)
			ctx := t.Context()
			big := strings.Repeat("x", 40000) // more than one 32 KiB read
			for _, m := range []struct {
				typ  websocket.MessageType
				data string
			}{{websocket.MessageText, "REGISTER"}, {websocket.MessageBinary, "\x00\x01\x02"}, {websocket.MessageText, big}} {
				if err := ws.Write(ctx, m.typ, []byte(m.data)); err != nil {
					t.Fatal(err)
				}
				typ, data, err := ws.Read(ctx)
				if err != nil || typ != m.typ || string(data) != m.data {
					t.Fatalf("echo of a %v message of %d bytes: got %v, %d bytes, %v", m.typ, len(m.data), typ, len(data), err)
				}
			}
			in := echo.waitConns(1, conn.StateOK)[0]
			if string(in.Proto) != scheme {
				t.Fatalf("proto = %q, want %q", in.Proto, scheme)
			}
			cc, _ := echo.table.Get(in.ID)
			if ka, err := sock.GetKeepalive(cc.TCP()); err != nil || ka.Idle != 30 || !ka.Enabled {
				t.Fatalf("keepalive of the TCP socket under %s: %+v, %v", scheme, ka, err)
			}
			ws.Close(websocket.StatusNormalClosure, "bye")
			ev := echo.event()
			if ev.Reason != conn.ReasonEOF || ev.WSCloseCode != 1000 || ev.WSCloseReason != "bye" {
				t.Fatalf("event = %+v, want eof with close 1000 bye", ev)
			}

			relay := start(t, conn.Config{}, tlsConfig(c), scheme+"://127.0.0.1:0?frame=text&backend="+be)
			ws, _, err = wsDial(t, wsURL(scheme, relay.addr, "/"), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ws.Write(ctx, websocket.MessageBinary, []byte("hello\n"))
			typ, data, err := ws.Read(ctx)
			if err != nil || typ != websocket.MessageText || string(data) != "HELLO\n" {
				t.Fatalf("relayed: %v %q %v; want a text message HELLO", typ, data, err)
			}
			legs := relay.waitConns(2, conn.StateOK)
			cc, _ = relay.table.Get(legs[0].ID)
			cc.Close(conn.ReasonLocal, nil)
			_, _, err = ws.Read(ctx)
			if websocket.CloseStatus(err) != websocket.StatusGoingAway {
				t.Fatalf("after API close the client read %v, want close 1001", err)
			}
			evs := relay.events(2)
			if evs[legs[0].ID].Reason != conn.ReasonLocal || evs[legs[1].ID].Reason != conn.ReasonPeer {
				t.Fatalf("events = %+v", evs)
			}
		})
	}
}

func TestWebSocketLimitsAndRefusals(t *testing.T) {
	e := start(t, conn.Config{}, Config{}, "ws://127.0.0.1:0/ws?backend=echo&max_message=1024&ping=200ms")
	ctx := t.Context()

	t.Run("message too big", func(t *testing.T) {
		ws, _, err := wsDial(t, wsURL("ws", e.addr, "/ws"), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.Write(ctx, websocket.MessageBinary, make([]byte, 2000))
		if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
			t.Fatalf("client read %v, want close 1009", err)
		}
		ev := e.event()
		if ev.Reason != conn.ReasonError || ev.WSCloseCode != 1009 {
			t.Fatalf("event = %+v, want error with close 1009", ev)
		}
	})
	t.Run("bad origin", func(t *testing.T) {
		_, resp, err := wsDial(t, wsURL("ws", e.addr, "/ws"), nil, http.Header{"Origin": {"http://evil.example"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("dial with a foreign origin: %v, want 403", err)
		}
		ev := e.event()
		if ev.Reason != conn.ReasonError || !strings.Contains(ev.Error, `origin "http://evil.example"`) {
			t.Fatalf("event = %+v", ev)
		}
	})
	t.Run("missing pong", func(t *testing.T) {
		ws, _, err := wsDial(t, wsURL("ws", e.addr, "/ws"), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = ws // never read: pings go unanswered
		ev := e.event()
		if ev.Reason != conn.ReasonTimeout || ev.Name() != "tcp:timeout" || !strings.Contains(ev.Error, "no pong within 200ms") {
			t.Fatalf("event = %+v, want timeout", ev)
		}
	})
	for _, tt := range []struct {
		name, req string
		status    string
		errText   string
	}{
		{"plain GET", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 426", "not a WebSocket upgrade (426)"},
		{"wrong path", "GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", "HTTP/1.1 404", "no WebSocket endpoint there (404)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte(tt.req))
			status, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.HasPrefix(status, tt.status) {
				t.Fatalf("status %q, %v; want %s", status, err, tt.status)
			}
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("connection not closed after the answer: %v", err)
			}
			ev := e.event()
			if ev.Reason != conn.ReasonError || !strings.Contains(ev.Error, tt.errText) {
				t.Fatalf("event = %+v, want error %q", ev, tt.errText)
			}
		})
	}
}

func TestWebSocketLifetime(t *testing.T) {
	e := start(t, conn.Config{Lifetime: 300 * time.Millisecond}, Config{}, "ws://127.0.0.1:0?backend=echo")
	ws, _, err := wsDial(t, wsURL("ws", e.addr, "/"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Idle: the lifetime closes it with a close frame 1001.
	if _, _, err := ws.Read(t.Context()); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("client read %v, want close 1001", err)
	}
	if ev := e.event(); ev.Reason != conn.ReasonLifetime || ev.Proto != "ws" {
		t.Fatalf("event = %+v, want lifetime", ev)
	}
}
