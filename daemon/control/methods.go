package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/sock"
)

// table is the one list of methods: name, params, help, access, handler.
func (s *Server) table() []*method {
	return []*method{
		{name: rpc.MethodAlive, params: "conid", readOnly: true, fn: (*call).alive,
			help: "whether the connection is usable: alive true and code 1 when its state >= 1, else false and -1"},
		{name: rpc.MethodState, params: "conid", readOnly: true, fn: (*call).state,
			help: "the connection's state number and name (1 ok, 2 accepting, 3 connecting, -1 not_found, -2 eof, -3 error, -4 bad), with the close reason if it closed recently"},
		{name: rpc.MethodKeepalive, params: "conid or select, enable (default true), idle, count, interval (seconds; all three to enable), user_timeout_ms (optional), ttl (seconds, optional)" + bulkParams, fn: (*call).keepalive,
			help: "turn kernel TCP keepalive on or off; answers with the values read back from the socket; with ttl the previous keepalive comes back after ttl seconds"},
		{name: rpc.MethodLifetime, params: "conid or select, lifetime (seconds, >= 0; 0 = no idle limit), ttl (seconds, optional)" + bulkParams, fn: (*call).lifetime,
			help: "set the idle lifetime: the connection closes after that long without traffic, counted from now; with ttl the previous lifetime comes back after ttl seconds"},
		{name: rpc.MethodClosedEvent, params: "conid or select, enable (default true), ttl (seconds, optional)" + bulkParams, fn: (*call).closedEvent,
			help: "publish (or not) a closed event when this connection ends; for --closed-event manual; with ttl the previous setting comes back after ttl seconds"},
		{name: rpc.MethodClose, params: "conid or select, reset (default false: FIN; true: RST)" + bulkParams, fn: (*call).close,
			help: "close the connection (reason local); its partner leg closes with reason peer"},
		{name: rpc.MethodList, params: "state, proto, direction, listener, remote (IP, IP:port or CIDR), idle_min (seconds), limit, after (conid cursor), suspect (bool), sort (conid, idle, bytes, rate, age), offset, match (text), rates (bool), tcp_info (bool); all optional", readOnly: true, fn: (*call).list,
			help: "the connections, sorted by conid; next is the after cursor of the next page when a limit cut the list"},
		{name: rpc.MethodInfo, params: "conid", readOnly: true, fn: (*call).info,
			help: "one connection with its keepalive and the kernel's TCP_INFO"},
		{name: rpc.MethodEvents, params: "since (seq, default 0 = all kept), follow (bool), reason (list), conid; all optional", readOnly: true, fn: (*call).events,
			help: "closed events after since; with follow, later ones arrive as tcpops.event notifications and a gap as tcpops.events_lost"},
		{name: rpc.MethodStats, readOnly: true, fn: (*call).stats,
			help: "counts by state and proto, accepted, closed by reason, rejected by limit, event seq and losses, uptime, limits"},
		upgradeMethod,
		{name: rpc.MethodVersion, readOnly: true, fn: func(*call) (any, error) { return versionInfo(), nil },
			help: "the daemon's version, commit and Go version"},
		{name: rpc.MethodListMethods, readOnly: true, fn: (*call).listMethods,
			help: "the names of every method, sorted"},
		{name: rpc.MethodHelp, params: "method", readOnly: true, fn: (*call).methodHelp,
			help: "one line of help for a method, with its params"},
		{name: rpc.MethodDiscover, readOnly: true, fn: (*call).discover,
			help: "the OpenRPC document of every method: params and result schemas, errors, access"},
	}
}

// bulkParams are the params every changing method takes with select.
const bulkParams = "; with select (state, proto, direction, listener, remote, idle_min, conids, or all: true) instead of conid: dry_run, max, rate (changes per second)"

// conid decodes params into p and returns the required conid, which
// decoding put in *id (a field of p).
func (cl *call) conid(p any, id **uint64) (uint64, error) {
	if err := decodeParams(cl.m, cl.params, p); err != nil {
		return 0, err
	}
	return conid(cl.m, *id)
}

// target decodes params into p and returns the live connection named.
func (cl *call) target(p any, id **uint64) (*conn.Conn, error) {
	n, err := cl.conid(p, id)
	if err != nil {
		return nil, err
	}
	return cl.get(n)
}

