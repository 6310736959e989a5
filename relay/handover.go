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
	Handed []*Handed // what units are, for the other process
}

// unit is one handed connection: its legs and their directions.
type unit struct {
	legs  []*fdLeg
	pipes []*fdPipe
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

// Freeze stops every plain TCP connection for a handover: listeners must
// be stopped first, so that none comes in behind it. It waits (within
// ctx) for connections still dialling their backend, stops each
// direction, and holds the table entries of each pair. On error nothing
// is frozen.
func (s *Server) Freeze(ctx context.Context) (*Frozen, error) {
	legs := s.legs()
	for n := s.unsettled(legs); n > 0; n = s.unsettled(legs) {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%d plain TCP connection(s) still connecting to their backend: %w", n, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
		legs = s.legs()
	}
	f := &Frozen{s: s, t: s.table}
	var all []*fdPipe
	for _, l := range legs {
		for _, p := range l.pipes() {
			p.frozen.Store(true)
			all = append(all, p)
		}
		s.poller.Remove(l.fd)
	}
	// A round running now finishes at its next turn (move checks frozen).
	for _, p := range all {
		for p.run.Load() != idle {
			select {
			case <-ctx.Done():
				f.units = nil
				for _, l := range legs {
					f.loose = append(f.loose, l)
				}
				f.Resume()
				return nil, fmt.Errorf("a relay direction did not stop: %w", ctx.Err())
			case <-time.After(100 * time.Microsecond):
			}
		}
	}
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
				f.loose = append(f.loose, l)
				continue
			}
			seen[pl] = true
			if l.c.Direction == conn.DirOut {
				u.legs = []*fdLeg{pl, l}
			} else {
				u.legs = append(u.legs, pl)
			}
		}
		cs := make([]*conn.Conn, len(u.legs))
		for i, ul := range u.legs {
			cs[i] = ul.c
		}
		if !s.table.Hold(cs...) {
			f.loose = append(f.loose, u.legs...)
			continue
		}
		f.units = append(f.units, u)
	}
	for _, u := range f.units {
		h := &Handed{}
		for _, l := range u.legs {
			h.Conns = append(h.Conns, l.c.Export())
			h.fds = append(h.fds, l.fd)
		}
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
	for _, u := range f.units {
		for _, p := range u.pipes {
			p.rest, p.done = nil, true
		}
		for _, l := range u.legs {
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
		for _, l := range u.legs {
			f.t.Release(l.c)
		}
		f.loose = append(f.loose, u.legs...)
	}
	f.units = nil
	f.thaw()
}

// thaw lets the loose legs run again: those still open go back to the
// Poller, and each direction runs once to write what it holds or to give
// back what a close left it.
func (f *Frozen) thaw() {
	var ps []*fdPipe
	for _, l := range f.loose {
		for _, p := range l.pipes() {
			if p.frozen.Swap(false) {
				ps = append(ps, p)
			}
		}
		if !l.c.Closing() {
			f.s.watch(l)
		}
	}
	for _, p := range ps {
		p.notify()
	}
	f.loose = nil
}

// Config returns the Server's configuration.
func (s *Server) Config() Config { return *s.conf.Load() }

// Units counts the connections frozen for handing over.
func (f *Frozen) Units() int { return len(f.units) }

// Adopt takes over a connection handed by another process: its table
// entries under their conids, its sockets fds (in the order of h.Conns),
// its directions with their bytes in flight and half-close. It relays
// nothing until start is called.
func (s *Server) Adopt(h *Handed, fds []*sock.FD) (start func(), err error) {
	if len(h.Conns) != len(fds) || len(h.Conns) < 1 || len(h.Conns) > 2 {
		return nil, fmt.Errorf("handed connection with %d entries and %d sockets", len(h.Conns), len(fds))
	}
	legs := make([]*fdLeg, len(fds))
	for i, cs := range h.Conns {
		l := &fdLeg{fd: fds[i], s: s}
		c, err := s.table.Adopt(cs, fds[i], l.close)
		if err != nil {
			for _, prev := range legs[:i] {
				prev.c.Close(conn.ReasonError, err)
			}
			return nil, err
		}
		l.c, legs[i] = c, l
	}
	var pipes []*fdPipe
	if len(legs) == 1 {
		p := &fdPipe{src: legs[0], dst: legs[0]}
		legs[0].in.Store(p)
		legs[0].out.Store(p)
		pipes = []*fdPipe{p}
	} else {
		if !conn.Pair(legs[0].c, legs[1].c) {
			return nil, errors.New("handed pair could not be joined")
		}
		up, down := s.pipeFD(legs[0], legs[1])
		pipes = []*fdPipe{up, down}
	}
	for _, hp := range h.Pipes {
		for _, p := range pipes {
			if p.src.c.ID == hp.Src && p.dst.c.ID == hp.Dst {
				p.rest = hp.Pending
				if len(p.rest) == 0 {
					p.rest = nil
				}
				if hp.Finished {
					p.finished.Store(true)
					p.done = true
				}
			}
		}
	}
	return func() {
		for _, l := range legs {
			if !s.watch(l) {
				return
			}
		}
		// The Poller's first event wakes a direction with something to
		// read; one with bytes in flight is woken here.
		for _, p := range pipes {
			if len(p.rest) > 0 {
				p.notify()
			}
		}
	}, nil
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
	if l.isTLS() {
		c := s.conf.Load()
		cfg, err := loadTLS(&l, c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, err
		}
		l.tlsConfig = cfg
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

// CheckListener loads what serving l needs besides its socket (the TLS
// certificate and key), so that a new process can refuse a handover it
// could not serve before it takes anything over.
func CheckListener(l Listener, cfg Config) error {
	if !l.isTLS() {
		return nil
	}
	_, err := loadTLS(&l, cfg.TLSCert, cfg.TLSKey)
	return err
}

// Plain reports whether the connections of l are plain TCP (handed over
// in an upgrade) rather than TLS or WebSocket (kept by the old process).
func (l Listener) Plain() bool { return l.Scheme == conn.ProtoTCP }
