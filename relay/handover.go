package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

// A plain TCP connection is a pair of bare sockets and two small state
// machines (fdpipe.go), so another process can take it over: the
// directions are stopped (frozen: out of the Poller, a running round
// finished), the bytes read and not yet written are taken out of the
// kernel pipe, and the sockets, their table entries and those bytes go to
// the new process, which writes the bytes first and relays on. Nothing is
// lost, duplicated or reordered, and a half-close stays as it was: the
// FIN already passed on is the socket's own state, and the direction that
// passed it is handed as finished. TLS and WebSocket connections keep
// their state inside Go libraries and stay where they are.

// HandedPipe is one direction of a handed connection.
type HandedPipe struct {
	Src uint64 `json:"src"`
	Dst uint64 `json:"dst"`
	// Pending was read from src and not yet written to dst: the new
	// process writes it before anything else.
	Pending []byte `json:"pending,omitempty"`
	// Finished says src's FIN was passed on (dst is shut for writing).
	Finished bool `json:"finished,omitempty"`
}

// Handed is a plain TCP connection as handed over: a relayed pair (in,
// out) or an echo connection (one entry), each with its socket.
type Handed struct {
	Conns []conn.ConnState `json:"conns"`
	Pipes []HandedPipe     `json:"pipes"`
	fds   []*sock.FD
}

// FDs are the sockets of h.Conns, in order.
func (h *Handed) FDs() []*sock.FD { return h.fds }

// Frozen is every plain TCP connection of a Server stopped for a
// handover. Commit ends them here once the other process has them; Resume
// relays them here again.
type Frozen struct {
	s      *Server
	t      *conn.Table
	units  []*unit   // held: handed over
	loose  []*fdLeg  // frozen, but closing here: given back at the end
	Handed []*Handed // what units are, for the other process (Freeze without a Prepared)
	final  Final     // what changed in them (Freeze with a Prepared)
}

// unit is one handed connection: its legs and their directions.
type unit struct {
	legs   []*fdLeg
	pipes  []*fdPipe
	stamps []conn.Stamp // of legs, when Prepare described them
}

// legs returns the plain TCP legs the Poller watches, by connection.
func (s *Server) legs() map[*conn.Conn]*fdLeg {
	hs := s.poller.Handlers()
	m := make(map[*conn.Conn]*fdLeg, len(hs))
	for _, h := range hs {
		if l, ok := h.(*fdLeg); ok && l.c != nil {
			m[l.c] = l
		}
	}
	return m
}

// unsettled counts the plain TCP connections not yet relayed as bare
// sockets: dialling their backend, or waiting for a PROXY protocol header.
func (s *Server) unsettled(legs map[*conn.Conn]*fdLeg) int {
	infos, _ := s.table.List(conn.Filter{})
	proto := make(map[uint64]conn.Proto, len(infos))
	for i := range infos {
		proto[infos[i].ID] = infos[i].Proto
	}
	n := 0
	for i := range infos {
		in := &infos[i]
		if in.Draining != nil {
			continue
		}
		p := in.Proto
		if in.Direction == conn.DirOut {
			p = proto[in.Peer] // "" while not yet paired
		}
		if p != conn.ProtoTCP && p != "" {
			continue // TLS or WebSocket: it stays here
		}
		c, ok := s.table.Get(in.ID)
		if !ok || c.Closing() {
			continue
		}
		l := legs[c]
		if l == nil || l.dialing.Load() != nil || l.in.Load() == nil {
			n++
		}
	}
	return n
}

// settle waits (within ctx) until no plain TCP connection is dialling
// its backend or waiting for its PROXY header, and returns the legs.
func (s *Server) settle(ctx context.Context) (map[*conn.Conn]*fdLeg, error) {
	legs := s.legs()
	for n := s.unsettled(legs); n > 0; n = s.unsettled(legs) {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%d plain TCP connection(s) still connecting to their backend: %w", n, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
		legs = s.legs()
	}
	return legs, nil
}

