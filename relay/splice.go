package relay

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Between two plain TCP sockets a bulk direction (one whose read filled
// the buffer once) moves bytes with splice(2) through a pipe, never
// through user memory. A pipe is held only while data flows: an idle
// relayed connection holds no descriptor beyond its two sockets.

// kpipe is a kernel pipe used for splicing.
type kpipe struct{ r, w int }

// pipeSize is what one splice moves at most: the kernel's default pipe
// size. Bigger pipes (256 KiB, 1 MiB, set with F_SETPIPE_SZ) measured
// slower here: 1 stream 1,148-1,216 MB/s with 256 KiB against
// 1,290-1,375 with 64 KiB, 64 streams no better (BENCHMARKS.md).
const pipeSize = 64 << 10

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
