package relay

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/tcpops/tcpops/conn"
)

// cbcSuites are the TLS 1.2 suites without AEAD that crypto/tls knows.
func cbcSuites() []uint16 {
	var ids []uint16
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if strings.Contains(s.Name, "CBC") || strings.Contains(s.Name, "RC4") {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// TestTLSDetails: TLS 1.2 offers AEAD suites only, tls_min=1.3 refuses
// 1.2, a failed handshake leaves one short line in the event, a reset
// during the handshake is reason reset, and a session is described in the
// table (version, cipher, SNI, ALPN).
func TestTLSDetails(t *testing.T) {
	c := certs(t)
	handshake := func(e *env, cfg *tls.Config) error {
		tc := tls.Client(e.dial(), cfg)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		defer tc.Close()
		return tc.Handshake()
	}
	t.Run("CBC refused", func(t *testing.T) {
		e := start(t, conn.Config{}, tlsConfig(c), "tls://127.0.0.1:0?backend=echo")
		cfg := c.Client.Clone()
		cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, cbcSuites()
		if err := handshake(e, cfg); err == nil {
			t.Fatalf("a client offering only CBC suites (%d of them) got a session", len(cfg.CipherSuites))
		}
		ev := e.event()
		if ev.Reason != conn.ReasonError || !strings.Contains(ev.Error, "no cipher suite supported") || len(ev.Error) > 210 || strings.Contains(ev.Error, "\n") {
			t.Fatalf("event error %q (%d bytes): want one short line naming the cipher suites", ev.Error, len(ev.Error))
		}
	})
	t.Run("TLS 1.2 session", func(t *testing.T) {
		e := start(t, conn.Config{}, tlsConfig(c), "tls://127.0.0.1:0?backend=echo")
		cfg := c.Client.Clone()
		cfg.MaxVersion, cfg.ServerName = tls.VersionTLS12, "localhost"
		tc := tls.Client(e.dial(), cfg)
		tc.Write([]byte("x\n"))
		readLine(t, tc)
		in := e.waitConns(1, conn.StateOK)[0]
		if in.TLS == nil || in.TLS.Version != "TLS 1.2" || !strings.Contains(in.TLS.Cipher, "GCM") && !strings.Contains(in.TLS.Cipher, "CHACHA20") || in.TLS.SNI != "localhost" {
			t.Fatalf("tls = %+v; want TLS 1.2 with an AEAD suite for localhost", in.TLS)
		}
	})
	t.Run("tls_min 1.3", func(t *testing.T) {
		e := start(t, conn.Config{}, tlsConfig(c), "tls://127.0.0.1:0?backend=echo&tls_min=1.3")
		cfg := c.Client.Clone()
		cfg.MaxVersion = tls.VersionTLS12
		if err := handshake(e, cfg); err == nil {
			t.Fatal("a TLS 1.2 client got a session with tls_min=1.3")
		}
		if ev := e.event(); ev.Reason != conn.ReasonError || !strings.Contains(ev.Error, "unsupported versions") {
			t.Fatalf("event %q %q; want the version refused", ev.Reason, ev.Error)
		}
	})
	t.Run("reset in handshake", func(t *testing.T) {
		e := start(t, conn.Config{}, tlsConfig(c), "tls://127.0.0.1:0?backend=echo")
		raw := e.dial()
		raw.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}) // a ClientHello begun
		e.waitConns(1, conn.StateAccepting)
		raw.SetLinger(0)
		raw.Close()
		if ev := e.event(); ev.Reason != conn.ReasonReset {
			t.Fatalf("event %q %q; want reset", ev.Reason, ev.Error)
		}
	})
	if _, err := ParseListener("tcp://127.0.0.1:1?tls_min=1.3", Echo); err == nil {
		t.Fatal("tls_min on a tcp listener accepted")
	}
}

func TestOneLine(t *testing.T) {
	long := "tls: no cipher suite supported by both client and server; client offered: [c009 c013 c00a c014 2f 35 a 5]"
	if got, want := oneLine(long), "tls: no cipher suite supported by both client and server; client offered: 8 values"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := oneLine("tls: client offered only unsupported versions: [303 302]"); got != "tls: client offered only unsupported versions: [303 302]" {
		t.Fatalf("short list changed: %q", got)
	}
	if got := oneLine(strings.Repeat("é", 300)); len(got) > 203 || !strings.HasSuffix(got, "...") {
		t.Fatalf("long text: %d bytes", len(got))
	}
}