// group makes the units of legs: each pair (inbound leg first) or echo
// connection. A leg whose partner is not among legs (it is closing) is
// loose.
func group(legs map[*conn.Conn]*fdLeg) (units []*unit, loose []*fdLeg) {
	seen := map[*fdLeg]bool{}
	for _, l := range legs {
		if seen[l] {
			continue
		}
		u := &unit{legs: []*fdLeg{l}}
		seen[l] = true
		if pc := l.c.Peer(); pc != nil {
			pl := legs[pc]
			if pl == nil {
				loose = append(loose, l)
				continue
			}
			seen[pl] = true
			if l.c.Direction == conn.DirOut {
				u.legs = []*fdLeg{pl, l}
			} else {
				u.legs = append(u.legs, pl)
			}
		}
		units = append(units, u)
	}
	return units, loose
}

// Prepared is every plain TCP connection of a Server described ahead of a
// handover while it is still relayed here: its sockets can be sent and
// checked by the other process at leisure, so that only what changed
// since has to cross while the connections are frozen.
type Prepared struct {
	Handed []*Handed // entries and sockets; no bytes in flight yet
	units  []*unit   // the same, with each entry's stamp
}

// Prepare describes every plain TCP connection for a handover, changing
// nothing: listeners must be stopped first, so that none comes in behind
// it. It waits (within ctx) for connections still dialling their backend.
func (s *Server) Prepare(ctx context.Context) (*Prepared, error) {
	legs, err := s.settle(ctx)
	if err != nil {
		return nil, err
	}
	units, _ := group(legs)
	p := &Prepared{units: units}
	for _, u := range units {
		h := &Handed{}
		u.stamps = make([]conn.Stamp, len(u.legs))
		for i, l := range u.legs {
			// The stamp first: a change between the two shows as one.
			u.stamps[i] = l.c.Stamp()
			h.Conns = append(h.Conns, l.c.Export())
			h.fds = append(h.fds, l.fd)
		}
		p.Handed = append(p.Handed, h)
	}
	return p, nil
}

// Final is what a handover sends once the connections are frozen, against
// what Prepare sent: the prepared connections not handed (each by its
// first conid: they ended meanwhile and stay here), the entries that
// changed since, and the directions with bytes in flight or a FIN passed
// on. Everything else is as Prepare described it.
type Final struct {
	Gone    []uint64         `json:"gone,omitempty"`
	Changed []conn.ConnState `json:"changed,omitempty"`
	Pipes   []HandedPipe     `json:"pipes,omitempty"`
}

// add puts a frozen unit in the final: its entries whose stamp changed
// since Prepare, its directions with bytes in flight or a FIN passed on.
func (fin *Final) add(u *unit, pipes []HandedPipe) {
	for i, l := range u.legs {
		if u.stamps[i] != l.c.Stamp() {
			fin.Changed = append(fin.Changed, l.c.Export())
		}
	}
	for _, hp := range pipes {
		if len(hp.Pending) > 0 || hp.Finished {
			fin.Pipes = append(fin.Pipes, hp)
		}
	}
}

// Final is what changed since Prepare, for a Frozen made with it.
func (f *Frozen) Final() Final { return f.final }

