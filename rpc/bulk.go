package rpc

import "time"

// CodeRefused is the error of a bulk change refused before anything was
// changed: more connections matched than its max.
const CodeRefused = -32004

// NotifyProgress is the notification a rate-limited bulk change sends its
// caller while it runs.
const NotifyProgress = "tcpops.progress"

// BulkParams are what every changing method (tcpops.keepalive,
// tcpops.lifetime, tcpops.closed_event, tcpops.close) takes instead of a
// conid to act on a set of connections.
type BulkParams struct {
	// Select names the connections; it is taken once, when the call
	// starts: connections that appear later are not touched.
	Select *Selector `json:"select,omitempty"`
	// DryRun answers what would be changed and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Max refuses the whole call (CodeRefused) when more connections match.
	Max *int `json:"max,omitempty"`
	// Rate spreads the changes over time: at most Rate per second.
	Rate *float64 `json:"rate,omitempty"`
}

// Selector picks connections: the filters of tcpops.list and/or a list of
// conids (all must hold), or All. An empty selector is refused, so that
// nobody changes every connection by accident.
type Selector struct {
	State     StateFilter `json:"state,omitempty"`
	Proto     string      `json:"proto,omitempty"`
	Direction string      `json:"direction,omitempty"`
	Listener  string      `json:"listener,omitempty"`
	Remote    string      `json:"remote,omitempty"` // IP, IP:port or CIDR
	IdleMin   *float64    `json:"idle_min,omitempty"`
	ConnIDs   []uint64    `json:"conids,omitempty"`
	All       bool        `json:"all,omitempty"`
}

// BulkResult answers a changing method called with a selector.
type BulkResult struct {
	// Matched is how many connections the selector picked at the start.
	Matched int `json:"matched"`
	// Applied lists the conids changed, in the order they were.
	Applied []uint64 `json:"applied"`
	// Failed lists the connections the change failed on, with the error
	// the single-conid call would have given.
	Failed []Failure `json:"failed"`
	// Gone lists the conids that closed between the match and their turn
	// (a close of their partner leg, earlier in the same call, for one).
	Gone   []uint64 `json:"gone,omitempty"`
	DryRun bool     `json:"dry_run"`
	// Stopped says why the call ended before its last connection (the
	// daemon shutting down); what was done stays done.
	Stopped string `json:"stopped,omitempty"`
	// Connections are, in a dry run, the connections that would be
	// changed, as tcpops.list shows them.
	Connections []Conn `json:"connections,omitempty"`
}

// Failure is one connection a bulk change failed on.
type Failure struct {
	ConnID  uint64 `json:"conid"`
	Code    int64  `json:"code"`
	Message string `json:"message"`
}

// Progress is the tcpops.progress notification: Done of the Total
// connections matched dealt with so far (changed, failed, or gone before
// their turn).
type Progress struct {
	Done  int `json:"done"`
	Total int `json:"total"`
}

// RefusedData is the data of a CodeRefused error.
type RefusedData struct {
	Matched int `json:"matched"`
	Max     int `json:"max"`
}

// Override is a setting changed for a while (ttl): at Until the
// connection's previous setting comes back.
type Override struct {
	What  string    `json:"what"` // keepalive, lifetime or closed_event
	Until time.Time `json:"until"`
}
