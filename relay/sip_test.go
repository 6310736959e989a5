package relay

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/tcpops/tcpops/conn"
)

// sipMsg builds a SIP message with a Content-Length for body.
func sipMsg(start string, body string, headers ...string) string {
	h := strings.Join(append([]string{start,
		"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK" + fmt.Sprint(len(body)),
		"From: <sip:alice@127.0.0.1>;tag=1", "To: <sip:bob@127.0.0.1>",
		"Call-ID: c" + fmt.Sprint(len(start)), "CSeq: 1 " + strings.Fields(start)[0]}, headers...), "\r\n")
	return h + fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(body)) + body
}

// step is what a scripted backend does: write data, then pause, or wait
// for the test to say go on.
type step struct {
	data  string
	pause time.Duration
	wait  bool
}

// scripted is a backend that plays script on each connection; a step with
// wait blocks until goOn receives.
func scripted(t *testing.T, script []step, goOn chan struct{}) string {
	return backend(t, func(c *net.TCPConn) {
		for _, s := range script {
			if s.wait {
				select {
				case <-goOn:
				case <-time.After(10 * time.Second):
					return
				}
			}
			if _, err := c.Write([]byte(s.data)); err != nil {
				return
			}
			time.Sleep(s.pause)
		}
		// Then wait for the relay to close, reading what comes.
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, c)
	})
}

type wsMsg struct {
	typ  websocket.MessageType
	data string
}

// readMsgs reads n messages within 10 s.
func readMsgs(t *testing.T, ws *websocket.Conn, n int) []wsMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out []wsMsg
	for range n {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(out), err)
		}
		out = append(out, wsMsg{typ, string(data)})
	}
	return out
}

// legEvents waits for the closed events of both legs.
func legEvents(e *env) (in, out conn.Event) {
	e.t.Helper()
	for _, ev := range e.events(2) {
		if ev.Direction == conn.DirIn {
			in = ev
		} else {
			out = ev
		}
	}
	return in, out
}

func TestWebSocketFrameSIP(t *testing.T) {
	options := sipMsg("OPTIONS sip:bob@127.0.0.1 SIP/2.0", "", "Max-Forwards: 70")
	register := sipMsg("REGISTER sip:127.0.0.1 SIP/2.0", "", "Contact: <sip:bob@x.invalid;transport=ws>", "Expires: 600")
	sdp := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
	ok200 := sipMsg("SIP/2.0 200 OK", sdp+strings.Repeat("a=x-pad:0123456789\r\n", 100), "Content-Type: application/sdp")
	utf := sipMsg("MESSAGE sip:bob@127.0.0.1 SIP/2.0", "Grüße, 😀 ünd €", "Content-Type: text/plain;charset=utf-8")
	cut := strings.Index(utf, "😀") + 2 // inside the 4-byte character
	notUTF := sipMsg("MESSAGE sip:bob@127.0.0.1 SIP/2.0", "\xff\xfe\x00binary", "Content-Type: application/octet-stream")
	big := sipMsg("SIP/2.0 200 OK", "", "X-Big: "+strings.Repeat("b", 38000)) // over 32 KiB, under 64 KiB
	huge := sipMsg("SIP/2.0 200 OK", strings.Repeat("h", 90000), "Content-Type: text/plain")

	script := []step{
		{data: "\r\n\r\n" + options + register + ok200 + "\r\n" + options, pause: 20 * time.Millisecond}, // many in one write
		{data: register[:10], pause: 20 * time.Millisecond},                                              // one over several writes
		{data: register[10:50], pause: 20 * time.Millisecond},
		{data: register[50:], pause: 20 * time.Millisecond},
		{data: "\r\n\r\n", pause: 20 * time.Millisecond}, // keep-alives alone
		{data: utf[:cut], pause: 20 * time.Millisecond},  // cut inside a UTF-8 character
		{data: utf[cut:] + "\r\n" + notUTF + ok200[:len(ok200)-5], pause: 20 * time.Millisecond},
		{data: ok200[len(ok200)-5:] + big[:1000], pause: 20 * time.Millisecond},
		{data: big[1000:] + huge},
	}
	want := []wsMsg{
		{websocket.MessageText, options}, {websocket.MessageText, register}, {websocket.MessageText, ok200},
		{websocket.MessageText, options}, {websocket.MessageText, register}, {websocket.MessageText, utf},
		{websocket.MessageBinary, notUTF}, {websocket.MessageText, ok200}, {websocket.MessageText, big},
		{websocket.MessageText, huge},
	}
	be := scripted(t, script, nil)
	e := start(t, conn.Config{}, Config{}, "ws://127.0.0.1:0/?frame=sip&max_message=131072&backend="+be)
	ws, _, err := wsDial(t, wsURL("ws", e.addr, "/"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	got := readMsgs(t, ws, len(want))
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: got %v of %d bytes %q..., want %v of %d bytes %q...", i,
				got[i].typ, len(got[i].data), got[i].data[:min(len(got[i].data), 40)],
				want[i].typ, len(want[i].data), want[i].data[:min(len(want[i].data), 40)])
		}
	}
	// The client's messages reach the backend as they are; the relay
	// stays up.
	if err := ws.Write(t.Context(), websocket.MessageText, []byte(options)); err != nil {
		t.Fatal(err)
	}
	ws.Close(websocket.StatusNormalClosure, "done")
	in, _ := legEvents(e)
	if in.Reason != conn.ReasonEOF {
		t.Fatalf("inbound event %+v, want eof", in)
	}
}

