package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tcpops.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFile(t *testing.T) {
	p := writeFile(t, `# a comment
listen:
  - tcp://127.0.0.1:5060?backend=10.0.0.5:5060
  - url: wss://0.0.0.0:8443/sip
    backend: 10.0.0.6:5060
    frame: text
    lifetime: 30m
    max_conns: 100
lifetime: 10m
keepalive: 60,5,5
max-conns: 5000
closed-event: manual
`)
	cfg, err := ParseArgs([]string{"--config", p, "--keepalive", "off"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listeners) != 2 || cfg.Listeners[0].Backend != "10.0.0.5:5060" || cfg.Listeners[1].Scheme != "wss" ||
		cfg.Listeners[1].Frame.String() != "text" || *cfg.Listeners[1].Lifetime != 30*time.Minute || cfg.Listeners[1].MaxConns != 100 ||
		cfg.Listeners[1].Backend != "10.0.0.6:5060" {
		t.Fatalf("listeners = %+v", cfg.Listeners)
	}
	if cfg.Table.Lifetime != 10*time.Minute || cfg.Table.MaxConns != 5000 || cfg.Table.ClosedEvent != 1 {
		t.Fatalf("table = %+v", cfg.Table)
	}
	if cfg.Relay.Keepalive.Enable {
		t.Fatal("--keepalive off on the command line did not win over the file")
	}
	for _, tt := range []struct{ text, err string }{
		{"lifetime: 10m\nbogus: 1\n", ":2: unknown setting \"bogus\""},
		{"max-conns: many\n", `:1: max-conns: invalid argument "many"`},
		{"lifetime: 1m\nkeepalive: 1,2\n", `:2: --keepalive: keepalive "1,2"`},
		{"listen:\n  - tcp://127.0.0.1:1\n  - udp://x:1\n", `:3: listen: listen "udp://x:1": scheme "udp" not supported`},
		{"listen:\n  - url: tcp://127.0.0.1:1\n    colour: red\n", `:2: listen: listen "tcp://127.0.0.1:1?colour=red": unknown option "colour"`},
		{"listen:\n  - [tcp://127.0.0.1:1]\n", ":2: listen: want a URL, or url: and options"},
		{"lifetime: [1, 2]\n", ":1: lifetime: want a single value"},
		{"lifetime: 1m\nlifetime: 2m\n", ":2: lifetime given twice"},
		{"- a\n- b\n", ":1: want settings"},
		{"lifetime: : :\n", "yaml: "},
		{"config: other.yaml\n", `unknown setting "config"`},
	} {
		_, err := ParseArgs([]string{"--config", writeFile(t, tt.text)})
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("file %q: err = %v, want %q", tt.text, err, tt.err)
		}
	}
	if _, err := ParseArgs([]string{"--config", "/nonexistent.yaml"}); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Errorf("missing file: %v", err)
	}
}

// TestExampleConfig: the example shipped in dist/ is a valid configuration.
func TestExampleConfig(t *testing.T) {
	cfg, err := ParseArgs([]string{"--config", "../dist/tcpops.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listeners) != 2 || cfg.Listeners[1].Name != "sip-wss" || cfg.Listeners[0].ProxyProtocol != 2 || cfg.Metrics == "" {
		t.Fatalf("example parsed as %+v", cfg)
	}
}
