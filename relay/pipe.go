package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
)

// A plain TCP connection costs no goroutine and no buffer while it is
// idle: its socket is parked in the Server's Poller, and only when it turns
// readable does a goroutine run pipe.ready, which copies what there is
// with a pooled buffer, passes FIN on, and parks the socket again once a
// read would block. Writes block in Go's netpoller, so a receiver that
// stops reading stops the sender's reads too (backpressure).
//
// TLS and WebSocket legs keep plaintext and messages buffered inside their
// libraries, where epoll cannot see them, so their reads run on a goroutine
// of their own (pipe.stream); everything else is shared.

// leg is one side of a relayed connection.
type leg struct {
	c   *conn.Conn
	tcp *net.TCPConn // the kernel socket
	// rc is set for plain TCP legs: reads are parked in the poller.
	rc syscall.RawConn
	// r is what a TLS or WebSocket leg is read from, on its own goroutine;
	// such legs count their bytes at the socket (countingConn).
	r io.Reader
	// w sends to this leg; closeWrite passes a FIN (or its equivalent) on.
	w          io.Writer
	closeWrite func() error
}

// tcpLeg is a plain TCP leg.
func tcpLeg(c *conn.Conn, tcp *net.TCPConn) (*leg, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &leg{c: c, tcp: tcp, rc: rc, w: tcp, closeWrite: tcp.CloseWrite}, nil
}

// pipe is one direction: bytes read from src are written to dst. For the
// echo backend src and dst are the same leg and other is nil.
type pipe struct {
	s        *Server
	src, dst *leg
	other    *pipe
	finished atomic.Bool // src sent FIN and it was passed on
	onReady  func()      // what the poller runs, made once
}

const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

var errWouldBlock = errors.New("would block")

// read reads a parked leg once without waiting: errWouldBlock when
// nothing is there, (0, nil) at EOF.
func (l *leg) read(b []byte) (int, error) {
	for {
		var n int
		var rerr error
		if err := l.rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), b)
			return true
		}); err != nil {
			return 0, err
		}
		switch rerr {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, errWouldBlock
		}
		return 0, os.NewSyscallError("read", rerr)
	}
}

// linger is how long a direction that just moved data keeps its goroutine
// waiting in Go's netpoller for more before it parks in the poller. A
// netpoller wake-up is much cheaper than the poller's (epoll_ctl, a wake
// of the poller's thread, a new goroutine): measured here, a 64-byte round
// trip through tcpops took 125-135 µs at p50 with it against 205-212 µs
// without. The wait holds no buffer and no pipe, only the goroutine.
const linger = 250 * time.Millisecond

// maxLingering bounds the goroutines lingering at once, and so the stacks
// a burst of thousands of briefly active connections would hold; past it
// a direction parks at once.
const maxLingering = 256

var lingering atomic.Int32

// lingerWait waits up to linger for src to become readable (data or EOF).
// It reports whether to read again; false with nil error means park.
func (p *pipe) lingerWait() (bool, error) {
	l := p.src
	l.tcp.SetReadDeadline(time.Now().Add(linger))
	defer l.tcp.SetReadDeadline(time.Time{})
	var one [1]byte
	var perr error
	err := l.rc.Read(func(fd uintptr) bool {
		_, _, perr = unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return perr != unix.EAGAIN && perr != unix.EINTR
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, nil
	case err != nil:
		return false, err
	case perr != nil:
		// The peek took the socket's error (a reset, a timeout): it is
		// reported once, so it is the reason now.
		return false, os.NewSyscallError("recvfrom", perr)
	}
	return true, nil
}

// idle handles a read that found nothing: linger, then park. It reports
// whether to read again.
func (p *pipe) idle() bool {
	if lingering.Add(1) > maxLingering {
		lingering.Add(-1)
		p.arm()
		return false
	}
	again, err := p.lingerWait()
	lingering.Add(-1)
	switch {
	case err != nil:
		closeFor(p.src.c, err)
	case !again:
		p.arm()
	}
	return again
}

// start begins moving bytes: parked for a plain TCP source, on a goroutine
// otherwise.
func (p *pipe) start() {
	switch {
	case p.src.rc == nil:
		go p.stream()
		return
	case p.dst.rc != nil:
		p.onReady = p.spliceReady // socket to socket: through a kernel pipe
	default:
		p.onReady = p.ready
	}
	p.arm()
}

// arm parks the source socket until it is readable.
func (p *pipe) arm() {
	if err := p.s.poller.Arm(p.src.tcp, p.src.c.ID, p.onReady); err != nil {
		if p.src.c.State() >= 0 {
			p.src.c.Close(conn.ReasonError, err)
		}
	}
}

// ready copies until a read would block, lingers, then parks the socket.
func (p *pipe) ready() {
	for {
		if !p.copyAvailable() || !p.idle() {
			return
		}
	}
}

// copyAvailable copies what src has through a pooled buffer; true when a
// read found nothing more (the buffer is back in the pool then).
func (p *pipe) copyAvailable() bool {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := p.src.read(buf)
		switch {
		case err == errWouldBlock:
			return true
		case err != nil:
			closeFor(p.src.c, err)
			return false
		case n == 0:
			p.eof()
			return false
		}
		p.src.c.Touch(n, 0)
		if !p.send(buf[:n]) {
			return false
		}
	}
}

// stream copies from a TLS or WebSocket source until it ends.
func (p *pipe) stream() {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := p.src.r.Read(buf)
		if n > 0 && !p.send(buf[:n]) {
			return
		}
		if errors.Is(err, io.EOF) {
			p.eof()
			return
		}
		if err != nil {
			closeFor(p.src.c, err)
			return
		}
	}
}

// send writes b to dst; false when that failed and the pipe is done.
func (p *pipe) send(b []byte) bool {
	if _, err := p.dst.w.Write(b); err != nil {
		closeFor(p.dst.c, err)
		return false
	}
	if p.dst.rc != nil {
		p.dst.c.Touch(0, len(b))
	}
	return true
}

// eof passes the FIN of src on; once both directions are finished the
// connection is done.
func (p *pipe) eof() {
	p.src.c.SawEOF()
	if p.other == nil {
		// Echo: everything read has been written back already.
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

// relay starts both directions between in and out.
func (s *Server) relay(in, out *leg) {
	up := &pipe{s: s, src: in, dst: out}
	down := &pipe{s: s, src: out, dst: in, other: up}
	up.other = down
	up.start()
	down.start()
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
