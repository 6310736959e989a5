// Package rpc is the wire of tcpops's control socket, shared by its server
// (daemon/control) and its client (rpc/client): method names, error codes,
// and the params and result of every method as JSON-RPC 2.0 carries them.
package rpc

import (
	"encoding/json"
	"fmt"
	"time"
)

// Method names.
const (
	MethodAlive       = "tcpops.alive"
	MethodState       = "tcpops.state"
	MethodKeepalive   = "tcpops.keepalive"
	MethodLifetime    = "tcpops.lifetime"
	MethodClosedEvent = "tcpops.closed_event"
	MethodClose       = "tcpops.close"
	MethodList        = "tcpops.list"
	MethodInfo        = "tcpops.info"
	MethodEvents      = "tcpops.events"
	MethodStats       = "tcpops.stats"
	MethodVersion     = "core.version"
	MethodListMethods = "system.listMethods"
	MethodHelp        = "system.methodHelp"

	// Notifications sent to an events follower.
	NotifyEvent      = "tcpops.event"
	NotifyEventsLost = "tcpops.events_lost"
)

// Error codes beyond JSON-RPC's own.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603
	CodeNotFound       = -32001
	CodeSocket         = -32002
	CodeDenied         = -32003
)

// Error is the error of a response: one of the codes above, and a message
// that names the bad param or the conid and says what is accepted.
type Error struct {
	Code    int64           `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s (code %d)", e.Message, e.Code) }

// MaxLine is the largest request line the server reads.
const MaxLine = 1 << 20

// The params of each method, as the client sends them and the server
// decodes them. A pointer is a param the server must tell apart from its
// zero value: a required one, or one with a default (enable is true unless
// given).

// ConnParams are the params of tcpops.alive, tcpops.state and tcpops.info.
type ConnParams struct {
	ConnID *uint64 `json:"conid,omitempty"`
}

// KeepaliveParams are the params of tcpops.keepalive. Enabling takes Idle,
// Count and Interval (seconds), as tcp_keepalive_enable does.
type KeepaliveParams struct {
	ConnID        *uint64  `json:"conid,omitempty"`
	Enable        *bool    `json:"enable,omitempty"`
	Idle          *int     `json:"idle,omitempty"`
	Count         *int     `json:"count,omitempty"`
	Interval      *int     `json:"interval,omitempty"`
	UserTimeoutMs *int     `json:"user_timeout_ms,omitempty"`
	TTL           *float64 `json:"ttl,omitempty"` // seconds; then the previous keepalive comes back
	BulkParams
}

// LifetimeParams are the params of tcpops.lifetime (seconds, 0 = no idle
// limit).
type LifetimeParams struct {
	ConnID   *uint64  `json:"conid,omitempty"`
	Lifetime *float64 `json:"lifetime,omitempty"`
	TTL      *float64 `json:"ttl,omitempty"` // seconds; then the previous lifetime comes back
	BulkParams
}

// ClosedEventParams are the params of tcpops.closed_event.
type ClosedEventParams struct {
	ConnID *uint64  `json:"conid,omitempty"`
	Enable *bool    `json:"enable,omitempty"`
	TTL    *float64 `json:"ttl,omitempty"` // seconds; then the previous setting comes back
	BulkParams
}

// CloseParams are the params of tcpops.close: FIN, or RST with Reset.
type CloseParams struct {
	ConnID *uint64 `json:"conid,omitempty"`
	Reset  bool    `json:"reset,omitempty"`
	BulkParams
}

// ListParams are the filters of tcpops.list, all optional.
type ListParams struct {
	State     StateFilter `json:"state,omitempty"`
	Proto     string      `json:"proto,omitempty"`
	Direction string      `json:"direction,omitempty"`
	Listener  string      `json:"listener,omitempty"`
	Remote    string      `json:"remote,omitempty"` // IP, IP:port or CIDR
	IdleMin   *float64    `json:"idle_min,omitempty"`
	Limit     int         `json:"limit,omitempty"`
	After     uint64      `json:"after,omitempty"`
	// Suspect keeps only connections that look half-open or stuck, each
	// with its TCP_INFO and the rules that picked it.
	Suspect bool `json:"suspect,omitempty"`
	// The view of a live display (tcpopsctl top): Sort (conid, idle,
	// bytes, rate, age; all but conid largest first), Offset (matches to
	// skip), Match (space-separated substrings of remote, local, via,
	// listener, proto, direction or state), Rates (bytes_per_s of each),
	// TCPInfo (tcp_info and suspect of each connection listed). With any
	// of these (or Suspect) the result has Total.
	Sort    string `json:"sort,omitempty"`
	Offset  int    `json:"offset,omitempty"`
	Match   string `json:"match,omitempty"`
	Rates   bool   `json:"rates,omitempty"`
	TCPInfo bool   `json:"tcp_info,omitempty"`
}

// StateFilter is a state by its name (ok) or number (1). On the wire it
// may also be a JSON number, as kamcmd-style callers send it.
type StateFilter string

// UnmarshalJSON takes a string or a number.
func (s *StateFilter) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case nil:
	case string:
		*s = StateFilter(v)
	case float64:
		*s = StateFilter(fmt.Sprint(v))
	default:
		return fmt.Errorf("param state: want a state name or number, got %v", v)
	}
	return nil
}

// EventsParams are the params of tcpops.events, all optional.
type EventsParams struct {
	Since  uint64   `json:"since,omitempty"`
	Follow bool     `json:"follow,omitempty"`
	Reason []string `json:"reason,omitempty"`
	ConnID uint64   `json:"conid,omitempty"`
}

// HelpParams are the params of system.methodHelp.
type HelpParams struct {
	Method *string `json:"method,omitempty"`
}

// AliveResult answers tcpops.alive.
type AliveResult struct {
	ConnID uint64 `json:"conid"`
	Alive  bool   `json:"alive"`
	Code   int    `json:"code"`
}

// StateResult answers tcpops.state.
type StateResult struct {
	ConnID    uint64 `json:"conid"`
	State     int    `json:"state"`
	StateName string `json:"state_name"`
	Reason    string `json:"reason,omitempty"`
}

// KeepaliveResult answers tcpops.keepalive with what the kernel holds.
type KeepaliveResult struct {
	ConnID    uint64    `json:"conid"`
	Keepalive Keepalive `json:"keepalive"`
	// Until is when a ttl runs out and the previous keepalive comes back.
	Until *time.Time `json:"until,omitempty"`
}

// LifetimeResult answers tcpops.lifetime (seconds).
type LifetimeResult struct {
	ConnID     uint64  `json:"conid"`
	LifetimeS  float64 `json:"lifetime_s"`
	ExpiresInS float64 `json:"expires_in_s"`
	// Until is when a ttl runs out and the previous lifetime comes back.
	Until *time.Time `json:"until,omitempty"`
}

// ClosedEventResult answers tcpops.closed_event.
type ClosedEventResult struct {
	ConnID      uint64 `json:"conid"`
	ClosedEvent bool   `json:"closed_event"`
	// Until is when a ttl runs out and the previous setting comes back.
	Until *time.Time `json:"until,omitempty"`
}

// CloseResult answers tcpops.close.
type CloseResult struct {
	ConnID uint64 `json:"conid"`
	Closed bool   `json:"closed"`
}

// Identity is what names a connection, the same in its Conn and in its
// closed Event: the conid and its partner's, how it came and where from.
type Identity struct {
	ConnID    uint64 `json:"conid"`
	Peer      uint64 `json:"peer,omitempty"`
	Proto     string `json:"proto"`
	Direction string `json:"direction"`
	Listener  string `json:"listener"`
	Local     string `json:"local"`
	Remote    string `json:"remote"`
	// Via is the balancer whose PROXY protocol header named Remote.
	Via string `json:"via,omitempty"`
}

// Conn is one connection as tcpops.list and tcpops.info show it.
type Conn struct {
	Identity
	State       int        `json:"state"`
	StateName   string     `json:"state_name"`
	Created     time.Time  `json:"created"`
	IdleS       float64    `json:"idle_s"`
	LifetimeS   float64    `json:"lifetime_s"`
	ExpiresInS  float64    `json:"expires_in_s"`
	Keepalive   *Keepalive `json:"keepalive,omitempty"`
	ClosedEvent bool       `json:"closed_event"`
	BytesIn     uint64     `json:"bytes_in"`
	BytesOut    uint64     `json:"bytes_out"`
	TLS         *TLS       `json:"tls,omitempty"`
	WS          *WS        `json:"ws,omitempty"`
	// Overrides are settings changed for a while (ttl).
	Overrides []Override `json:"overrides,omitempty"`
	Draining  *Draining  `json:"draining,omitempty"`
	// BytesPerS is bytes in + out per second lately (list with rates).
	BytesPerS *float64 `json:"bytes_per_s,omitempty"`
	// Suspect names the suspect rules the connection meets, and TCPInfo
	// is what they read (list with suspect or tcp_info).
	Suspect []string `json:"suspect,omitempty"`
	TCPInfo *TCPInfo `json:"tcp_info,omitempty"`
}

// TLS is a connection's TLS session, once its handshake is done.
type TLS struct {
	Version     string `json:"version"`
	Cipher      string `json:"cipher"`
	SNI         string `json:"sni,omitempty"`
	ALPN        string `json:"alpn,omitempty"`
	PeerSubject string `json:"peer_subject,omitempty"`
}

// WS is what a WebSocket connection's upgrade asked for and got.
type WS struct {
	Path        string `json:"path"`
	Subprotocol string `json:"subprotocol,omitempty"`
	Origin      string `json:"origin,omitempty"`
}

// ListResult answers tcpops.list; Next is the after cursor of the next page.
// Total is how many connections match (with a view param: sort, offset,
// match, rates, tcp_info, suspect).
type ListResult struct {
	Connections []Conn `json:"connections"`
	Next        uint64 `json:"next,omitempty"`
	Total       *int   `json:"total,omitempty"`
}

// InfoResult answers tcpops.info. Its TCPInfo is always read (Conn's is
// for list).
type InfoResult struct {
	Conn
	TCPInfo *TCPInfo `json:"tcp_info,omitempty"`
}

// Keepalive is a socket's TCP keepalive as the kernel reports it: idle and
// interval in seconds, user_timeout_ms 0 for the kernel's default.
type Keepalive struct {
	Enabled       bool `json:"enabled"`
	IdleS         int  `json:"idle_s"`
	Count         int  `json:"count"`
	IntervalS     int  `json:"interval_s"`
	UserTimeoutMs int  `json:"user_timeout_ms"`
}

// TCPInfo is the part of the kernel's TCP_INFO that tcpops.info shows:
// rtt in microseconds, last_data_* in milliseconds ago.
type TCPInfo struct {
	State          uint8  `json:"state"`
	StateName      string `json:"state_name"`
	RttUs          uint32 `json:"rtt_us"`
	RttvarUs       uint32 `json:"rttvar_us"`
	RtoUs          uint32 `json:"rto_us"`
	Retransmits    uint8  `json:"retransmits"`
	TotalRetrans   uint32 `json:"total_retrans"`
	Probes         uint8  `json:"probes"`
	Unacked        uint32 `json:"unacked"`
	LastDataRecvMs uint32 `json:"last_data_recv_ms"`
	LastDataSentMs uint32 `json:"last_data_sent_ms"`
	BytesAcked     uint64 `json:"bytes_acked"`
	BytesReceived  uint64 `json:"bytes_received"`
	LastAckRecvMs  uint32 `json:"last_ack_recv_ms"`
	SndWnd         uint32 `json:"snd_wnd"`
	// RecvQ is what waits unread in the receive queue (SIOCINQ), SendQ
	// what waits unsent or unacknowledged in the send queue (SIOCOUTQ).
	RecvQ int `json:"recv_q"`
	SendQ int `json:"send_q"`
}

// Event is one closed event.
type Event struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	Reason string    `json:"reason"`
	Identity
	DurationS     float64 `json:"duration_s"`
	BytesIn       uint64  `json:"bytes_in"`
	BytesOut      uint64  `json:"bytes_out"`
	Error         string  `json:"error,omitempty"`
	WSCloseCode   int     `json:"ws_close_code,omitempty"`
	WSCloseReason string  `json:"ws_close_reason,omitempty"`
	// Reset is true when tcpops closed the connection with an RST
	// (tcpops.close with reset), not a FIN.
	Reset bool `json:"reset,omitempty"`
}

// EventsResult answers tcpops.events. NextSeq is the seq the next event
// will get: poll again with since = NextSeq-1. With follow, later events
// arrive as tcpops.event notifications.
type EventsResult struct {
	Events  []Event `json:"events"`
	NextSeq uint64  `json:"next_seq"`
}

// EventsLost is the tcpops.events_lost notification: the follower fell
// more than the ring behind and missed these seqs.
type EventsLost struct {
	FromSeq uint64 `json:"from_seq"`
	ToSeq   uint64 `json:"to_seq"`
}

// Stats answers tcpops.stats.
type Stats struct {
	Connections  int               `json:"connections"`
	ByState      map[string]int    `json:"by_state"`
	ByProto      map[string]int    `json:"by_proto"`
	Accepted     uint64            `json:"accepted"`
	Dialled      uint64            `json:"dialled"`
	Closed       uint64            `json:"closed"`
	ClosedBy     map[string]uint64 `json:"closed_by_reason"`
	Rejected     uint64            `json:"rejected_by_limit"`
	AcceptErrors uint64            `json:"accept_errors"`
	EventSeq     uint64            `json:"event_seq"`
	EventsLost   uint64            `json:"events_lost"`
	UptimeS      float64           `json:"uptime_s"`
	Limits       Limits            `json:"limits"`
	RPC          RPCStats          `json:"rpc"`
	// Listeners are the listeners serving now.
	Listeners []Listener `json:"listeners,omitempty"`
	// Caller is who asked, as the daemon sees it, and what it may do.
	Caller *Caller `json:"caller,omitempty"`
	// NATS is the daemon's link to a NATS fleet; absent without --nats.
	NATS *NATSStats `json:"nats,omitempty"`
}

// NATSStats is the state of the daemon's NATS link: the connection, the
// closed events it has stored in JetStream and the requests it has served.
type NATSStats struct {
	Host       string `json:"host"`
	Connected  bool   `json:"connected"`
	Server     string `json:"server,omitempty"` // the server connected to
	Reconnects uint64 `json:"reconnects"`
	// Stream is the JetStream stream the events go to.
	Stream string `json:"stream"`
	// PublishedSeq is the newest event seq stored in JetStream; every
	// event up to it is stored (or was reported lost).
	PublishedSeq uint64 `json:"published_seq"`
	// Published counts events stored; Pending those in the ring not yet
	// stored; Lost those the ring overwrote before they could be stored
	// (published as tcpops.events_lost records instead).
	Published uint64 `json:"events_published"`
	Pending   uint64 `json:"events_pending"`
	Lost      uint64 `json:"events_lost"`
	// Requests counts JSON-RPC requests served over NATS.
	Requests  uint64 `json:"requests"`
	LastError string `json:"last_error,omitempty"`
}

// Listener is a listener as tcpops.stats shows it: its name, the URL it
// was given, the address it is bound to, and the keepalive of its
// connections (off, on for the kernel's defaults, or IDLE,COUNT,INTERVAL).
type Listener struct {
	Name      string `json:"name"`
	URL       string `json:"url"`
	Addr      string `json:"addr"`
	Keepalive string `json:"keepalive"`
}

// Caller is the control client as SO_PEERCRED names it; Admin says whether
// it may change connections, and Why says which rule decided.
type Caller struct {
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	PID   int32  `json:"pid"`
	Admin bool   `json:"admin"`
	Why   string `json:"why"`
}

// RPCStats counts the control socket's clients.
type RPCStats struct {
	Clients       int64  `json:"clients"`
	WriteTimeouts uint64 `json:"write_timeouts"`
	IdleTimeouts  uint64 `json:"idle_timeouts"`
	BadRequests   uint64 `json:"bad_requests"`
	Refused       uint64 `json:"refused"`
}

// Limits are the daemon's configured limits and defaults.
type Limits struct {
	MaxConns      int     `json:"max_conns"`
	MaxConnsPerIP int     `json:"max_conns_per_ip"`
	EventBuffer   int     `json:"event_buffer"`
	LifetimeS     float64 `json:"lifetime_s"`
	ClosedEvent   string  `json:"closed_event"`
	// Keepalive is the default for sockets: off, on (the kernel's
	// defaults) or IDLE,COUNT,INTERVAL.
	Keepalive string `json:"keepalive,omitempty"`
	// OpenFiles is the daemon's open-files limit (RLIMIT_NOFILE, soft).
	OpenFiles uint64 `json:"open_files,omitempty"`
}

// Version answers core.version: the version (a tag, a pseudo-version or
// "devel"), the commit it was built from ("" when unknown), whether the
// tree had uncommitted changes, and the Go release.
type Version struct {
	Version  string `json:"version"`
	Commit   string `json:"commit"`
	Modified bool   `json:"modified"`
	Go       string `json:"go"`
}
