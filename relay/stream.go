package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
)

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

// eof passes the FIN of src on.
func (p *streamPipe) eof() {
	var other *atomic.Bool
	if p.other != nil {
		other = &p.other.finished
	}
	endOfStream(p.src.c, p.dst.c, &p.finished, other, p.dst.closeWrite, false)
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