func TestWebSocketFrameSIPErrors(t *testing.T) {
	options := sipMsg("OPTIONS sip:bob@127.0.0.1 SIP/2.0", "")
	tests := []struct {
		name   string
		listen string
		bad    string
		want   string // in the event's error
	}{
		{"no Content-Length", "", "SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\n\r\n",
			`frame=sip: cannot cut the backend's stream into SIP messages: SIP message without Content-Length (mandatory on a stream, RFC 3261 18.3): "SIP/2.0 200 OK"`},
		{"not SIP", "", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			`frame=sip: cannot cut the backend's stream into SIP messages: not a SIP request line or status line: "HTTP/1.1 200 OK"`},
		{"header section over 64 KiB", "&max_message=1000000", "SIP/2.0 200 OK\r\nX: " + strings.Repeat("x", 70000) + "\r\nl: 0\r\n\r\n",
			`frame=sip: cannot cut the backend's stream into SIP messages: SIP header section over 64 KiB: "SIP/2.0 200 OK"`},
		{"over max_message", "&max_message=2000", sipMsg("SIP/2.0 200 OK", strings.Repeat("x", 2000)),
			"frame=sip: cannot cut the backend's stream into SIP messages: SIP message over the size limit: \"SIP/2.0 200 OK\" is "},
		{"bad Content-Length", "", "SIP/2.0 200 OK\r\nContent-Length: ten\r\n\r\n",
			`frame=sip: cannot cut the backend's stream into SIP messages: bad Content-Length: "Content-Length: ten"`},
		{"backend ends mid-message", "", options[:30],
			"frame=sip: the backend closed in the middle of a SIP message (30 bytes not sent)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := backend(t, func(c *net.TCPConn) {
				c.Write([]byte(options))
				time.Sleep(20 * time.Millisecond)
				// The bad message comes in two writes: nothing of it
				// may reach the client either way.
				c.Write([]byte(tt.bad[:len(tt.bad)/2]))
				time.Sleep(20 * time.Millisecond)
				c.Write([]byte(tt.bad[len(tt.bad)/2:]))
				c.CloseWrite()
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				io.Copy(io.Discard, c)
			})
			e := start(t, conn.Config{}, Config{}, "ws://127.0.0.1:0/?frame=sip"+tt.listen+"&backend="+be)
			ws, _, err := wsDial(t, wsURL("ws", e.addr, "/"), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ws.SetReadLimit(1 << 20)
			if got := readMsgs(t, ws, 1); got[0].data != options {
				t.Fatalf("first message %q, want the OPTIONS", got[0].data)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			typ, data, err := ws.Read(ctx)
			if websocket.CloseStatus(err) != websocket.StatusBadGateway {
				t.Fatalf("then read %v %q, %v; want close 1014", typ, data, err)
			}
			in, out := legEvents(e)
			if in.Reason != conn.ReasonError || !strings.HasPrefix(in.Error, tt.want) {
				t.Fatalf("inbound event reason %q error %q, want error %q", in.Reason, in.Error, tt.want)
			}
			if out.Reason != conn.ReasonPeer && out.Reason != conn.ReasonEOF {
				t.Fatalf("backend leg event %+v, want peer or eof", out)
			}
		})
	}
}