// Freeze stops every plain TCP connection for a handover: listeners must
// be stopped first, so that none comes in behind it. It waits (within
// ctx) for connections still dialling their backend, stops each
// direction, and holds the table entries of each pair. The sockets stay
// in the Poller, whose events a frozen direction ignores, until Commit or
// Resume. On error nothing is frozen.
//
// With pr, made by Prepare after the listeners stopped, nothing can be
// connecting still; the connections are not described again, only what
// changed since pr (Final).
func (s *Server) Freeze(ctx context.Context, pr *Prepared) (*Frozen, error) {
	// The legs: those Prepare found (none can have come since: the
	// listeners are stopped and nothing was connecting), else every one.
	var legs []*fdLeg
	var units, loose []*unit
	if pr != nil {
		units = pr.units
		for _, u := range units {
			legs = append(legs, u.legs...)
		}
	} else {
		m, err := s.settle(ctx)
		if err != nil {
			return nil, err
		}
		for _, l := range m {
			legs = append(legs, l)
		}
		var ls []*fdLeg
		units, ls = group(m)
		if len(ls) > 0 {
			loose = []*unit{{legs: ls}}
		}
	}
	f := &Frozen{s: s, t: s.table}
	var all []*fdPipe
	for _, l := range legs {
		for _, p := range l.pipes() {
			p.frozen.Store(true)
			all = append(all, p)
		}
	}
	// A round running now finishes at its next turn (move checks frozen).
	for _, p := range all {
		for p.run.Load() != idle {
			select {
			case <-ctx.Done():
				for _, l := range legs {
					f.loose = append(f.loose, l)
				}
				f.Resume()
				return nil, fmt.Errorf("a relay direction did not stop: %w", ctx.Err())
			case <-time.After(100 * time.Microsecond):
			}
		}
	}
	for _, u := range loose {
		f.loose = append(f.loose, u.legs...)
	}
	for _, u := range units {
		cs := make([]*conn.Conn, len(u.legs))
		for i, ul := range u.legs {
			cs[i] = ul.c
		}
		if !s.table.Hold(cs...) {
			f.loose = append(f.loose, u.legs...)
			if pr != nil {
				f.final.Gone = append(f.final.Gone, cs[0].ID)
			}
			continue
		}
		f.units = append(f.units, u)
	}
	for _, u := range f.units {
		h := &Handed{}
		u.pipes = u.legs[0].pipes()
		for _, p := range u.pipes {
			b, err := p.takePending()
			if err != nil {
				f.Resume()
				return nil, fmt.Errorf("conid %d: reading bytes in flight: %w", p.src.c.ID, err)
			}
			h.Pipes = append(h.Pipes, HandedPipe{Src: p.src.c.ID, Dst: p.dst.c.ID,
				Pending: append([]byte(nil), b...), Finished: p.finished.Load()})
		}
		if pr != nil {
			f.final.add(u, h.Pipes)
			continue
		}
		for _, l := range u.legs {
			h.Conns = append(h.Conns, l.c.Export())
			h.fds = append(h.fds, l.fd)
		}
		f.Handed = append(f.Handed, h)
	}
	return f, nil
}

// pipes returns the directions of the connection l is part of: one for
// echo, else the two between l and its partner.
func (l *fdLeg) pipes() []*fdPipe {
	in, out := l.in.Load(), l.out.Load()
	switch {
	case in == nil && out == nil:
		return nil
	case in == out || out == nil:
		return []*fdPipe{in}
	case in == nil:
		return []*fdPipe{out}
	}
	return []*fdPipe{in, out}
}

// takePending moves the bytes the kernel pipe holds into rest, where they
// stay first in line: written here if the handover fails, handed over
// otherwise. The pipe goes back to the pool.
func (p *fdPipe) takePending() ([]byte, error) {
	if p.kp == nil {
		return p.rest, nil
	}
	var b []byte
	if p.pending > 0 {
		b = make([]byte, p.pending)
		for got := 0; got < len(b); {
			n, err := unix.Read(p.kp.r, b[got:])
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return nil, os.NewSyscallError("read", err)
			}
			got += n
		}
	}
	putPipe(p.kp)
	p.kp, p.pending = nil, 0
	p.rest = append(b, p.rest...)
	return p.rest, nil
}

