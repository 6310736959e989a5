package relay

import (
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Between two plain TCP sockets bytes move with splice(2) through a pipe,
// never through user memory. A pipe is held only while data flows: an idle
// relayed connection holds no descriptor beyond its two sockets.

// kpipe is a kernel pipe used for splicing.
type kpipe struct{ r, w int }

// pipeSize is what the kernel is asked to give each pipe (the default is
// 64 KiB); bigger moves more per splice call.
const pipeSize = 256 << 10

// freePipes keeps a few pipes for the next active connections.
var freePipes = make(chan *kpipe, 64)

// maxPipes bounds the pipes in use at once (two descriptors each): a burst
// of thousands of connections waking together copies through a buffer
// instead of taking descriptors the listeners need.
const maxPipes = 512

var pipesInUse atomic.Int32

// getPipe returns a pipe, or nil when too many are in use or the system
// will not make one; the caller then copies through a buffer.
func getPipe() *kpipe {
	if pipesInUse.Add(1) > maxPipes {
		pipesInUse.Add(-1)
		return nil
	}
	select {
	case p := <-freePipes:
		return p
	default:
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		pipesInUse.Add(-1)
		return nil
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize) // best effort
	return &kpipe{r: fds[0], w: fds[1]}
}

// putPipe returns an empty pipe for reuse.
func putPipe(p *kpipe) {
	pipesInUse.Add(-1)
	select {
	case freePipes <- p:
	default:
		p.close()
	}
}

// dropPipe closes a pipe that may still hold bytes.
func dropPipe(p *kpipe) {
	pipesInUse.Add(-1)
	p.close()
}

func (p *kpipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// spliceIn moves what src has (up to the pipe's room) into the pipe
// without waiting: errWouldBlock when src has nothing, (0, nil) at EOF.
func (l *leg) spliceIn(p *kpipe) (int, error) {
	for {
		var n int64
		var serr error
		if err := l.rc.Read(func(fd uintptr) bool {
			n, serr = unix.Splice(int(fd), nil, p.w, nil, pipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return true
		}); err != nil {
			return 0, err
		}
		switch serr {
		case nil:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, errWouldBlock
		}
		return 0, os.NewSyscallError("splice", serr)
	}
}

// spliceOut moves n bytes from the pipe into dst, waiting in Go's
// netpoller while dst cannot take more (backpressure).
func (l *leg) spliceOut(p *kpipe, n int) error {
	var serr error
	err := l.rc.Write(func(fd uintptr) bool {
		for n > 0 {
			m, err := unix.Splice(p.r, nil, int(fd), nil, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch err {
			case nil:
				n -= int(m)
			case unix.EINTR:
			case unix.EAGAIN:
				return false // wait until dst is writable
			default:
				serr = os.NewSyscallError("splice", err)
				return true
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

// spliceReady is ready for two plain TCP legs.
func (p *pipe) spliceReady() {
	for {
		kp := getPipe()
		if kp == nil {
			p.ready() // too many pipes in use: through a buffer
			return
		}
		if !p.spliceAvailable(kp) || !p.idle() {
			return
		}
	}
}

// spliceAvailable moves what src has to dst through kp; true when src had
// nothing more (kp is back in the pool then).
func (p *pipe) spliceAvailable(kp *kpipe) bool {
	for {
		n, err := p.src.spliceIn(kp)
		switch {
		case err == errWouldBlock:
			putPipe(kp) // drained by the last spliceOut
			return true
		case err != nil:
			dropPipe(kp)
			closeFor(p.src.c, err)
			return false
		case n == 0:
			putPipe(kp)
			p.eof()
			return false
		}
		p.src.c.Touch(n, 0)
		if err := p.dst.spliceOut(kp, n); err != nil {
			dropPipe(kp) // may hold bytes nobody will read
			closeFor(p.dst.c, err)
			return false
		}
		p.dst.c.Touch(0, n)
	}
}
