package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/sock"
)

// A changing method acts on one conid or, with select, on a set of
// connections taken once when the call starts. The set is changed one
// connection after the other on the caller's own request goroutine:
// at once, or paced by rate with tcpops.progress notifications, until the
// last one, the daemon's shutdown, or the caller's disconnect (found when
// a notification cannot be written).

// Bounds of the bulk params.
const (
	maxRate = 1e6 // changes per second; more is "as fast as possible"
	// progressEvery spaces the progress notifications of a rated call;
	// heartbeat is the longest it stays silent (so that a caller gone
	// is found, and a waiting caller knows the call is alive).
	progressEvery = 100 * time.Millisecond
	heartbeat     = time.Second
)

// apply changes one connection; its result is the single-conid answer.
type apply func(c *conn.Conn) (any, error)

// errGone says a connection closed before its change (not a failure of
// the change).
var errGone = errors.New("closed before its turn")

// bulkAudit is what the one log line of a bulk call says about its outcome.
type bulkAudit struct {
	matched, applied, failed, gone int
	dryRun                         bool
	stopped                        string
}

// isBulk reports whether a request's params carry a selector.
func isBulk(raw *json.RawMessage) bool {
	if raw == nil {
		return false
	}
	var p struct {
		Select json.RawMessage `json:"select"`
	}
	return json.Unmarshal(*raw, &p) == nil && p.Select != nil
}

// selectRaw is the select param as the caller wrote it, for the log.
func selectRaw(raw *json.RawMessage) string {
	var p struct {
		Select json.RawMessage `json:"select"`
	}
	if raw == nil || json.Unmarshal(*raw, &p) != nil || p.Select == nil {
		return ""
	}
	var b bytes.Buffer
	if json.Compact(&b, p.Select) != nil {
		return string(p.Select)
	}
	return b.String()
}

// checkTarget checks that a changing method got either conid or select,
// and the bulk params only with select.
func (cl *call) checkTarget(id *uint64, b *rpc.BulkParams) error {
	name := cl.m.name
	switch {
	case id != nil && b.Select != nil:
		return badParam("params conid and select of %s: give one of them, not both", name)
	case id == nil && b.Select == nil:
		return badParam("missing param conid for %s (a connection id from tcpops.list), or select (a set of connections)", name)
	case b.Select == nil && b.DryRun:
		return badParam("param dry_run of %s: only with select", name)
	case b.Select == nil && b.Max != nil:
		return badParam("param max of %s: only with select", name)
	case b.Select == nil && b.Rate != nil:
		return badParam("param rate of %s: only with select", name)
	case b.Max != nil && *b.Max < 1:
		return badParam("param max %d of %s: want >= 1 (the most connections the call may change)", *b.Max, name)
	case b.Rate != nil && !(*b.Rate > 0 && *b.Rate <= maxRate):
		return badParam("param rate %v of %s: want changes per second, > 0 and <= %d", *b.Rate, name, int(maxRate))
	}
	if id != nil && *id == 0 {
		return badParam("param conid of %s: conids start at 1", name)
	}
	return nil
}

// ttl reads the optional ttl param (seconds): 0 when absent.
func ttlParam(name string, ttl *float64) (time.Duration, error) {
	if ttl == nil {
		return 0, nil
	}
	if v := *ttl; !(v > 0 && v <= maxLifetime) {
		return 0, badParam("param ttl %v of %s: want seconds > 0 and <= %d (after that the previous setting comes back)", v, name, maxLifetime)
	}
	return time.Duration(*ttl * float64(time.Second)), nil
}

// run applies fn to the conid, or to the selection.
func (cl *call) run(id *uint64, b *rpc.BulkParams, fn apply) (any, error) {
	if b.Select == nil {
		c, err := cl.get(*id)
		if err != nil {
			return nil, err
		}
		res, err := fn(c)
		if errors.Is(err, errGone) {
			err = conn.ErrClosed
		}
		if err != nil {
			return nil, fmt.Errorf("conid %d: %w", *id, err)
		}
		return res, nil
	}
	return cl.bulk(b, fn)
}

// filterParams are the list filters, as tcpops.list and select take them.
type filterParams struct {
	State     rpc.StateFilter
	Proto     string
	Direction string
	Listener  string
	Remote    string
	IdleMin   *float64
}

