package test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tcpops/tcpops/internal/testcert"
	"github.com/tcpops/tcpops/internal/testutil"
)

// ctl runs tcpopsctl against a daemon and returns its standard output.
func ctl(t *testing.T, socket string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "tcpopsctl"), append([]string{"-s", socket}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tcpopsctl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// listed is what tests read of `tcpopsctl list -o json`.
type listed struct {
	Connections []struct {
		ConnID    uint64 `json:"conid"`
		Listener  string `json:"listener"`
		Direction string `json:"direction"`
		Remote    string `json:"remote"`
		Via       string `json:"via"`
		StateName string `json:"state_name"`
	} `json:"connections"`
}

// TestBehindHAProxy puts Debian's HAProxy with send-proxy-v2 (with a
// CRC32c TLV) and send-proxy in front of accept_proxy listeners: the table shows the
// client HAProxy served as remote and HAProxy's own address as via. A
// client that skips the balancer is refused with a clear event.
func TestBehindHAProxy(t *testing.T) {
	haproxy := tool(t, "haproxy", "haproxy", "/usr/sbin/haproxy")
	dir := t.TempDir()
	ports := make([]string, 4)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	v2, v1, hv2, hv1 := ports[0], ports[1], ports[2], ports[3]
	d := startDaemon(t, filepath.Join(dir, "s"),
		"--listen", "tcp://127.0.0.1:"+v2+"?accept_proxy=v2&proxy_from=127.0.0.0/8&name=pp2",
		"--listen", "tcp://127.0.0.1:"+v1+"?accept_proxy=v1&name=pp1")
	cfg := fmt.Sprintf(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
listen v2
    bind 127.0.0.1:%s
    server tcpops 127.0.0.1:%s send-proxy-v2 proxy-v2-options crc32c
listen v1
    bind 127.0.0.1:%s
    server tcpops 127.0.0.1:%s send-proxy
`, hv2, v2, hv1, v1)
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, haproxy, "-db", "-f", cfgPath)

	for _, tt := range []struct{ name, front, listener string }{
		{"send-proxy-v2", hv2, "pp2"},
		{"send-proxy", hv1, "pp1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c net.Conn
			testutil.WaitFor(t, "HAProxy listening on "+tt.front, func() bool {
				var err error
				c, err = net.Dial("tcp", "127.0.0.1:"+tt.front)
				return err == nil
			})
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("OPTIONS sip:echo SIP/2.0\r\n")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 26)
			if _, err := c.Read(buf); err != nil || string(buf) != "OPTIONS sip:echo SIP/2.0\r\n" {
				t.Fatalf("echo through HAProxy: %q %v (the PROXY header must not reach the backend)", buf, err)
			}
			var l listed
			if err := json.Unmarshal(ctl(t, d.socket, "list", "-o", "json", "--direction", "in"), &l); err != nil {
				t.Fatal(err)
			}
			client := c.LocalAddr().String()
			found := false
			for _, cn := range l.Connections {
				if cn.Listener != tt.listener {
					continue
				}
				found = true
				if cn.Remote != client || cn.Via == "" || cn.Via == client || !strings.HasPrefix(cn.Via, "127.0.0.1:") {
					t.Fatalf("listed remote %s via %s; want the client %s via HAProxy's address", cn.Remote, cn.Via, client)
				}
				t.Logf("%s: conid %d remote %s via %s", tt.name, cn.ConnID, cn.Remote, cn.Via)
				if info := ctl(t, d.socket, "info", fmt.Sprint(cn.ConnID)); !bytes.Contains(info, []byte(cn.Via+" (PROXY protocol)")) {
					t.Fatalf("tcpopsctl info shows no via:\n%s", info)
				}
			}
			if !found {
				t.Fatalf("no connection of listener %s in %+v", tt.listener, l)
			}
			// list --remote finds it by the client's address.
			var byRemote listed
			json.Unmarshal(ctl(t, d.socket, "list", "-o", "json", "--remote", client), &byRemote)
			if len(byRemote.Connections) != 1 {
				t.Fatalf("list --remote %s: %d connections, want 1", client, len(byRemote.Connections))
			}
		})
	}

	t.Run("no header", func(t *testing.T) {
		c, err := net.Dial("tcp", "127.0.0.1:"+v1)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("REGISTER sip:x SIP/2.0\r\n"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 64)); err == nil {
			t.Fatalf("read %d bytes from an accept_proxy listener without a header, want it closed", n)
		}
		out := ctl(t, d.socket, "events", "-o", "json", "--reason", "error")
		if !bytes.Contains(out, []byte(`no PROXY protocol header: the connection starts with \"REGISTER sip:x S\"`)) {
			t.Fatalf("events: %s; want the refusal", out)
		}
	})
}