func (cl *call) alive() (any, error) {
	var p rpc.ConnParams
	id, err := cl.conid(&p, &p.ConnID)
	if err != nil {
		return nil, err
	}
	st, _ := cl.s.t.State(id)
	r := rpc.AliveResult{ConnID: id, Alive: st.Alive(), Code: -1}
	if r.Alive {
		r.Code = 1
	}
	return r, nil
}

func (cl *call) state() (any, error) {
	var p rpc.ConnParams
	id, err := cl.conid(&p, &p.ConnID)
	if err != nil {
		return nil, err
	}
	st, reason := cl.s.t.State(id)
	return rpc.StateResult{ConnID: id, State: int(st), StateName: st.String(), Reason: string(reason)}, nil
}

func (cl *call) keepalive() (any, error) {
	var p rpc.KeepaliveParams
	if err := decodeParams(cl.m, cl.params, &p); err != nil {
		return nil, err
	}
	if err := cl.checkTarget(p.ConnID, &p.BulkParams); err != nil {
		return nil, err
	}
	k := sock.KeepaliveConfig{Enable: p.Enable == nil || *p.Enable, UserTimeoutMs: -1}
	if p.UserTimeoutMs != nil {
		if *p.UserTimeoutMs < 0 || *p.UserTimeoutMs > math.MaxInt32 {
			return nil, badParam("param user_timeout_ms %d out of range (want 0..%d; 0 = kernel default)", *p.UserTimeoutMs, math.MaxInt32)
		}
		k.UserTimeoutMs = *p.UserTimeoutMs
	}
	vals := []struct {
		name string
		v    *int
		dst  *int
	}{{"idle", p.Idle, &k.Idle}, {"count", p.Count, &k.Count}, {"interval", p.Interval, &k.Interval}}
	for _, f := range vals {
		switch {
		case k.Enable && f.v == nil:
			return nil, badParam("missing param %s for %s: enabling keepalive takes idle, count and interval (as tcp_keepalive_enable)", f.name, cl.m.name)
		case !k.Enable && f.v != nil:
			return nil, badParam("param %s of %s: only with enable true", f.name, cl.m.name)
		case f.v != nil:
			*f.dst = *f.v
		}
	}
	if err := k.Validate(); err != nil {
		return nil, err
	}
	ttl, err := ttlParam(cl.m.name, p.TTL)
	if err != nil {
		return nil, err
	}
	return cl.run(p.ConnID, &p.BulkParams, func(c *conn.Conn) (any, error) {
		ka, until, err := c.SetKeepaliveFor(k, ttl)
		if err != nil {
			return nil, err
		}
		return rpc.KeepaliveResult{ConnID: c.ID, Keepalive: *wireKeepalive(&ka), Until: untilPtr(until)}, nil
	})
}

// untilPtr is the until of a result: nil when no ttl was given.
func untilPtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// maxLifetime keeps a lifetime within what time.Duration holds, with room.
const maxLifetime = 10 * 365 * 24 * 3600

func (cl *call) lifetime() (any, error) {
	var p rpc.LifetimeParams
	if err := decodeParams(cl.m, cl.params, &p); err != nil {
		return nil, err
	}
	if err := cl.checkTarget(p.ConnID, &p.BulkParams); err != nil {
		return nil, err
	}
	if p.Lifetime == nil {
		return nil, badParam("missing param lifetime for %s (seconds, 0 = no idle limit)", cl.m.name)
	}
	if lt := *p.Lifetime; lt < 0 || lt > maxLifetime || math.IsNaN(lt) {
		return nil, badParam("param lifetime %v out of range (want 0..%d seconds; 0 = no idle limit)", lt, maxLifetime)
	}
	ttl, err := ttlParam(cl.m.name, p.TTL)
	if err != nil {
		return nil, err
	}
	d := time.Duration(*p.Lifetime * float64(time.Second))
	return cl.run(p.ConnID, &p.BulkParams, func(c *conn.Conn) (any, error) {
		left, until, err := c.SetLifetimeFor(d, ttl)
		if err != nil {
			return nil, err
		}
		return rpc.LifetimeResult{ConnID: c.ID, LifetimeS: seconds(d), ExpiresInS: seconds(left), Until: untilPtr(until)}, nil
	})
}