// Commit ends the handed connections here: their table entries leave
// without an event and this process's descriptors close (the other
// process holds the sockets, so no FIN is sent). Call it once the other
// process has taken them.
func (f *Frozen) Commit() {
	// The other process holds the sockets too, so closing them here
	// would not take them out of this Poller's epoll set. When the Poller
	// holds nothing else, its epoll instance is closed instead: the kernel
	// drops every registration at once, far cheaper than an epoll_ctl
	// each (this runs while the other process starts relaying).
	handed := 0
	for _, u := range f.units {
		handed += len(u.legs)
	}
	whole := len(f.loose) == 0 && f.s.poller.Watched() == handed
	if whole {
		f.s.poller.Close()
	}
	for _, u := range f.units {
		for _, p := range u.pipes {
			p.rest, p.done = nil, true
		}
		for _, l := range u.legs {
			if !whole {
				f.s.poller.Remove(l.fd)
			}
			f.t.Drop(l.c)
			l.fd.Close(false)
		}
	}
	f.units = nil
	f.thaw()
}

// Resume relays every frozen connection here again (the handover
// failed): entries released, bytes in flight written first, sockets back
// in the Poller, whose first event says what happened meanwhile.
func (f *Frozen) Resume() {
	for _, u := range f.units {
		cs := make([]*conn.Conn, len(u.legs))
		for i, l := range u.legs {
			cs[i] = l.c
		}
		f.t.Release(cs...)
		f.loose = append(f.loose, u.legs...)
	}
	f.units = nil
	f.thaw()
}

// thaw lets the loose legs run again (their sockets never left the
// Poller): each direction runs once, to relay what came while it was
// frozen (an edge-triggered event it ignored then is not repeated), to
// write what it holds or to give back what a close left it.
func (f *Frozen) thaw() {
	var ps []*fdPipe
	for _, l := range f.loose {
		for _, p := range l.pipes() {
			if p.frozen.Swap(false) {
				ps = append(ps, p)
			}
		}
	}
	for _, p := range ps {
		p.notify()
	}
	f.loose = nil
}

// Config returns the Server's configuration.
func (s *Server) Config() Config { return *s.conf.Load() }

// Units counts the connections frozen for handing over, and Entries
// their table entries.
func (f *Frozen) Units() int { return len(f.units) }

func (f *Frozen) Entries() int {
	n := 0
	for _, u := range f.units {
		n += len(u.legs)
	}
	return n
}

// Adopted is a connection taken over from another process before it is
// relayed here: its entries held (see conn.Table.Hold), its sockets
// watched, its directions frozen. An upgrade adopts while the other
// process still relays, brings it up to date once that one has frozen it
// (Update), and starts it when that one has let go (Start), so that the
// pause in between is short.
type Adopted struct {
	s      *Server
	legs   []*fdLeg
	pipes  []*fdPipe
	states []conn.ConnState
	redo   []bool // states[i] has news for its entry (Start applies it)
}

// Adopt takes over a connection handed by another process: its table
// entries under their conids, its sockets fds (in the order of h.Conns),
// its directions with their bytes in flight and half-close. It relays
// nothing until Start.
func (s *Server) Adopt(h *Handed, fds []*sock.FD) (*Adopted, error) {
	if len(h.Conns) != len(fds) || len(h.Conns) < 1 || len(h.Conns) > 2 {
		return nil, fmt.Errorf("handed connection with %d entries and %d sockets", len(h.Conns), len(fds))
	}
	a := &Adopted{s: s, legs: make([]*fdLeg, len(fds)), states: append([]conn.ConnState(nil), h.Conns...),
		redo: make([]bool, len(fds))}
	for i, cs := range h.Conns {
		a.redo[i] = len(cs.Overrides) > 0 // armed at Start
		l := &fdLeg{fd: fds[i], s: s}
		c, err := s.table.AdoptHeld(cs, fds[i], l.close)
		if err != nil {
			for _, prev := range a.legs[:i] {
				s.table.Drop(prev.c)
			}
			return nil, err
		}
		l.c, a.legs[i] = c, l
	}
	if len(a.legs) == 1 {
		p := &fdPipe{src: a.legs[0], dst: a.legs[0]}
		a.legs[0].in.Store(p)
		a.legs[0].out.Store(p)
		a.pipes = []*fdPipe{p}
	} else {
		if !conn.PairHeld(a.legs[0].c, a.legs[1].c) {
			a.drop()
			return nil, errors.New("handed pair could not be joined")
		}
		up, down := s.pipeFD(a.legs[0], a.legs[1])
		a.pipes = []*fdPipe{up, down}
	}
	for _, p := range a.pipes {
		p.frozen.Store(true)
	}
	a.Update(nil, h.Pipes)
	for _, l := range a.legs {
		if err := s.poller.Add(l.fd, l); err != nil {
			a.drop()
			return nil, err
		}
	}
	return a, nil
}

