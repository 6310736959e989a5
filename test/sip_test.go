package test

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/relay/frame"
)

// Real SIP peers through tcpops' frame=sip: Kamailio as the backend, and
// Chromium's WebSocket as the client.

// tool finds a program the test needs, failing (never skipping) when it is
// missing.
func tool(t *testing.T, name, pkg string, paths ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s not found: install Debian package %s", name, pkg)
	return ""
}

// sipRequest builds a request as a browser's SIP stack sends it over
// WebSocket.
func sipRequest(method string, cseq int, extra ...string) string {
	h := []string{
		method + " sip:127.0.0.1 SIP/2.0",
		fmt.Sprintf("Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK%s%d", method, cseq),
		"Max-Forwards: 70",
		"From: <sip:alice@127.0.0.1>;tag=8rcs3p",
		"To: <sip:alice@127.0.0.1>",
		"Call-ID: 3g7ie1dcsqbkb4mm7jat",
		fmt.Sprintf("CSeq: %d %s", cseq, method),
	}
	if method == "REGISTER" {
		h = append(h, "Contact: <sip:k2b8r4cm@df7jal23ls0d.invalid;transport=ws>", "Expires: 600")
	}
	h = append(h, extra...)
	return strings.Join(h, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
}

// oneSIPMessage fails unless m is exactly one whole SIP message.
func oneSIPMessage(t *testing.T, what string, m []byte) {
	t.Helper()
	s := frame.NewSIP(0)
	defer s.Release()
	s.Feed(m)
	got, err := s.Next()
	if err != nil || len(got) != len(m) {
		t.Fatalf("%s is not one whole SIP message (%d of %d bytes cut, %v): %.80q", what, len(got), len(m), err, m)
	}
	if rest, err := s.Next(); rest != nil || err != nil || s.Buffered() != 0 {
		t.Fatalf("%s holds more than one SIP message", what)
	}
}

// startProc starts a program in a process group of its own, stopped by
// SIGTERM to that group (then SIGKILL) when the test ends; its output is
// logged if the test failed.
func startProc(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out daemontest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), out.String())
		}
	})
	return cmd
}

// waitListening waits until addr accepts TCP connections.
func waitListening(t *testing.T, what, addr string) {
	t.Helper()
	var err error
	if !testutil.Until(func() bool {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err != nil {
			return false
		}
		c.Close()
		return true
	}) {
		t.Fatalf("%s not listening on %s: %v", what, addr, err)
	}
}

// wsListener starts tcpops with a ws:// listener at /sip with the given
// query options and returns its URL and control socket.
func wsListener(t *testing.T, query string) (url, socket string) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "tcpops")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	url = "ws://127.0.0.1:" + port + "/sip"
	socket = filepath.Join(dir, "s")
	startDaemon(t, socket, "--listen", url+"?"+query)
	waitListening(t, "tcpops", "127.0.0.1:"+port)
	return url, socket
}

// kamailioConfig answers OPTIONS and REGISTER with 200 statelessly; a
// REGISTER with an X-Big header gets 46 padding headers, a reply of about
// 38 KB (over 32 KiB, one TCP read of the relay).
const kamailioConfig = `#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=tcp:127.0.0.1:%s
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"

request_route {
	if (is_method("OPTIONS")) {
		sl_send_reply("200", "OK");
		exit;
	}
	if (is_method("REGISTER")) {
		if (is_present_hf("X-Big")) {
			$var(i) = 0;
			while ($var(i) < 46) {
				append_to_reply("X-Pad-$var(i): %s\r\n");
				$var(i) = $var(i) + 1;
			}
		}
		sl_send_reply("200", "OK");
		exit;
	}
	sl_send_reply("404", "Not here");
}
`

