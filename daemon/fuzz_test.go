package daemon

import (
	"strings"
	"testing"
)

// FuzzParseArgs: any argument list is either a configuration whose
// listeners and limits make sense, or an error that says something.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{"", "--listen\x00tcp://127.0.0.1:0", "--keepalive\x0060,5,5\x00--lifetime\x002m", "--closed-event\x00manual\x00--max-conns\x0010",
		"--socket-mode\x00777", "--listen\x00wss://h:1/x?frame=text\x00--tls-cert\x00c", "--bogus", "--lifetime\x00-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var args []string
		if s != "" {
			args = strings.Split(s, "\x00")
		}
		cfg, err := ParseArgs(args)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if len(cfg.Listeners) == 0 || cfg.Socket == "" || cfg.Table.Lifetime < 0 || cfg.Table.EventBuffer < 1 || cfg.SocketMode > 0o777 {
			t.Fatalf("%q accepted as %+v", args, cfg)
		}
	})
}
