package control

import (
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
)

var upgradeMethod = &method{name: rpc.MethodUpgrade, params: "binary (path, default: the daemon's own executable), drain_timeout (seconds, default 600); both optional",
	fn:   (*call).upgrade,
	help: "start a new daemon process and hand it the listeners, the control socket and every plain TCP connection with its state; TLS and WebSocket connections stay with the old process until they end or the drain timeout"}

func (cl *call) upgrade() (any, error) {
	var p rpc.UpgradeParams
	if err := decodeParams(cl.m, cl.params, &p); err != nil {
		return nil, err
	}
	var drain time.Duration
	if p.DrainTimeout != nil {
		if d := *p.DrainTimeout; d <= 0 || d > maxLifetime || math.IsNaN(d) {
			return nil, badParam("param drain_timeout %v out of range (want seconds > 0, up to %d)", d, maxLifetime)
		}
		drain = time.Duration(*p.DrainTimeout * float64(time.Second))
	}
	if cl.s.cfg.Upgrade == nil {
		return nil, errors.New("this daemon cannot upgrade")
	}
	r, err := cl.s.cfg.Upgrade(p.Binary, drain)
	if err != nil {
		return nil, &upgradeError{err}
	}
	// The old process keeps no control client: each reconnects to the new one.
	cl.after = cl.s.EndClients
	return r, nil
}

// upgradeError is a failed upgrade: the daemon serves on.
type upgradeError struct{ err error }

func (e *upgradeError) Error() string { return e.err.Error() }
func (e *upgradeError) Unwrap() error { return e.err }

// EndClients closes every control connection, once the replies in flight
// are written: after an upgrade the new process answers.
func (s *Server) EndClients() { s.endConns() }

func wireDraining(d *conn.Draining) *rpc.Draining {
	if d == nil {
		return nil
	}
	return &rpc.Draining{PID: d.PID, Until: d.Until.UTC()}
}

func appendDraining(b []byte, d *conn.Draining) []byte {
	b = append(b, `,"draining":{"pid":`...)
	b = strconv.AppendInt(b, int64(d.PID), 10)
	b = append(b, `,"until":"`...)
	b = d.Until.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}
