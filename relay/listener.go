// Package relay accepts client connections on the listeners, dials their
// backends and moves bytes between the two legs, keeping both in the
// connection table.
package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

// Echo is the backend that sends every byte back to the client.
const Echo = "echo"

// Listener is one --listen URL, parsed.
type Listener struct {
	URL     string // as given
	Scheme  conn.Proto
	Addr    string // HOST:PORT to listen on
	Path    string // ws/wss request path ("/" if none)
	Backend string // HOST:PORT or Echo
	Name    string // what the table shows as the connection's listener

	// tls and wss: certificate and key files (else the daemon's --tls-cert
	// and --tls-key).
	CertFile, KeyFile string

	// ws and wss.
	Origins    []string      // allowed Origin host patterns besides the request's own host
	Frame      Frame         // how backend bytes are cut into messages
	Ping       time.Duration // ping interval; a missing pong closes with reason timeout (0: no pings)
	MaxMessage int64         // largest message accepted (and, with FrameSIP, sent); over it: close 1009
	// Subprotocols are the ones the listener speaks: the first of the
	// client's offers listed here is answered (RFC 6455 4.2.2). A client
	// offering none of them is served without one, or refused with 400
	// when SubprotocolRequired.
	Subprotocols        []string
	SubprotocolRequired bool

	// ProxyProtocol is 1 or 2 to send a PROXY protocol header of that
	// version to the backend first, so it sees the client's address.
	ProxyProtocol byte
	// AcceptProxy makes every connection start with a PROXY protocol
	// header from a balancer (ProxyFrom: which ones; empty: any).
	AcceptProxy ProxyAccept
	ProxyFrom   []netip.Prefix

	// tls and wss: the lowest TLS version accepted (tls.VersionTLS12 or 13).
	TLSMin uint16

	// Lifetime and Keepalive, if set, replace the daemon's defaults for
	// this listener's connections; MaxConns limits its inbound ones.
	Lifetime  *time.Duration
	Keepalive *sock.KeepaliveConfig
	MaxConns  int

	tlsConfig *tls.Config // loaded by Server.Listen
}

// Frame is how a ws:// or wss:// listener cuts the bytes from the backend
// into messages for the client.
type Frame uint8

const (
	// FrameBinary sends what each read returns as a binary message.
	FrameBinary Frame = iota
	// FrameText sends what each read returns as a text message, never
	// splitting a UTF-8 sequence; bytes that are not UTF-8 go as a binary
	// message (frame.Text).
	FrameText
	// FrameSIP sends each whole SIP message as one message (RFC 7118
	// 5.2): text when it is UTF-8, else binary (frame.SIP).
	FrameSIP
)

var frameNames = [...]string{FrameBinary: "binary", FrameText: "text", FrameSIP: "sip"}

func (f Frame) String() string {
	if int(f) < len(frameNames) {
		return frameNames[f]
	}
	return "frame(" + strconv.Itoa(int(f)) + ")"
}

// DefaultMaxMessage is the default largest WebSocket message.
const DefaultMaxMessage = 64 << 10

func (l *Listener) isTLS() bool { return l.Scheme.TLS() }
func (l *Listener) isWS() bool  { return l.Scheme.WS() }

// ParseListener parses a --listen URL such as
// tcp://127.0.0.1:5060?backend=10.0.0.5:5060&name=sip. defBackend is used
// when the URL names none.
func ParseListener(raw, defBackend string) (Listener, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Listener{}, fmt.Errorf("listen %q: %w", raw, err)
	}
	scheme, err := conn.ParseProto(u.Scheme)
	if err != nil {
		return Listener{}, fmt.Errorf("listen %q: scheme %q not supported (want tcp://, tls://, ws:// or wss://HOST:PORT)", raw, u.Scheme)
	}
	if u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return Listener{}, fmt.Errorf("listen %q: want SCHEME://HOST:PORT[/PATH][?backend=HOST:PORT|echo&name=NAME]", raw)
	}
	if err := checkHostPort(u.Host, true); err != nil {
		return Listener{}, fmt.Errorf("listen %q: %w", raw, err)
	}
	l := Listener{URL: raw, Scheme: scheme, Addr: u.Host, Path: u.Path, Backend: defBackend, MaxMessage: DefaultMaxMessage}
	if l.Path != "" && !l.isWS() {
		return Listener{}, fmt.Errorf("listen %q: a path is only meaningful for ws:// and wss://", raw)
	}
	if l.isWS() && l.Path == "" {
		l.Path = "/"
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Listener{}, fmt.Errorf("listen %q: query: %w", raw, err)
	}
	for k, v := range q {
		if len(v) != 1 {
			return Listener{}, fmt.Errorf("listen %q: %s given %d times", raw, k, len(v))
		}
		if err := l.option(k, v[0]); err != nil {
			return Listener{}, fmt.Errorf("listen %q: %w", raw, err)
		}
	}
	if err := CheckBackend(l.Backend); err != nil {
		return Listener{}, fmt.Errorf("listen %q: %w", raw, err)
	}
	if len(l.ProxyFrom) > 0 && l.AcceptProxy == ProxyOff {
		return Listener{}, fmt.Errorf("listen %q: proxy_from says who may send a PROXY protocol header; add accept_proxy=v1|v2|any", raw)
	}
	if l.SubprotocolRequired && len(l.Subprotocols) == 0 {
		return Listener{}, fmt.Errorf("listen %q: subprotocol_required=true needs subprotocol=NAME,... to require", raw)
	}
	if l.ProxyProtocol != 0 && l.Backend == Echo {
		return Listener{}, fmt.Errorf("listen %q: proxy_protocol is sent to a backend; this listener echoes", raw)
	}
	if l.Name == "" {
		l.Name = string(l.Scheme) + "://" + l.Addr + l.Path
	}
	return l, nil
}

