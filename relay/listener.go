// Package relay accepts client connections on the listeners, dials their
// backends and moves bytes between the two legs, keeping both in the
// connection table.
package relay

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Echo is the backend that sends every byte back to the client.
const Echo = "echo"

// Listener is one --listen URL, parsed.
type Listener struct {
	Scheme  string // tcp, tls, ws, wss
	Addr    string // HOST:PORT to listen on
	Path    string // ws/wss request path
	Backend string // HOST:PORT or Echo
	Name    string // what the table shows as the connection's listener
}

// Schemes are the listener schemes tcpops knows.
var Schemes = []string{"tcp", "tls", "ws", "wss"}

// ParseListener parses a --listen URL such as
// tcp://127.0.0.1:5060?backend=10.0.0.5:5060&name=sip. defBackend is used
// when the URL names none.
func ParseListener(raw, defBackend string) (Listener, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Listener{}, fmt.Errorf("listen %q: %w", raw, err)
	}
	if !slices.Contains(Schemes, u.Scheme) {
		return Listener{}, fmt.Errorf("listen %q: scheme %q not supported (want tcp://, tls://, ws:// or wss://HOST:PORT)", raw, u.Scheme)
	}
	if u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return Listener{}, fmt.Errorf("listen %q: want SCHEME://HOST:PORT[/PATH][?backend=HOST:PORT|echo&name=NAME]", raw)
	}
	if err := checkHostPort(u.Host, true); err != nil {
		return Listener{}, fmt.Errorf("listen %q: %w", raw, err)
	}
	l := Listener{Scheme: u.Scheme, Addr: u.Host, Path: u.Path, Backend: defBackend}
	if l.Path != "" && l.Scheme != "ws" && l.Scheme != "wss" {
		return Listener{}, fmt.Errorf("listen %q: a path is only meaningful for ws:// and wss://", raw)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Listener{}, fmt.Errorf("listen %q: query: %w", raw, err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return Listener{}, fmt.Errorf("listen %q: %s given %d times", raw, k, len(v))
		}
		switch k {
		case "backend":
			l.Backend = v[0]
		case "name":
			if v[0] == "" {
				return Listener{}, fmt.Errorf("listen %q: name is empty", raw)
			}
			l.Name = v[0]
		default:
			return Listener{}, fmt.Errorf("listen %q: unknown option %q (want backend, name)", raw, k)
		}
	}
	if err := CheckBackend(l.Backend); err != nil {
		return Listener{}, fmt.Errorf("listen %q: %w", raw, err)
	}
	if l.Name == "" {
		l.Name = l.Scheme + "://" + l.Addr + l.Path
	}
	return l, nil
}

// CheckBackend validates a backend: HOST:PORT or echo.
func CheckBackend(b string) error {
	if b == Echo {
		return nil
	}
	if err := checkHostPort(b, false); err != nil {
		return fmt.Errorf("backend %q: %w (or echo)", b, err)
	}
	return nil
}

// checkHostPort validates HOST:PORT; a listen address may leave the host
// empty (every address) and use port 0 (any free port).
func checkHostPort(hp string, listen bool) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("address %q: want HOST:PORT", hp)
	}
	if (host == "" && !listen) || strings.ContainsAny(host, " /") {
		return fmt.Errorf("address %q: host missing or malformed", hp)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (p == 0 && !listen) {
		return fmt.Errorf("address %q: port %q must be a number 1..65535", hp, port)
	}
	return nil
}