func TestKamailioBehindFrameSIP(t *testing.T) {
	kam := tool(t, "kamailio", "kamailio", "/usr/sbin/kamailio")
	dir := t.TempDir()
	kport, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "kamailio.cfg")
	pad := strings.Repeat("0123456789", 82)
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(kamailioConfig, kport, pad)), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, kam, "-f", cfg, "-Y", dir, "-DD", "-E", "-m", "32", "-M", "4")
	waitListening(t, "kamailio", "127.0.0.1:"+kport)

	url, socket := wsListener(t, "backend=127.0.0.1:"+kport+"&frame=sip&subprotocol=sip")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"sip"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	if ws.Subprotocol() != "sip" {
		t.Fatalf("subprotocol %q, want sip", ws.Subprotocol())
	}
	read := func(what string) string {
		t.Helper()
		typ, m, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if typ != websocket.MessageText {
			t.Fatalf("%s came as a %v message", what, typ)
		}
		oneSIPMessage(t, what, m)
		return string(m)
	}
	send := func(m string) {
		t.Helper()
		if err := ws.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}

	send(sipRequest("OPTIONS", 1))
	if r := read("OPTIONS reply"); !strings.HasPrefix(r, "SIP/2.0 200 OK\r\n") || !strings.Contains(r, "CSeq: 1 OPTIONS\r\n") {
		t.Fatalf("OPTIONS reply %q", r)
	}
	send(sipRequest("REGISTER", 2))
	if r := read("REGISTER reply"); !strings.HasPrefix(r, "SIP/2.0 200 OK\r\n") || !strings.Contains(r, "CSeq: 2 REGISTER\r\n") {
		t.Fatalf("REGISTER reply %q", r)
	}

	// 20 back to back: Kamailio's replies reach the relay merged in
	// fewer reads; each must still come as a message of its own.
	const n = 20
	for i := range n {
		send(sipRequest("OPTIONS", 100+i))
	}
	for i := range n {
		r := read(fmt.Sprintf("reply %d of %d", i+1, n))
		if want := fmt.Sprintf("CSeq: %d OPTIONS\r\n", 100+i); !strings.Contains(r, want) {
			t.Fatalf("reply %d has no %q: %q", i+1, want, r)
		}
	}
	t.Logf("%d OPTIONS back to back: %d messages of one reply each", n, n)

	send(sipRequest("REGISTER", 3, "X-Big: yes"))
	big := read("big REGISTER reply")
	if len(big) <= 32<<10 || !strings.Contains(big, "CSeq: 3 REGISTER\r\n") || !strings.Contains(big, "X-Pad-45: ") {
		t.Fatalf("big REGISTER reply of %d bytes, want one message over 32 KiB with 46 X-Pad headers", len(big))
	}
	t.Logf("REGISTER reply over 32 KiB: one message of %d bytes", len(big))
	var l struct {
		Connections []struct {
			WS struct{ Path, Subprotocol string } `json:"ws"`
		} `json:"connections"`
	}
	if err := json.Unmarshal(ctl(t, socket, "list", "-o", "json", "--proto", "ws"), &l); err != nil || len(l.Connections) != 1 || l.Connections[0].WS.Subprotocol != "sip" || l.Connections[0].WS.Path != "/sip" {
		t.Fatalf("list --proto ws: %+v %v; want the connection with ws path /sip, subprotocol sip", l, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

// chromiumPage opens a WebSocket offering "sip", sends one OPTIONS, and
// posts to /result the negotiated subprotocol and every message (text
// as it came, binary in hex) once it has want of them, or the close.
const chromiumPage = `<!doctype html>
<html><body><script>
const res = {protocol: null, messages: [], close: null, error: null};
let sent = false;
function report() {
  if (sent) return;
  sent = true;
  fetch("/result", {method: "POST", body: JSON.stringify(res)});
}
try {
  const ws = new WebSocket(%q, ["sip"]);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { res.protocol = ws.protocol; ws.send(%q); };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      res.messages.push({type: "text", data: ev.data});
    } else {
      res.messages.push({type: "binary", data: Array.from(new Uint8Array(ev.data), b => b.toString(16).padStart(2, "0")).join("")});
    }
    if (res.messages.length === %d) report();
  };
  ws.onclose = (ev) => { res.close = ev.code + " " + ev.reason; report(); };
} catch (e) {
  res.error = String(e);
  report();
}
</script></body></html>
`

type pageResult struct {
	Protocol string `json:"protocol"`
	Messages []struct {
		Type string `json:"type"`
		Data string `json:"data"`
	} `json:"messages"`
	Close *string `json:"close"`
	Error *string `json:"error"`
}

func TestChromiumSIPOverWebSocket(t *testing.T) {
	chromium := tool(t, "chromium", "chromium", "/usr/bin/chromium")

	// A SIP backend that answers the page's first request with replies
	// cut badly: several in one write, one over several writes, a cut
	// inside a UTF-8 character, keep-alives, one over 32 KiB, one that is
	// not UTF-8.
	reply := func(cseq int, body string, extra ...string) string {
		h := []string{"SIP/2.0 200 OK", "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKx", "From: <sip:alice@127.0.0.1>;tag=8rcs3p",
			"To: <sip:alice@127.0.0.1>;tag=2", "Call-ID: 3g7ie1dcsqbkb4mm7jat", fmt.Sprintf("CSeq: %d OPTIONS", cseq)}
		h = append(h, extra...)
		return strings.Join(h, "\r\n") + fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(body)) + body
	}
	msgs := []string{
		reply(1, ""), reply(2, ""), reply(3, ""),
		reply(4, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", "Content-Type: application/sdp"),
		reply(5, "Grüße 😀 €", "Content-Type: text/plain;charset=utf-8"),
		reply(6, "", "X-Big: "+strings.Repeat("b", 38000)),
		reply(7, "\xff\xfe\x00\x01", "Content-Type: application/octet-stream"),
		reply(8, ""),
	}
	cut := strings.Index(msgs[4], "😀") + 1
	script := []string{
		"\r\n\r\n" + msgs[0] + msgs[1] + msgs[2] + msgs[3][:100],
		msgs[3][100:200], msgs[3][200:] + "\r\n",
		msgs[4][:cut], msgs[4][cut:] + msgs[5][:20000],
		msgs[5][20000:] + "\r\n\r\n",
		msgs[6] + msgs[7],
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	backendDone := make(chan struct{})
	t.Cleanup(func() { <-backendDone }) // after tcpops is stopped
	go func() {
		defer close(backendDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		r := bufio.NewReader(c)
		for { // the page's OPTIONS, up to its empty line
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		for _, s := range script {
			if _, err := c.Write([]byte(s)); err != nil {
				return
			}
			time.Sleep(30 * time.Millisecond) // apart, so the relay reads them apart
		}
		r.ReadString(0) // until the relay closes
	}()

	url, _ := wsListener(t, "backend="+ln.Addr().String()+"&frame=sip&subprotocol=sip&origin=127.0.0.1:*")

	results := make(chan pageResult, 1)
	page := fmt.Sprintf(chromiumPage, url, sipRequest("OPTIONS", 1), len(msgs))
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, page)
		case "/result":
			var res pageResult
			if err := json.NewDecoder(r.Body).Decode(&res); err != nil {
				t.Errorf("result: %v", err)
			}
			select {
			case results <- res:
			default:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer hs.Close()

	startProc(t, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(), hs.URL+"/")
	var res pageResult
	select {
	case res = <-results:
	case <-time.After(90 * time.Second):
		t.Fatal("no result from the page within 90 s")
	}
	if res.Error != nil || res.Close != nil {
		t.Fatalf("page: error %v, close %v, after %d messages", deref(res.Error), deref(res.Close), len(res.Messages))
	}
	if res.Protocol != "sip" {
		t.Fatalf("ws.protocol = %q, want sip", res.Protocol)
	}
	if len(res.Messages) != len(msgs) {
		t.Fatalf("%d messages, want %d", len(res.Messages), len(msgs))
	}
	for i, m := range res.Messages {
		data, typ := m.Data, "text"
		if m.Type == "binary" {
			b, err := hex.DecodeString(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			data = string(b)
		}
		if i == 6 {
			typ = "binary"
		}
		if m.Type != typ || data != msgs[i] {
			t.Fatalf("message %d: a %s message of %d bytes %.60q; want %s, %d bytes %.60q", i, m.Type, len(data), data, typ, len(msgs[i]), msgs[i])
		}
		oneSIPMessage(t, fmt.Sprintf("message %d", i), []byte(data))
	}
	t.Logf("chromium: ws.protocol %q, %d messages, each one whole SIP message (largest %d bytes, one binary)", res.Protocol, len(res.Messages), len(msgs[5]))
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
