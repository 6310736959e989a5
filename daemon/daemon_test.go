package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/tcpops/tcpops/conn"
)

func TestParseArgs(t *testing.T) {
	cfg, err := ParseArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listeners) != 1 || cfg.Listeners[0].Addr != "127.0.0.1:5060" || cfg.Listeners[0].Backend != "echo" ||
		cfg.Table.Lifetime != 120*time.Second || cfg.Table.ClosedEvent != conn.ModeAll || cfg.SocketMode != 0o660 ||
		!cfg.Relay.Keepalive.Enable || cfg.Table.EventBuffer != 65536 {
		t.Fatalf("defaults = %+v", cfg)
	}
	cfg, err = ParseArgs([]string{"--listen", "tcp://[::1]:7000?backend=10.0.0.1:5060&name=sip", "--lifetime", "90",
		"--keepalive", "60,5,5", "--closed-event", "manual", "--max-conns", "10", "--max-conns-per-ip", "2"})
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Listeners[0]
	if l.Addr != "[::1]:7000" || l.Backend != "10.0.0.1:5060" || l.Name != "sip" || cfg.Table.Lifetime != 90*time.Second ||
		cfg.Relay.Keepalive.Idle != 60 || cfg.Table.ClosedEvent != conn.ModeManual || cfg.Table.MaxConnsPerIP != 2 {
		t.Fatalf("parsed = %+v %+v", l, cfg)
	}
	for _, tt := range []struct {
		args []string
		err  string
	}{
		{[]string{"--backend", "nohost"}, `--backend: backend "nohost"`},
		{[]string{"--listen", "udp://127.0.0.1:1"}, `scheme "udp" not supported`},
		{[]string{"--listen", "tcp://127.0.0.1:99999"}, `port "99999" must be a number 1..65535`},
		{[]string{"--listen", "tcp://127.0.0.1:1?backend=x"}, `backend "x"`},
		{[]string{"--listen", "tcp://127.0.0.1:1?bogus=1"}, `unknown option "bogus"`},
		{[]string{"--listen", "tcp://127.0.0.1:1/path"}, "a path is only meaningful"},
		{[]string{"--socket-mode", "999"}, "--socket-mode"},
		{[]string{"--lifetime", "-1"}, "--lifetime"},
		{[]string{"--lifetime", "soon"}, "--lifetime"},
		{[]string{"--keepalive", "sometimes"}, "--keepalive"},
		{[]string{"--closed-event", "some"}, "--closed-event"},
		{[]string{"--max-conns", "-1"}, "--max-conns -1: must be >= 0"},
		{[]string{"--event-buffer", "0"}, "--event-buffer 0: must be >= 1"},
		{[]string{"--backend-timeout", "0s"}, "--backend-timeout"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		if _, err := ParseArgs(tt.args); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.err)
		}
	}
}
