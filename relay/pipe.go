package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

// Plain TCP connections (tcp:// listeners, their backends, the echo
// backend) are bare descriptors (sock.FD) watched by the Server's Poller:
// an idle one costs no goroutine and no buffer, only its table entry, its
// descriptor and the few structs below. When a socket changes (data, room
// to write, FIN, error) the Poller wakes the direction concerned, which
// runs on a goroutine of its own until a read or write would block, and
// leaves. Between two sockets bytes move by splice(2) through a kernel
// pipe held only while they flow. A receiver that stops reading stops its
// sender's reads (backpressure): a direction reads again only once what it
// read has been written.
//
// TLS and WebSocket legs keep plaintext and messages buffered inside their
// libraries, where epoll cannot see them: their connections, and the
// backend legs relayed to them, run each direction on a goroutine with
// blocking reads and writes (streamPipe).

// fdLeg is a plain TCP leg.
type fdLeg struct {
	c  *conn.Conn
	fd *sock.FD
	s  *Server
	// in reads from this leg, out writes to it (the same pipe for echo).
	in, out atomic.Pointer[fdPipe]
	// dialing is set while an outbound leg connects.
	dialing atomic.Pointer[dialing]
}

// Ready wakes the directions a socket event concerns.
func (l *fdLeg) Ready(ev uint32) {
	const (
		readable = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR
		writable = syscall.EPOLLOUT | syscall.EPOLLHUP | syscall.EPOLLERR
	)
	if d := l.dialing.Load(); d != nil {
		l.connected(d)
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
	l.s.poller.Remove(l.fd)
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

	// Owned by the goroutine running move.
	done    bool
	kp      *kpipe // holds pending bytes read but not written yet
	pending int
	rest    []byte // the same, when no kernel pipe was free
}

const (
	idle int32 = iota
	running
	again
)

// notify makes sure move runs after this call: it starts it, or tells the
// running one to go round once more.
func (p *fdPipe) notify() {
	for {
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

const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// move writes what is pending and reads more, until one would block.
func (p *fdPipe) move() {
	for !p.done {
		switch {
		case p.pending > 0:
			p.blocked.Store(true)
			n, err := p.dst.fd.SpliceFrom(p.kp.r, p.pending)
			p.pending -= n
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
		p.pending = n
	}
}

// copyOnce reads once through a pooled buffer (every kernel pipe is in
// use) and writes what it can; the rest is kept. It reports whether to
// stop: nothing to read, EOF or an error.
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
	}
	return false
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

// eof passes the FIN of src on; once both directions are finished the
// connection is done.
func (p *fdPipe) eof() {
	p.done = true
	p.release()
	p.src.c.SawEOF()
	if p.other == nil {
		// Echo: everything read has been written back already.
		p.src.c.Close(conn.ReasonEOF, nil)
		return
	}
	p.finished.Store(true)
	if err := p.dst.fd.CloseWrite(); err != nil {
		closeFor(p.dst.c, err)
		return
	}
	if p.other.finished.Load() {
		p.src.c.Close(conn.ReasonEOF, nil)
	}
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
// (it was connecting): what it may have sent meanwhile is read now.
func (s *Server) startFD(in, out *fdLeg) {
	_, down := s.pipeFD(in, out)
	down.notify()
	s.watch(in)
}

// pipeFD makes the two directions between in and out.
func (s *Server) pipeFD(in, out *fdLeg) (up, down *fdPipe) {
	up = &fdPipe{src: in, dst: out}
	down = &fdPipe{src: out, dst: in, other: up}
	up.other = down
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

// leg is a TLS or WebSocket leg, or the plain TCP backend leg of one.
type leg struct {
	c *conn.Conn
	r io.Reader
	// w sends to this leg; closeWrite passes a FIN (or its equivalent) on.
	w          io.Writer
	closeWrite func() error
	// count says bytes are counted here; TLS and WebSocket legs count
	// theirs at the socket (countingConn).
	count bool
	// wait, if set, waits until r has something, before a buffer is taken.
	wait func() error
}

// streamPipe is one direction read on a goroutine of its own.
type streamPipe struct {
	src, dst *leg
	other    *streamPipe
	finished atomic.Bool
}

// stream copies from src until it ends.
func (p *streamPipe) stream() {
	for {
		if p.src.wait != nil {
			// Nothing held while the source is quiet.
			if err := p.src.wait(); err != nil {
				closeFor(p.src.c, err)
				return
			}
		}
		if !p.copyOnce() {
			return
		}
	}
}

// copyOnce reads once from src and writes it to dst; false when the pipe
// is done.
func (p *streamPipe) copyOnce() bool {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := p.src.r.Read(*bp)
	if n > 0 {
		if p.src.count {
			p.src.c.Touch(n, 0)
		}
		if _, werr := p.dst.w.Write((*bp)[:n]); werr != nil {
			closeFor(p.dst.c, werr)
			return false
		}
		if p.dst.count {
			p.dst.c.Touch(0, n)
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		p.eof()
		return false
	case err != nil:
		closeFor(p.src.c, err)
		return false
	}
	return true
}

// waitReadable waits in Go's netpoller, holding no buffer, until c has
// data, its FIN or an error to read.
func waitReadable(c *net.TCPConn) (func() error, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	return func() error {
		var one [1]byte
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			_, _, perr = unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			return perr != unix.EAGAIN && perr != unix.EINTR
		})
		if err != nil {
			return err
		}
		if perr != nil {
			// The socket's error (a reset, a timeout), reported once:
			// it is the reason now.
			return os.NewSyscallError("recvfrom", perr)
		}
		return nil
	}, nil
}

func (p *streamPipe) eof() {
	p.src.c.SawEOF()
	if p.other == nil {
		p.src.c.Close(conn.ReasonEOF, nil)
		return
	}
	p.finished.Store(true)
	if err := p.dst.closeWrite(); err != nil {
		closeFor(p.dst.c, err)
		return
	}
	if p.other.finished.Load() {
		p.src.c.Close(conn.ReasonEOF, nil)
	}
}

// relayStream starts both directions between in and out on goroutines, or
// echo on in when out is nil.
func relayStream(in, out *leg) {
	if out == nil {
		go (&streamPipe{src: in, dst: in}).stream()
		return
	}
	up := &streamPipe{src: in, dst: out}
	down := &streamPipe{src: out, dst: in, other: up}
	up.other = down
	go up.stream()
	go down.stream()
}

// closeFor closes c for the reason a socket error says. When the table
// closed the socket itself (net.ErrClosed) its reason is already recorded
// and this does nothing: the first reason wins.
func closeFor(c *conn.Conn, err error) {
	if c.State() == conn.StateEOF {
		// The peer closed first (FIN); a reset or ENOTCONN on what we
		// still sent after that is the same ending, not a new one.
		c.Close(conn.ReasonEOF, nil)
		return
	}
	c.Close(ReasonFor(err), err)
}

// ReasonFor maps a read or write error to a close reason.
func ReasonFor(err error) conn.Reason {
	var ce interface{ Timeout() bool }
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return conn.ReasonEOF
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return conn.ReasonReset
	case errors.Is(err, syscall.ETIMEDOUT):
		return conn.ReasonTimeout
	case errors.As(err, &ce) && ce.Timeout():
		return conn.ReasonTimeout
	}
	return conn.ReasonError
}