// filter turns list filters into the table's; prefix names where they
// came from in an error ("" or "select.").
func filter(prefix string, p filterParams) (conn.Filter, error) {
	f := conn.Filter{Listener: p.Listener}
	if p.Proto != "" {
		pr, err := conn.ParseProto(p.Proto)
		if err != nil {
			return f, badParam("param %s%v", prefix, err)
		}
		f.Proto = pr
	}
	if p.Direction != "" {
		d, err := conn.ParseDirection(p.Direction)
		if err != nil {
			return f, badParam("param %s%v", prefix, err)
		}
		f.Direction = d
	}
	if p.State != "" {
		st, err := conn.ParseState(string(p.State))
		if err != nil {
			return f, badParam("param %sstate: %v", prefix, err)
		}
		f.State = st
	}
	if p.Remote != "" {
		pfx, port, err := conn.ParseRemote(p.Remote)
		if err != nil {
			return f, badParam("param %s%v", prefix, err)
		}
		f.Remote, f.Port = pfx, port
	}
	if p.IdleMin != nil {
		if *p.IdleMin < 0 || *p.IdleMin > maxLifetime || math.IsNaN(*p.IdleMin) {
			return f, badParam("param %sidle_min %v: want seconds >= 0", prefix, *p.IdleMin)
		}
		f.IdleMin = time.Duration(*p.IdleMin * float64(time.Second))
	}
	return f, nil
}

// match takes the selection once.
func (cl *call) match(sel *rpc.Selector) ([]conn.Info, error) {
	fp := filterParams{State: sel.State, Proto: sel.Proto, Direction: sel.Direction, Listener: sel.Listener, Remote: sel.Remote, IdleMin: sel.IdleMin}
	hasFilter := fp != (filterParams{})
	switch {
	case sel.All && (hasFilter || sel.ConnIDs != nil):
		return nil, badParam("param select of %s: all takes no filters or conids (it is every connection)", cl.m.name)
	case !sel.All && !hasFilter && len(sel.ConnIDs) == 0:
		return nil, badParam("empty select for %s: give filters (state, proto, direction, listener, remote, idle_min), conids, or all: true; nothing is changed without one", cl.m.name)
	}
	for _, id := range sel.ConnIDs {
		if id == 0 {
			return nil, badParam("param select.conids of %s: conids start at 1", cl.m.name)
		}
	}
	f, err := filter("select.", fp)
	if err != nil {
		return nil, err
	}
	return cl.s.t.Select(f, sel.ConnIDs), nil
}

// RefusedError refuses a bulk change that matches more than its max.
type RefusedError struct {
	Method       string
	Matched, Max int
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused: %d connections match, more than max %d; nothing was changed (narrow the selector or raise max)", e.Matched, e.Max)
}

// bulk changes the selected connections.
func (cl *call) bulk(b *rpc.BulkParams, fn apply) (any, error) {
	infos, err := cl.match(b.Select)
	if err != nil {
		return nil, err
	}
	a := &bulkAudit{matched: len(infos), dryRun: b.DryRun}
	cl.audit = a
	if b.Max != nil && len(infos) > *b.Max {
		return nil, &RefusedError{Method: cl.m.name, Matched: len(infos), Max: *b.Max}
	}
	if b.DryRun {
		return rawJSON(appendDryRun(make([]byte, 0, 512*len(infos)+64), infos)), nil
	}
	res := rpc.BulkResult{Matched: len(infos), Applied: make([]uint64, 0, len(infos)), Failed: []rpc.Failure{}}
	var rate float64
	if b.Rate != nil {
		rate = *b.Rate
	}
	p := pacer{cl: cl, rate: rate, total: len(infos), start: time.Now()}
	defer p.stop()
	for i := range infos {
		if res.Stopped = p.wait(); res.Stopped != "" {
			break
		}
		id := infos[i].ID
		c, ok := cl.s.t.Get(id)
		if !ok {
			res.Gone = append(res.Gone, id)
			p.skip()
			continue
		}
		_, err := fn(c)
		switch {
		case errors.Is(err, errGone), errors.Is(err, conn.ErrClosed):
			res.Gone = append(res.Gone, id)
			p.skip()
			continue
		case err != nil:
			je := cl.s.rpcError(fmt.Errorf("conid %d: %w", id, err))
			res.Failed = append(res.Failed, rpc.Failure{ConnID: id, Code: je.Code, Message: je.Message})
		default:
			res.Applied = append(res.Applied, id)
		}
		if res.Stopped = p.done(); res.Stopped != "" {
			break
		}
	}
	if res.Stopped == "" {
		res.Stopped = p.finish()
	}
	// A caller that went away gets no answer (its write fails): what was
	// done stays done and is in the log line.
	a.applied, a.failed, a.gone, a.stopped = len(res.Applied), len(res.Failed), len(res.Gone), res.Stopped
	return res, nil
}

