package relay

import (
	"sync/atomic"
	"syscall"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

// fdLeg is a plain TCP leg.
type fdLeg struct {
	c  *conn.Conn
	fd *sock.FD
	s  *Server
	// in reads from this leg, out writes to it (the same pipe for echo).
	in, out atomic.Pointer[fdPipe]
	// dialing is set while an outbound leg connects.
	dialing atomic.Pointer[dialing]
	// hup is set once the Poller reported the peer's FIN, a hang-up or an
	// error: a read that did not fill the buffer no longer means there is
	// nothing more to read (the FIN is read as a read of 0, later).
	hup atomic.Bool
}

// Ready wakes the directions a socket event concerns.
func (l *fdLeg) Ready(ev uint32) {
	const (
		readable = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR
		writable = syscall.EPOLLOUT | syscall.EPOLLHUP | syscall.EPOLLERR
	)
	// First: a backend may send its bytes and FIN with the connect's
	// outcome, in the one event a connecting leg gets.
	if ev&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		l.hup.Store(true)
	}
	if d := l.dialing.Load(); d != nil {
		l.connected(d, ev)
		return
	}
	in, out := l.in.Load(), l.out.Load()
	r := ev&readable != 0 && in != nil
	if r {
		in.notify()
	}
	// Room to write matters only to a direction waiting for it: a new
	// socket's first event (writable) starts no goroutine.
	if ev&writable != 0 && out != nil && out.blocked.Load() && !(r && out == in) {
		out.notify()
	}
}

// close is the Closer of a plain TCP leg. The directions using the socket
// are woken to give back what they hold.
func (l *fdLeg) close(_ *conn.Conn, reset bool) error {
	if d := l.dialing.Swap(nil); d != nil {
		d.timer.Stop()
	}
	// Closing the descriptor takes the socket out of the epoll set, with
	// no epoll_ctl of its own, when it is the socket's only one. During an
	// upgrade the other process may hold a copy: the registration then
	// lasts until that copy closes too, and the Poller drops its events
	// (the slot's generation has moved on).
	l.s.poller.Forget(l.fd)
	err := l.fd.Close(reset)
	if p := l.in.Load(); p != nil {
		p.notify()
	}
	if p := l.out.Load(); p != nil {
		p.notify()
	}
	return err
}

// fdPipe is one direction between plain TCP legs: bytes read from src are
// written to dst. For the echo backend src and dst are the same leg and
// other is nil.
type fdPipe struct {
	src, dst *fdLeg
	other    *fdPipe
	finished atomic.Bool  // src sent FIN and it was passed on
	run      atomic.Int32 // idle, running, or running and woken again
	// blocked is set from before a write of pending bytes until they are
	// all written: while it is set, room to write on dst wakes the pipe.
	blocked atomic.Bool
	// frozen stops the direction for a handover (handover.go): it does
	// not start again, and a running move stops at its next round.
	frozen atomic.Bool
	// missed is set when an event came while frozen (adopted, handover.go).
	missed atomic.Bool

	// Owned by the goroutine running move (ordered for 80 bytes in all).
	done    bool
	bulk    bool  // a read filled the buffer: splice from now on
	pending int32 // bytes in kp, read but not written yet
	kp      *kpipe
	rest    []byte // the same, read through a buffer
}

const (
	idle int32 = iota
	running
	again
)

// notify makes sure move runs after this call: it starts it, or tells the
// running one to go round once more.
func (p *fdPipe) notify() {
	if p.frozen.Load() {
		p.missed.Store(true)
	}
	for !p.frozen.Load() {
		switch p.run.Load() {
		case idle:
			if p.run.CompareAndSwap(idle, running) {
				go p.loop()
				return
			}
		case running:
			if p.run.CompareAndSwap(running, again) {
				return
			}
		default:
			return
		}
	}
}

func (p *fdPipe) loop() {
	for {
		p.move()
		if p.run.CompareAndSwap(running, idle) {
			return
		}
		p.run.Store(running)
	}
}