// TestTLSScan runs sslscan and openssl against a tls:// listener: no
// CBC or SHA-1 suite is offered, and no version below TLS 1.2.
func TestTLSScan(t *testing.T) {
	sslscan := tool(t, "sslscan", "sslscan")
	openssl := tool(t, "openssl", "openssl")
	dir := t.TempDir()
	c, err := testcert.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + port
	d := startDaemon(t, filepath.Join(dir, "s"), "--tls-cert", c.CertFile, "--tls-key", c.KeyFile, "--listen", "tls://"+addr+"?backend=echo")
	out, err := exec.Command(sslscan, "--no-colour", "--no-heartbleed", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("sslscan: %v\n%s", err, out)
	}
	accepted := regexp.MustCompile(`(?m)^(Preferred|Accepted)\s+(\S+)\s+\d+ bits\s+(\S+)`).FindAllStringSubmatch(string(out), -1)
	if len(accepted) == 0 {
		t.Fatalf("sslscan found no suite:\n%s", out)
	}
	for _, m := range accepted {
		version, suite := m[2], m[3]
		if version != "TLSv1.2" && version != "TLSv1.3" || strings.Contains(suite, "CBC") || strings.HasSuffix(suite, "-SHA") || !strings.Contains(suite, "GCM") && !strings.Contains(suite, "CHACHA20") {
			t.Fatalf("sslscan: %s %s offered, want AEAD suites of TLS 1.2 and 1.3 only:\n%s", version, suite, out)
		}
		t.Logf("sslscan: %s %s", version, suite)
	}
	// The session as tcpopsctl info shows it.
	cfg := c.Client.Clone()
	cfg.ServerName = "localhost"
	tc, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	var l listed
	if err := json.Unmarshal(ctl(t, d.socket, "list", "-o", "json", "--proto", "tls", "--state", "ok"), &l); err != nil || len(l.Connections) != 1 {
		t.Fatalf("list: %+v %v; want the one TLS connection", l, err)
	}
	info := ctl(t, d.socket, "info", fmt.Sprint(l.Connections[0].ConnID))
	if !regexp.MustCompile(`(?m)^tls\s+TLS 1\.3, TLS_AES_\S+, sni localhost$`).Match(info) {
		t.Fatalf("tcpopsctl info:\n%s\nwant a tls line with the version, cipher and SNI", info)
	}
	// openssl asked for a CBC-SHA1 suite only gets no session.
	cmd := exec.Command(openssl, "s_client", "-connect", addr, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA")
	cmd.Stdin = strings.NewReader("")
	out, err = cmd.CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("handshake failure")) {
		t.Fatalf("openssl s_client with CBC-SHA1 suites: %v\n%s\nwant a handshake failure", err, out)
	}
}

// kamailioSourceConfig answers OPTIONS with the address Kamailio believes
// the request came from, reading PROXY protocol headers
// (tcp_accept_haproxy).
const kamailioSourceConfig = `#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
tcp_accept_haproxy=yes
listen=tcp:127.0.0.1:%s
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"

request_route {
	append_to_reply("X-Src: $si:$sp\r\n");
	sl_send_reply("200", "OK");
	exit;
}
`

// TestSIPEdgeChain is the README's SIP edge as it runs: a SIP client
// through HAProxy (send-proxy-v2) into tcpops (accept_proxy=v2), on to
// Kamailio with a PROXY v1 header of tcpops' own (proxy_protocol=v1).
// Kamailio sees the client's address and port, and so does the table.
func TestSIPEdgeChain(t *testing.T) {
	haproxy := tool(t, "haproxy", "haproxy", "/usr/sbin/haproxy")
	kam := tool(t, "kamailio", "kamailio", "/usr/sbin/kamailio")
	dir := t.TempDir()
	var kport, tport, hport string
	for _, p := range []*string{&kport, &tport, &hport} {
		var err error
		if *p, err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(kamailioSourceConfig, kport)), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, kam, "-f", cfg, "-Y", dir, "-DD", "-E", "-m", "32", "-M", "4")
	waitListening(t, "kamailio", "127.0.0.1:"+kport)
	d := startDaemon(t, filepath.Join(dir, "s"),
		"--listen", "tcp://127.0.0.1:"+tport+"?accept_proxy=v2&proxy_from=127.0.0.1&backend=127.0.0.1:"+kport+"&proxy_protocol=v1&name=sip")
	hcfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(hcfg, []byte(fmt.Sprintf(`defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
listen sip
    bind 127.0.0.1:%s
    server tcpops 127.0.0.1:%s send-proxy-v2
`, hport, tport)), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, haproxy, "-db", "-f", hcfg)
	waitListening(t, "haproxy", "127.0.0.1:"+hport)

	c, err := net.Dial("tcp", "127.0.0.1:"+hport)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(sipRequest("OPTIONS", 1))); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	var reply strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading Kamailio's reply: %v (so far %q)", err, reply.String())
		}
		reply.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	want := "X-Src: " + c.LocalAddr().String() + "\r\n"
	if !strings.HasPrefix(reply.String(), "SIP/2.0 200 OK\r\n") || !strings.Contains(reply.String(), want) {
		t.Fatalf("Kamailio's reply:\n%s\nwant a 200 with %q: Kamailio sees the client, not HAProxy or tcpops", reply.String(), want)
	}
	t.Logf("Kamailio saw the client as %s", strings.TrimSpace(strings.TrimPrefix(want, "X-Src: ")))
	var l listed
	if err := json.Unmarshal(ctl(t, d.socket, "list", "-o", "json", "--direction", "in"), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Connections) != 1 || l.Connections[0].Remote != c.LocalAddr().String() {
		t.Fatalf("table: %+v; want the client %s", l, c.LocalAddr())
	}
}
