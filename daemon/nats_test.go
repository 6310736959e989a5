package daemon

import (
	"strings"
	"testing"
	"time"
)

func TestNATSFlags(t *testing.T) {
	cfg, err := ParseArgs([]string{"--nats", "nats://a:4222,tls://b:4222", "--host-name", "edge-1", "--nats-stream-max-age", "24h", "--nats-stream-replicas", "3"})
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.NATS
	if n == nil || n.URL != "nats://a:4222,tls://b:4222" || n.Host != "edge-1" || n.MaxAge != 24*time.Hour || n.MaxBytes != 1<<30 || n.Replicas != 3 {
		t.Fatalf("nats config %+v", n)
	}
	if cfg, err := ParseArgs(nil); err != nil || cfg.NATS != nil {
		t.Fatalf("without --nats: %+v, %v", cfg.NATS, err)
	}
	p := writeFile(t, "nats: nats://127.0.0.1:4222\nhost-name: web7\nnats-stream-max-bytes: 1000\n")
	if cfg, err := ParseArgs([]string{"--config", p}); err != nil || cfg.NATS.Host != "web7" || cfg.NATS.MaxBytes != 1000 {
		t.Fatalf("from a file: %+v, %v", cfg.NATS, err)
	}
	for _, tt := range []struct {
		args []string
		err  string
	}{
		{[]string{"--host-name", "x"}, "--host-name: only with --nats"},
		{[]string{"--nats-creds", "/x"}, "--nats-creds: only with --nats"},
		{[]string{"--nats", "127.0.0.1:4222"}, `--nats "127.0.0.1:4222": want nats://HOST:PORT`},
		{[]string{"--nats", "nats://ops:secret@h:1,http://h:2"}, `--nats "http://h:2"`},
		{[]string{"--nats", "nats://h:1", "--host-name", "web1.example.com"}, `--host-name: host name "web1.example.com": want letters, digits, - and _ only`},
		{[]string{"--nats", "nats://h:1", "--nats-creds", "/nonexistent.creds"}, "--nats-creds: stat /nonexistent.creds"},
		{[]string{"--nats", "nats://h:1", "--nats-stream-replicas", "0"}, "--nats-stream-replicas 0: want 1 to 5"},
		{[]string{"--nats", "nats://h:1", "--nats-stream-max-age", "-1s"}, "--nats-stream-max-age -1s"},
	} {
		_, err := ParseArgs(tt.args)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: got %v, want %q", tt.args, err, tt.err)
		}
	}
	// A password is not repeated in an error.
	if _, err := ParseArgs([]string{"--nats", "nats://ops:secret@h:1,bogus"}); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("got %v, want an error without the password", err)
	}
}