// move writes what is pending and reads more, until one would block.
func (p *fdPipe) move() {
	for !p.done && !p.frozen.Load() {
		switch {
		case p.pending > 0:
			p.blocked.Store(true)
			n, err := p.dst.fd.SpliceFrom(p.kp.r, int(p.pending))
			p.pending -= int32(n)
			if n > 0 {
				p.dst.c.Touch(0, n)
			}
			if p.wait(p.dst.c, err) {
				return
			}
			continue
		case len(p.rest) > 0:
			p.blocked.Store(true)
			n, err := p.dst.fd.Write(p.rest)
			p.rest = p.rest[n:]
			if n > 0 {
				p.dst.c.Touch(0, n)
			}
			if p.wait(p.dst.c, err) {
				return
			}
			if len(p.rest) == 0 {
				p.rest = nil
			}
			continue
		}
		p.blocked.Store(false)
		if !p.bulk {
			// Until a read fills the buffer, bytes are read into it and
			// written from it: for the few bytes of a request or an answer
			// that is cheaper than two splices, and a read that did not
			// fill it emptied the socket, so no read waits for EAGAIN (the
			// Poller reports bytes that arrive later).
			if p.copyOnce() {
				return
			}
			continue
		}
		if p.kp == nil {
			p.kp = getPipe()
		}
		if p.kp == nil {
			if p.copyOnce() {
				return
			}
			continue
		}
		n, err := p.src.fd.SpliceTo(p.kp.w, pipeSize)
		switch {
		case err == sock.ErrWouldBlock:
			putPipe(p.kp) // empty: nothing pending
			p.kp = nil
			return
		case err != nil:
			p.fail(p.src.c, err)
			return
		case n == 0:
			p.eof()
			return
		}
		p.src.c.Touch(n, 0)
		p.pending = int32(n)
	}
}

// copyOnce reads once through a pooled buffer (before the direction is
// bulk, or when every kernel pipe is in use) and writes what it can; the
// rest is kept. It reports whether to stop: nothing to read, EOF, an
// error, or a read that did not fill the buffer and was written whole
// (the socket had no more, and the Poller reports what comes next; not
// after a FIN was reported, which is read as a read of 0 and comes with
// no event of its own). A read that fills the buffer makes the direction
// bulk.
func (p *fdPipe) copyOnce() bool {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := p.src.fd.Read(*bp)
	switch {
	case err == sock.ErrWouldBlock:
		return true
	case err != nil:
		p.fail(p.src.c, err)
		return true
	case n == 0:
		p.eof()
		return true
	}
	p.src.c.Touch(n, 0)
	b := (*bp)[:n]
	w, err := p.dst.fd.Write(b)
	if w > 0 {
		p.dst.c.Touch(0, w)
	}
	if err != nil && err != sock.ErrWouldBlock {
		p.fail(p.dst.c, err)
		return true
	}
	if w < n {
		p.rest = append([]byte(nil), b[w:]...)
		return false
	}
	if n == len(*bp) {
		p.bulk = true
		return false
	}
	return !p.src.hup.Load()
}

// wait handles the error of a write: true to stop (it would block, and
// the Poller wakes the pipe when dst has room; or it failed).
func (p *fdPipe) wait(c *conn.Conn, err error) bool {
	switch {
	case err == nil:
		return false
	case err == sock.ErrWouldBlock:
		return true
	}
	p.fail(c, err)
	return true
}

// fail ends the direction for err on c, giving back what it holds.
func (p *fdPipe) fail(c *conn.Conn, err error) {
	p.done = true
	p.release()
	closeFor(c, err)
}

func (p *fdPipe) release() {
	if p.kp != nil {
		if p.pending > 0 {
			dropPipe(p.kp) // holds bytes nobody will read
		} else {
			putPipe(p.kp)
		}
		p.kp, p.pending = nil, 0
	}
	p.rest = nil
}

// eof passes the FIN of src on, giving back what the pipe holds.
func (p *fdPipe) eof() {
	p.done = true
	p.release()
	var other *atomic.Bool
	if p.other != nil {
		other = &p.other.finished
	}
	endOfStream(p.src.c, p.dst.c, &p.finished, other, p.dst.fd.CloseWrite, true)
}

// relayFD starts both directions between plain TCP legs in and out, or
// echo on in when out is nil.
func (s *Server) relayFD(in, out *fdLeg) {
	if out == nil {
		p := &fdPipe{src: in, dst: in}
		in.in.Store(p)
		in.out.Store(p)
		s.watch(in)
		return
	}
	s.pipeFD(in, out)
	if s.watch(in) {
		s.watch(out)
	}
}

// startFD starts relaying between in and out, which is watched already
// (it was connecting), on the Poller's goroutine as out's first event ev
// is handled: what out sent with it is read now. What it sends later is
// a later event, handled once this one is done and the pipes exist.
func (s *Server) startFD(in, out *fdLeg, ev uint32) {
	_, down := s.pipeFD(in, out)
	if ev&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		down.notify()
	}
	s.watch(in)
}

// pipeFD makes the two directions between in and out.
func (s *Server) pipeFD(in, out *fdLeg) (up, down *fdPipe) {
	both := &[2]fdPipe{{src: in, dst: out}, {src: out, dst: in}}
	up, down = &both[0], &both[1]
	up.other, down.other = down, up
	in.in.Store(up)
	out.out.Store(up)
	out.in.Store(down)
	in.out.Store(down)
	return up, down
}

// watch adds a leg to the Poller; the socket's current state arrives as
// its first event. False when that failed (the connection is closed then).
func (s *Server) watch(l *fdLeg) bool {
	if err := s.poller.Add(l.fd, l); err != nil {
		closeFor(l.c, err)
		return false
	}
	return true
}
