// Package conn keeps the connection table: ids, states, idle lifetime,
// keepalive and the gap-free stream of closed events.
package conn

import "fmt"

// State is a connection's state, numbered as Kamailio's tcp_conid_state
// returns it.
type State int8

// The states. Alive is exactly State >= 1.
const (
	StateOK         State = 1
	StateAccepting  State = 2
	StateConnecting State = 3
	StateNotFound   State = -1
	StateEOF        State = -2
	StateError      State = -3
	StateBad        State = -4
)

var stateNames = map[State]string{
	StateOK: "ok", StateAccepting: "accepting", StateConnecting: "connecting",
	StateNotFound: "not_found", StateEOF: "eof", StateError: "error", StateBad: "bad",
}

// String returns the state's name (ok, accepting, ...).
func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Alive reports whether the connection is usable.
func (s State) Alive() bool { return s >= 1 }

// ParseState accepts a state's name or number.
func ParseState(v string) (State, error) {
	for s, n := range stateNames {
		if n == v || fmt.Sprint(int(s)) == v {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown state %q (want ok, accepting, connecting, eof, error, bad or 1, 2, 3, -2, -3, -4)", v)
}

// StateNames lists the names of states a live connection can have.
func StateNames() []string { return []string{"ok", "accepting", "connecting", "eof", "error", "bad"} }

// Reason says why a connection left the table.
type Reason string

// The close reasons of SPEC.
const (
	ReasonEOF      Reason = "eof"
	ReasonReset    Reason = "reset"
	ReasonTimeout  Reason = "timeout"
	ReasonLifetime Reason = "lifetime"
	ReasonLocal    Reason = "local"
	ReasonPeer     Reason = "peer"
	ReasonShutdown Reason = "shutdown"
	ReasonError    Reason = "error"
)

// Reasons lists every reason in a fixed order.
var Reasons = []Reason{ReasonEOF, ReasonReset, ReasonTimeout, ReasonLifetime, ReasonLocal, ReasonPeer, ReasonShutdown, ReasonError}

// Valid reports whether r is one of Reasons.
func (r Reason) Valid() bool { return r.index() >= 0 }

func (r Reason) index() int {
	for i, x := range Reasons {
		if x == r {
			return i
		}
	}
	return -1
}

// Event returns the name of the Kamailio event route for r.
func (r Reason) Event() string {
	switch r {
	case ReasonReset:
		return "tcp:reset"
	case ReasonTimeout, ReasonLifetime:
		return "tcp:timeout"
	}
	return "tcp:closed"
}

// teardown is the state a connection shows while it closes for r.
func (r Reason) teardown() State {
	switch r {
	case ReasonEOF:
		return StateEOF
	case ReasonReset, ReasonTimeout, ReasonError:
		return StateError
	}
	return StateBad
}

// Mode is the closed-event mode (Kamailio's closed_event modparam).
type Mode int

// The modes: every connection, only those enabled one by one, none.
const (
	ModeAll Mode = iota
	ModeManual
	ModeOff
)

// ParseMode accepts all, manual, off (or Kamailio's 1, 2, 0).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "all", "1":
		return ModeAll, nil
	case "manual", "2":
		return ModeManual, nil
	case "off", "0":
		return ModeOff, nil
	}
	return 0, fmt.Errorf("closed-event mode %q: want all, manual or off", s)
}

func (m Mode) String() string { return [...]string{"all", "manual", "off"}[m] }

// Direction says which side opened a connection.
type Direction uint8

// The directions: from a client to a listener, or from the daemon to a
// backend.
const (
	DirIn Direction = iota + 1
	DirOut
)

// String returns "in" or "out".
func (d Direction) String() string {
	switch d {
	case DirIn:
		return "in"
	case DirOut:
		return "out"
	}
	return ""
}

// ParseDirection accepts "in" or "out".
func ParseDirection(s string) (Direction, error) {
	switch s {
	case "in":
		return DirIn, nil
	case "out":
		return DirOut, nil
	}
	return 0, fmt.Errorf("direction %q: want in (from clients) or out (to backends)", s)
}

// Proto is a connection's protocol, as its listener's URL scheme names it.
type Proto string

// The protocols. Outbound legs are always ProtoTCP.
const (
	ProtoTCP Proto = "tcp"
	ProtoTLS Proto = "tls"
	ProtoWS  Proto = "ws"
	ProtoWSS Proto = "wss"
)

// Protos lists every protocol.
var Protos = []Proto{ProtoTCP, ProtoTLS, ProtoWS, ProtoWSS}

// ParseProto accepts tcp, tls, ws or wss.
func ParseProto(s string) (Proto, error) {
	for _, p := range Protos {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("proto %q: want tcp, tls, ws or wss", s)
}

// TLS reports whether the protocol runs over TLS.
func (p Proto) TLS() bool { return p == ProtoTLS || p == ProtoWSS }

// WS reports whether the protocol is WebSocket.
func (p Proto) WS() bool { return p == ProtoWS || p == ProtoWSS }