// pacer spreads a rated call's changes: change k (from 0) is made no
// sooner than start + k/rate, so the pace holds on average whatever the
// timer's slack, and it tells the caller how far it got. A connection
// gone before its turn takes no time.
type pacer struct {
	cl    *call
	rate  float64 // 0: no pacing, no progress
	total int
	start time.Time
	n     int // changes made (applied or failed)
	seen  int // connections dealt with: changed, failed or gone
	timer *time.Timer
	last  time.Time // last progress notification
}

// wait blocks until the next change is due; it returns why the call must
// stop instead ("" to go on).
func (p *pacer) wait() string {
	if p.cl.s.t.ShuttingDown() {
		return "the daemon is shutting down"
	}
	if p.rate == 0 {
		return ""
	}
	due := p.start.Add(time.Duration(float64(p.n) / p.rate * float64(time.Second)))
	for {
		left := time.Until(due)
		if left <= 0 {
			return ""
		}
		if p.timer == nil {
			p.timer = time.NewTimer(min(left, heartbeat))
		} else {
			p.timer.Reset(min(left, heartbeat))
		}
		select {
		case <-p.timer.C:
		case <-p.cl.s.connCtx.Done():
			return "the daemon is shutting down"
		}
		if p.cl.s.t.ShuttingDown() {
			return "the daemon is shutting down"
		}
		if time.Since(p.last) >= heartbeat {
			if s := p.progress(); s != "" {
				return s
			}
		}
	}
}

// skip counts a connection gone before its turn.
func (p *pacer) skip() { p.seen++ }

// done counts a change; it returns why the call must stop ("" to go on).
func (p *pacer) done() string {
	p.n++
	p.seen++
	if p.rate > 0 && time.Since(p.last) >= progressEvery {
		return p.progress()
	}
	return ""
}

// finish sends the last progress of a rated call.
func (p *pacer) finish() string {
	if p.rate > 0 {
		return p.progress()
	}
	return ""
}

func (p *pacer) progress() string {
	p.last = time.Now()
	if p.cl.conn == nil {
		return "" // a caller without a connection (NATS) gets no progress
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cl.s.cfg.WriteTimeout)
	defer cancel()
	if err := p.cl.conn.Notify(ctx, rpc.NotifyProgress, rpc.Progress{Done: p.seen, Total: p.total}); err != nil {
		return fmt.Sprintf("the caller disconnected after %d of %d", p.seen, p.total)
	}
	return ""
}

func (p *pacer) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

// appendDryRun encodes the answer of a dry run: what would be changed.
func appendDryRun(b []byte, infos []conn.Info) []byte {
	b = append(b, `{"matched":`...)
	b = strconv.AppendInt(b, int64(len(infos)), 10)
	b = append(b, `,"applied":[],"failed":[],"dry_run":true,"connections":[`...)
	for i := range infos {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendConn(b, &infos[i])
	}
	return append(b, "]}"...)
}

// refusedError is the JSON-RPC error of a RefusedError.
func refusedError(e *RefusedError) *jsonrpc2.Error {
	je := &jsonrpc2.Error{Code: rpc.CodeRefused, Message: e.Error()}
	je.SetError(rpc.RefusedData{Matched: e.Matched, Max: e.Max})
	return je
}

// logBulk writes the one audit line of a call with a selector.
func (s *Server) logBulk(cred sock.Cred, method string, params *json.RawMessage, a *bulkAudit, err error) {
	attrs := []any{"uid", cred.UID, "pid", cred.PID, "method", method, "select", selectRaw(params), "params", rawString(params)}
	if a != nil {
		attrs = append(attrs, "matched", a.matched, "applied", a.applied, "failed", a.failed, "gone", a.gone, "dry_run", a.dryRun)
		if a.stopped != "" {
			attrs = append(attrs, "stopped", a.stopped)
		}
	}
	if err != nil {
		attrs = append(attrs, "err", s.rpcError(err).Message)
	}
	s.log.Info("rpc bulk", attrs...)
}
