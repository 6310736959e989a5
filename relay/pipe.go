package relay

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tcpops/tcpops/conn"
)

// Plain TCP connections (tcp:// listeners, their backends, the echo
// backend) are bare descriptors (sock.FD) watched by the Server's Poller:
// an idle one costs no goroutine and no buffer, only its table entry, its
// descriptor and the few structs below. When a socket changes (data, room
// to write, FIN, error) the Poller wakes the direction concerned, which
// runs on a goroutine of its own until a read or write would block, and
// leaves. A direction's first bytes (a request, an answer) are read into a
// pooled buffer and written from it; once a read fills the buffer the
// direction is bulk, and bytes move by splice(2) through a kernel pipe
// held only while they flow. A receiver that stops reading stops its
// sender's reads (backpressure): a direction reads again only once what it
// read has been written.
//
// TLS and WebSocket legs keep plaintext and messages buffered inside their
// libraries, where epoll cannot see them: their connections, and the
// backend legs relayed to them, run each direction on a goroutine with
// blocking reads and writes (streamPipe).
//
// The two engines are in fdpipe.go and stream.go; what ends a direction
// is the same for both and written once here.

const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// endOfStream passes on the FIN that src sent: dst's write side is shut
// (closeWrite) and, once the opposite direction has finished too, the
// connection is done and both legs close with reason eof. For the echo
// backend (other nil) everything read has been written back already and
// the connection ends at once. With closeSends, closing dst sends its FIN
// as shutting it would (a bare socket whose every byte was read): when the
// opposite direction has finished already, the connection is closed
// without shutting dst first.
func endOfStream(src, dst *conn.Conn, finished, other *atomic.Bool, closeWrite func() error, closeSends bool) {
	src.SawEOF()
	if other == nil {
		src.Close(conn.ReasonEOF, nil)
		return
	}
	finished.Store(true)
	if closeSends && other.Load() {
		src.Close(conn.ReasonEOF, nil)
		return
	}
	if err := closeWrite(); err != nil {
		closeFor(dst, err)
		return
	}
	if other.Load() {
		src.Close(conn.ReasonEOF, nil)
	}
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
	c.Close(ReasonFor(err), socketError(err))
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