// Update brings the connection up to date with a later state from the
// other process: the entries in changed that are its own, and its
// directions' bytes in flight and half-close (a direction not in pipes
// has neither).
func (a *Adopted) Update(changed map[uint64]conn.ConnState, pipes []HandedPipe) {
	for i, l := range a.legs {
		if cs, ok := changed[l.c.ID]; ok {
			a.states[i], a.redo[i] = cs, true
		}
	}
	for _, p := range a.pipes {
		p.rest, p.done = nil, false
		p.finished.Store(false)
		for _, hp := range pipes {
			if p.src.c.ID == hp.Src && p.dst.c.ID == hp.Dst {
				if len(hp.Pending) > 0 {
					p.rest = hp.Pending
				}
				if hp.Finished {
					p.finished.Store(true)
					p.done = true
				}
			}
		}
	}
}

// Abandon lets go of a connection the other process ended meanwhile: its
// entries leave without an event, and this process's descriptors close
// (the other one's close is what the peers see).
func (a *Adopted) Abandon() {
	for _, l := range a.legs {
		a.s.poller.Remove(l.fd)
	}
	a.drop()
}

func (a *Adopted) drop() {
	for _, l := range a.legs {
		a.s.table.Drop(l.c)
		l.fd.Close(false)
	}
}

// Start relays the connection here: entries brought up to date and
// released, directions running where an event came while they were
// frozen or bytes wait to be written.
func (a *Adopted) Start() {
	cs := make([]*conn.Conn, len(a.legs))
	for i, l := range a.legs {
		if a.redo[i] {
			l.c.Readopt(a.states[i])
		}
		cs[i] = l.c
	}
	a.s.table.Release(cs...)
	for _, p := range a.pipes {
		// p.rest is move's once the direction can run: read it first. An
		// event that comes before the unfreeze sets missed, read after.
		waiting := len(p.rest) > 0
		p.frozen.Store(false)
		if p.missed.Swap(false) || waiting {
			p.notify()
		}
	}
}

// File returns a duplicate of the listening socket, for another process.
func (b *Bound) File() (*os.File, error) {
	tl, ok := b.ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("listener %s: not a TCP listener", b.l.Name)
	}
	return tl.File()
}

// ListenFile is Listen for a listening socket handed over by another
// process (or kept by systemd): f is a duplicate the Bound does not keep.
func (s *Server) ListenFile(l Listener, f *os.File) (*Bound, error) {
	if err := s.loadTLS(&l); err != nil {
		return nil, err
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listener %s from a handed socket: %w", l.Name, err)
	}
	// A process before this one may have listened without TCP_NODELAY:
	// then each accepted connection is given it.
	noDelay := false
	if sc, ok := ln.(syscall.Conn); ok {
		noDelay, _ = sock.NoDelay(sc)
	}
	return &Bound{s: s, l: l, ln: ln, noDelay: noDelay}, nil
}

// Plain reports whether the connections of l are plain TCP (handed over
// in an upgrade) rather than TLS or WebSocket (kept by the old process).
func (l Listener) Plain() bool { return l.Scheme == conn.ProtoTCP }