// option sets one query option of the URL.
func (l *Listener) option(k, v string) error {
	wsOnly := func() error {
		if !l.isWS() {
			return fmt.Errorf("%s is only for ws:// and wss://", k)
		}
		return nil
	}
	switch k {
	case "backend":
		l.Backend = v
	case "name":
		if v == "" {
			return errors.New("name is empty")
		}
		l.Name = v
	case "cert", "key":
		if !l.isTLS() {
			return fmt.Errorf("%s is only for tls:// and wss://", k)
		}
		if k == "cert" {
			l.CertFile = v
		} else {
			l.KeyFile = v
		}
	case "origin":
		if err := wsOnly(); err != nil {
			return err
		}
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				if _, err := path.Match(o, ""); err != nil {
					return fmt.Errorf("origin pattern %q: %w", o, err)
				}
				l.Origins = append(l.Origins, o)
			}
		}
	case "frame":
		if err := wsOnly(); err != nil {
			return err
		}
		i, err := choice(k, v, frameNames[:]...)
		if err != nil {
			return err
		}
		l.Frame = Frame(i)
	case "subprotocol":
		if err := wsOnly(); err != nil {
			return err
		}
		l.Subprotocols = nil
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if !isToken(p) {
				return fmt.Errorf("subprotocol %q: want names such as sip, separated by commas (each a token: no spaces, quotes or separators)", v)
			}
			if !slices.Contains(l.Subprotocols, p) {
				l.Subprotocols = append(l.Subprotocols, p)
			}
		}
	case "subprotocol_required":
		if err := wsOnly(); err != nil {
			return err
		}
		i, err := choice(k, v, "true", "false")
		if err != nil {
			return err
		}
		l.SubprotocolRequired = i == 0
	case "ping":
		if err := wsOnly(); err != nil {
			return err
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || (d > 0 && d < 100*time.Millisecond) {
			return fmt.Errorf("ping %q: want a duration such as 30s (0 = no pings; at least 100ms)", v)
		}
		l.Ping = d
	case "proxy_protocol":
		i, err := choice(k, v, "v1", "v2")
		if err != nil {
			return err
		}
		l.ProxyProtocol = byte(i + 1)
	case "accept_proxy":
		i, err := choice(k, v, "v1", "v2", "any")
		if err != nil {
			return err
		}
		l.AcceptProxy = ProxyAccept(i + 1)
	case "proxy_from":
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			pfx, err := netip.ParsePrefix(p)
			if err != nil {
				a, aerr := netip.ParseAddr(p)
				if aerr != nil {
					return fmt.Errorf("proxy_from %q: want addresses or CIDRs, such as 10.0.0.0/8,192.0.2.7", p)
				}
				pfx = netip.PrefixFrom(a, a.BitLen())
			}
			l.ProxyFrom = append(l.ProxyFrom, pfx.Masked())
		}
	case "tls_min":
		if !l.isTLS() {
			return fmt.Errorf("%s is only for tls:// and wss://", k)
		}
		i, err := choice(k, v, "1.2", "1.3")
		if err != nil {
			return err
		}
		l.TLSMin = []uint16{tls.VersionTLS12, tls.VersionTLS13}[i]
	case "lifetime":
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			n, nerr := strconv.ParseFloat(v, 64)
			if nerr != nil || n < 0 {
				return fmt.Errorf("lifetime %q: want a duration such as 10m, or seconds (0 = none)", v)
			}
			d = time.Duration(n * float64(time.Second))
		}
		l.Lifetime = &d
	case "keepalive":
		k, err := sock.ParseKeepalive(v)
		if err != nil {
			return err
		}
		l.Keepalive = &k
	case "max_conns":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("max_conns %q: want a number >= 0 (0 = no limit)", v)
		}
		l.MaxConns = n
	case "max_message":
		if err := wsOnly(); err != nil {
			return err
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > 1<<30 {
			return fmt.Errorf("max_message %q: want bytes, 1..1073741824", v)
		}
		l.MaxMessage = n
	default:
		return fmt.Errorf("unknown option %q (want backend, name, lifetime, keepalive, max_conns, proxy_protocol, accept_proxy, proxy_from; cert, key, tls_min for tls and wss; origin, frame, subprotocol, subprotocol_required, ping, max_message for ws and wss)", k)
	}
	return nil
}

// choice returns the index of v among the values option k takes, or an
// error listing them ("frame \"x\": want binary, text or sip").
func choice(k, v string, values ...string) (int, error) {
	if i := slices.Index(values, v); i >= 0 {
		return i, nil
	}
	want := strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
	return 0, fmt.Errorf("%s %q: want %s", k, v, want)
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

// isToken reports whether s is an HTTP token (RFC 9110 5.6.2), as a
// WebSocket subprotocol name must be (RFC 6455 4.1).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