func (cl *call) closedEvent() (any, error) {
	var p rpc.ClosedEventParams
	if err := decodeParams(cl.m, cl.params, &p); err != nil {
		return nil, err
	}
	if err := cl.checkTarget(p.ConnID, &p.BulkParams); err != nil {
		return nil, err
	}
	ttl, err := ttlParam(cl.m.name, p.TTL)
	if err != nil {
		return nil, err
	}
	on := p.Enable == nil || *p.Enable
	return cl.run(p.ConnID, &p.BulkParams, func(c *conn.Conn) (any, error) {
		until, err := c.SetClosedEventFor(on, ttl)
		if err != nil {
			return nil, err
		}
		return rpc.ClosedEventResult{ConnID: c.ID, ClosedEvent: c.ClosedEvent(), Until: untilPtr(until)}, nil
	})
}

func (cl *call) close() (any, error) {
	var p rpc.CloseParams
	if err := decodeParams(cl.m, cl.params, &p); err != nil {
		return nil, err
	}
	if err := cl.checkTarget(p.ConnID, &p.BulkParams); err != nil {
		return nil, err
	}
	return cl.run(p.ConnID, &p.BulkParams, func(c *conn.Conn) (any, error) {
		var done bool
		if p.Reset {
			done = c.Reset(conn.ReasonLocal)
		} else {
			done = c.Close(conn.ReasonLocal, nil)
		}
		if !done {
			return nil, errGone
		}
		return rpc.CloseResult{ConnID: c.ID, Closed: true}, nil
	})
}

func (cl *call) list() (any, error) {
	var p rpc.ListParams
	if err := decodeParams(cl.m, cl.params, &p); err != nil {
		return nil, err
	}
	f, err := filter("", filterParams{State: p.State, Proto: p.Proto, Direction: p.Direction, Listener: p.Listener, Remote: p.Remote, IdleMin: p.IdleMin})
	if err != nil {
		return nil, err
	}
	f.After = p.After
	if p.Limit < 0 {
		return nil, badParam("param limit %d: want >= 0 (0 = no limit)", p.Limit)
	}
	f.Limit = p.Limit
	if err := listView(&p, &f.View); err != nil {
		return nil, err
	}
	if f.View != (conn.View{}) {
		infos, next, total := cl.s.t.ListView(f)
		return rawJSON(appendPage(make([]byte, 0, 768*len(infos)+48), infos, next, total)), nil
	}
	infos, next := cl.s.t.List(f)
	return rawJSON(appendList(make([]byte, 0, 512*len(infos)+32), infos, next)), nil
}

func (cl *call) info() (any, error) {
	var p rpc.ConnParams
	c, err := cl.target(&p, &p.ConnID)
	if err != nil {
		return nil, err
	}
	r := rpc.InfoResult{Conn: wireConn(c.Info())}
	if ka, err := c.Keepalive(); err == nil {
		r.Keepalive = wireKeepalive(&ka)
	}
	if ti, err := c.TCPInfo(); err == nil {
		r.TCPInfo = (*rpc.TCPInfo)(&ti)
	}
	return r, nil
}

func (cl *call) events() (any, error) {
	var p rpc.EventsParams
	if err := decodeParams(cl.m, cl.params, &p); err != nil {
		return nil, err
	}
	for _, r := range p.Reason {
		if !conn.Reason(r).Valid() {
			return nil, badParam("param reason %q: want one of %v", r, conn.Reasons)
		}
	}
	match := func(e *conn.Event) bool {
		return (p.ConnID == 0 || e.ConnID == p.ConnID) &&
			(len(p.Reason) == 0 || slices.Contains(p.Reason, string(e.Reason)))
	}
	evs, last := cl.s.t.Events().Since(p.Since)
	out := rpc.EventsResult{Events: []rpc.Event{}, NextSeq: last + 1}
	for i := range evs {
		if match(&evs[i]) {
			out.Events = append(out.Events, WireEvent(&evs[i]))
		}
	}
	if p.Follow && cl.st == nil {
		return nil, badParam("param follow of %s: following needs the control socket (over NATS, events are in JetStream)", cl.m.name)
	}
	if p.Follow && !cl.s.addFollower() {
		// Stopping: the ring is closed and the answer holds all it had;
		// the connection ends after it, as a follower's does at the end.
		cl.after = func() { cl.conn.Close() }
	} else if p.Follow {
		sub := cl.s.t.Events().Subscribe(max(last, p.Since))
		cl.st.following.Store(true)
		cl.after = func() { go cl.follow(sub, match) }
	}
	return out, nil
}