func TestWebSocketFrameText(t *testing.T) {
	goOn := make(chan struct{})
	be := scripted(t, []step{
		{data: "gr\xc3"},
		{data: "\xbc\xc3\x9fe \xe2\x82", wait: true},
		{data: "\xac", wait: true},
		{data: "\xff\xfe\x00", wait: true},
		{data: "ok", wait: true},
	}, goOn)
	e := start(t, conn.Config{}, Config{}, "ws://127.0.0.1:0/?frame=text&backend="+be)
	ws, _, err := wsDial(t, wsURL("ws", e.addr, "/"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []wsMsg{
		{websocket.MessageText, "gr"}, {websocket.MessageText, "üße "}, {websocket.MessageText, "€"},
		{websocket.MessageBinary, "\xff\xfe\x00"}, {websocket.MessageText, "ok"},
	} {
		got := readMsgs(t, ws, 1)[0]
		if got != want || (got.typ == websocket.MessageText && !utf8.ValidString(got.data)) {
			t.Fatalf("message %d: got %v %q, want %v %q", i, got.typ, got.data, want.typ, want.data)
		}
		if i < 4 {
			goOn <- struct{}{}
		}
	}
}

func TestWebSocketSubprotocol(t *testing.T) {
	be := backend(t, echoBack)
	open := start(t, conn.Config{}, Config{}, "ws://127.0.0.1:0/sip?subprotocol=sip,foo&backend="+be)
	strict := start(t, conn.Config{}, Config{}, "ws://127.0.0.1:0/sip?subprotocol=sip&subprotocol_required=true&backend=echo")
	dial := func(t *testing.T, e *env, offers ...string) (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		origin := "http://" + e.addr
		ws, resp, err := websocket.Dial(ctx, wsURL("ws", e.addr, "/sip"), &websocket.DialOptions{Subprotocols: offers, HTTPHeader: http.Header{"Origin": {origin}}})
		if ws != nil {
			t.Cleanup(func() { ws.CloseNow() })
		}
		return ws, resp, err
	}
	for _, tt := range []struct {
		name   string
		offers []string
		want   string
	}{
		{"listed second", []string{"foo2", "sip"}, "sip"},
		{"client's order wins", []string{"foo", "sip"}, "foo"},
		{"none listed", []string{"bar", "baz"}, ""},
		{"no offer", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ws, _, err := dial(t, open, tt.offers...)
			if err != nil {
				t.Fatal(err)
			}
			if got := ws.Subprotocol(); got != tt.want {
				t.Fatalf("subprotocol %q, want %q", got, tt.want)
			}
			legs := open.waitConns(2, conn.StateOK)
			want := conn.WSInfo{Path: "/sip", Subprotocol: tt.want, Origin: "http://" + open.addr}
			if legs[0].WS == nil || *legs[0].WS != want || legs[1].WS != nil {
				t.Fatalf("ws details %+v and %+v, want %+v on the inbound leg only", legs[0].WS, legs[1].WS, want)
			}
			ws.Close(websocket.StatusNormalClosure, "")
			open.events(2)
		})
	}
	t.Run("required and offered", func(t *testing.T) {
		ws, _, err := dial(t, strict, "x", "sip")
		if err != nil || ws.Subprotocol() != "sip" {
			t.Fatalf("dial: %v", err)
		}
		ws.Close(websocket.StatusNormalClosure, "")
		strict.event()
	})
	for _, tt := range []struct {
		name   string
		offers []string
		want   string
	}{
		{"required, others offered", []string{"foo", "bar"}, "websocket upgrade: the client offered subprotocols foo, bar; this listener requires one of sip (400)"},
		{"required, none offered", nil, "websocket upgrade: the client offered subprotocols none; this listener requires one of sip (400)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, resp, err := dial(t, strict, tt.offers...)
			if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("dial: %v, want 400", err)
			}
			ev := strict.event()
			if ev.Reason != conn.ReasonError || ev.Error != tt.want {
				t.Fatalf("event reason %q error %q, want error %q", ev.Reason, ev.Error, tt.want)
			}
		})
	}
}

