package rpc

import "time"

// MethodUpgrade hands the daemon's sockets and connections to a new
// process (admin only).
const MethodUpgrade = "tcpops.upgrade"

// UpgradeParams are the params of tcpops.upgrade.
type UpgradeParams struct {
	// Binary is the new executable (default: the daemon's own path, read
	// again from disk).
	Binary string `json:"binary,omitempty"`
	// DrainTimeout is how long the old process keeps its TLS and
	// WebSocket connections, in seconds (default 600).
	DrainTimeout *float64 `json:"drain_timeout,omitempty"`
}

// UpgradeResult answers tcpops.upgrade: the old and the new process,
// how many table entries were handed over (both legs of a relayed pair
// count) and how many stay with the old process, draining.
type UpgradeResult struct {
	OldPID     int `json:"old_pid"`
	NewPID     int `json:"new_pid"`
	HandedOver int `json:"handed_over"`
	Draining   int `json:"draining"`
}

// Draining marks a connection that the old process still serves after an
// upgrade (TLS, WebSocket) until it ends or Until, the drain timeout.
type Draining struct {
	PID   int       `json:"pid"`
	Until time.Time `json:"until"`
}