// follow pushes events as notifications until the client goes away or the
// ring closes (shutdown), in which case the connection closes after the
// last event so the client knows.
func (cl *call) follow(sub *conn.Subscription, match func(*conn.Event) bool) {
	defer cl.s.followers.Done()
	// Whatever ends the loop (shutdown drained, a write that missed its
	// deadline, the client gone) ends the connection, so the client knows.
	defer cl.conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-cl.conn.DisconnectNotify():
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		evs, lost, err := sub.Next(ctx, 256)
		if err != nil {
			return
		}
		if lost != nil {
			if cl.conn.Notify(ctx, rpc.NotifyEventsLost, rpc.EventsLost{FromSeq: lost.From, ToSeq: lost.To}) != nil {
				return
			}
			continue
		}
		for i := range evs {
			if match(&evs[i]) {
				if cl.conn.Notify(ctx, rpc.NotifyEvent, WireEvent(&evs[i])) != nil {
					return
				}
			}
		}
	}
}

func (cl *call) stats() (any, error) {
	if err := decodeParams(cl.m, cl.params, &struct{}{}); err != nil {
		return nil, err
	}
	st := cl.s.t.Stats()
	cfg := cl.s.t.Config()
	byProto := make(map[string]int, len(st.ByProto))
	for p, n := range st.ByProto {
		byProto[string(p)] = n
	}
	out := rpc.Stats{
		Connections: st.Conns, ByState: st.ByState, ByProto: byProto, Accepted: st.Accepted,
		Dialled: st.Dialled, Closed: st.Closed, ClosedBy: map[string]uint64{}, Rejected: st.Rejected,
		EventSeq: st.EventSeq, EventsLost: st.EventDrop, UptimeS: seconds(st.Uptime),
		Limits: rpc.Limits{MaxConns: cfg.MaxConns, MaxConnsPerIP: cfg.MaxConnsPerIP, EventBuffer: cl.s.t.Events().Size(),
			LifetimeS: seconds(cfg.Lifetime), ClosedEvent: cfg.ClosedEvent.String()},
	}
	out.RPC = rpc.RPCStats{Clients: cl.s.clients.Load(), WriteTimeouts: cl.s.writeTimeouts.Load(), IdleTimeouts: cl.s.idleTimeouts.Load(),
		BadRequests: cl.s.badRequests.Load(), Refused: cl.s.refused.Load()}
	for r, n := range st.ByReason {
		out.ClosedBy[string(r)] = n
	}
	if cl.s.cfg.Relay != nil {
		out.AcceptErrors = cl.s.cfg.Relay.AcceptErrors()
	}
	if cl.s.cfg.NATS != nil {
		out.NATS = cl.s.cfg.NATS()
	}
	cl.s.addSetup(&out, cl.cred)
	if cl.conn == nil {
		out.Caller = nil // not a socket client: no SO_PEERCRED to name
	}
	return out, nil
}

func (cl *call) listMethods() (any, error) {
	if err := decodeParams(cl.m, cl.params, &struct{}{}); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(cl.s.methods))
	for n := range cl.s.methods {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

func (cl *call) methodHelp() (any, error) {
	var p rpc.HelpParams
	if err := decodeParams(cl.m, cl.params, &p); err != nil {
		return nil, err
	}
	if p.Method == nil {
		return nil, badParam("missing param method for %s", cl.m.name)
	}
	m, ok := cl.s.methods[*p.Method]
	if !ok {
		return nil, badParam("param method: unknown method %q (system.listMethods lists them)", *p.Method)
	}
	access := "changes connections"
	if m.readOnly {
		access = "read-only"
	}
	return fmt.Sprintf("%s(%s): %s [%s]", m.name, m.params, m.help, access), nil
}

func (cl *call) discover() (any, error) {
	if err := decodeParams(cl.m, cl.params, &struct{}{}); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := json.Compact(&b, OpenRPC()); err != nil {
		return nil, err
	}
	return rawJSON(b.Bytes()), nil
}