// TestWebSocketRefusals: every upgrade that fails leaves a closed event
// saying why.
func TestWebSocketRefusals(t *testing.T) {
	e := start(t, conn.Config{}, Config{}, "ws://127.0.0.1:0/ws?backend=echo&subprotocol=sip&subprotocol_required=true")
	const key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	const up = "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	for _, tt := range []struct {
		name, req string
		status    string
		errText   string
	}{
		{"wrong path", "GET /nope HTTP/1.1\r\nHost: x\r\n" + up + "\r\n", "HTTP/1.1 404", "http GET /nope: no WebSocket endpoint there (404)"},
		{"not an upgrade", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 426", "http GET /ws: not a WebSocket upgrade (426)"},
		{"origin", "GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\nSec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n" + up + key + "\r\n",
			"HTTP/1.1 403", `websocket upgrade: origin "http://evil.example" not allowed (403): request Origin "evil.example" is not authorized for Host "x"`},
		{"subprotocol", "GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: foo\r\nSec-WebSocket-Version: 13\r\n" + up + key + "\r\n",
			"HTTP/1.1 400", "websocket upgrade: the client offered subprotocols foo; this listener requires one of sip (400)"},
		{"no key", "GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n" + up + "\r\n",
			"HTTP/1.1 400", "websocket upgrade: bad request (400): WebSocket protocol violation: missing Sec-WebSocket-Key"},
		{"bad version", "GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 8\r\n" + up + key + "\r\n",
			"HTTP/1.1 400", `websocket upgrade: bad request (400): unsupported WebSocket protocol version (only 13 is supported): "8"`},
		{"POST", "POST /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n" + up + key + "\r\n",
			"HTTP/1.1 405", `websocket upgrade: bad request (405): WebSocket protocol violation: handshake request method is not GET but "POST"`},
		{"not HTTP", "HELLO\r\n\r\n", "HTTP/1.1 400", "http request refused (400 Bad Request)"},
		{"headers too large", "GET /ws HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("x", 40<<10) + "\r\n\r\n", "HTTP/1.1 431",
			"http request refused (431 Request Header Fields Too Large)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte(tt.req))
			status, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.HasPrefix(status, tt.status) {
				t.Fatalf("status %q, %v; want %s", status, err, tt.status)
			}
			ev := e.event()
			if ev.Reason != conn.ReasonError || ev.Error != tt.errText {
				t.Fatalf("event reason %q error %q, want error %q", ev.Reason, ev.Error, tt.errText)
			}
		})
	}
}

func TestWebSocketSilentClient(t *testing.T) {
	e := start(t, conn.Config{}, Config{HandshakeTimeout: 300 * time.Millisecond}, "ws://127.0.0.1:0/?backend=echo")
	c := e.dial()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")) // and no more
	ev := e.event()
	if want := "websocket upgrade: no complete request within 300ms"; ev.Reason != conn.ReasonError || ev.Error != want {
		t.Fatalf("event reason %q error %q, want error %q", ev.Reason, ev.Error, want)
	}
}

func TestListenerFrameOptions(t *testing.T) {
	for _, tt := range []struct {
		url     string
		frame   Frame
		subs    []string
		req     bool
		wantErr string
	}{
		{url: "ws://h:1", frame: FrameBinary},
		{url: "ws://h:1?frame=binary", frame: FrameBinary},
		{url: "ws://h:1?frame=text", frame: FrameText},
		{url: "wss://h:1?frame=sip&subprotocol=sip", frame: FrameSIP, subs: []string{"sip"}},
		{url: "ws://h:1?subprotocol=sip,+foo+,sip&subprotocol_required=true", subs: []string{"sip", "foo"}, req: true},
		{url: "ws://h:1?subprotocol=sip&subprotocol_required=false", subs: []string{"sip"}},
		{url: "ws://h:1?frame=SIP", wantErr: `frame "SIP": want binary, text or sip`},
		{url: "tcp://h:1?frame=sip", wantErr: "frame is only for ws:// and wss://"},
		{url: "tls://h:1?subprotocol=sip", wantErr: "subprotocol is only for ws:// and wss://"},
		{url: "tcp://h:1?subprotocol_required=true", wantErr: "subprotocol_required is only for ws:// and wss://"},
		{url: "ws://h:1?subprotocol=", wantErr: `subprotocol "": want names such as sip`},
		{url: "ws://h:1?subprotocol=sip,", wantErr: `subprotocol "sip,": want names`},
		{url: "ws://h:1?subprotocol=a+b", wantErr: `subprotocol "a b": want names`},
		{url: "ws://h:1?subprotocol=sip&subprotocol_required=yes", wantErr: `subprotocol_required "yes": want true or false`},
		{url: "ws://h:1?subprotocol_required=true", wantErr: "subprotocol_required=true needs subprotocol=NAME,..."},
		{url: "ws://h:1?subproto=sip", wantErr: "subprotocol, subprotocol_required"},
	} {
		l, err := ParseListener(tt.url, Echo)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: error %v, want %q", tt.url, err, tt.wantErr)
			}
			continue
		}
		if err != nil || l.Frame != tt.frame || fmt.Sprint(l.Subprotocols) != fmt.Sprint(tt.subs) || l.SubprotocolRequired != tt.req {
			t.Errorf("%s: got frame %v subprotocols %q required %v, %v", tt.url, l.Frame, l.Subprotocols, l.SubprotocolRequired, err)
		}
	}
}
