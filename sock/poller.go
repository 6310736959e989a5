package sock

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller watches FDs in an epoll set of its own, edge-triggered: each
// socket is added once, for reading and writing, and its Handler hears of
// every change (data, room to write, FIN, error) until it is removed. No
// epoll_ctl runs per read or write.
//
// The epoll descriptor itself sits in Go's netpoller, so a wake-up is an
// ordinary netpoller wake-up of the goroutine running Run: no thread of
// its own, no extra hand-off between threads.
type Poller struct {
	ep   *os.File
	rc   syscall.RawConn
	epfd int // ep's descriptor, for epoll_ctl under mu (Close closes it under mu)

	// mu guards the fields below.
	mu      sync.Mutex
	slots   []slot // by descriptor number
	seq     uint32
	watched int
	closed  bool
}

// slot is what the Poller knows of one descriptor number. seq is the
// generation of the watch: every Add takes a new one.
type slot struct {
	seq uint32
	h   Handler
}

// Handler hears what epoll reported for a socket (EPOLLIN, EPOLLOUT,
// EPOLLRDHUP, EPOLLHUP, EPOLLERR). Ready runs on the Poller's goroutine
// and must not block.
type Handler interface{ Ready(events uint32) }

// ErrPollerClosed is returned by Add after Close.
var ErrPollerClosed = errors.New("poller closed")

// NewPoller creates the epoll set; call Run to dispatch.
func NewPoller() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Nonblocking, so that os.NewFile puts it in Go's netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(epfd), "epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, err
	}
	return &Poller{ep: ep, rc: rc, epfd: epfd}, nil
}

// Add watches f and reports to h. Events may reach h before Add returns.
func (p *Poller) Add(f *FD, h Handler) error {
	return f.do(func(fd int) error {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return ErrPollerClosed
		}
		if fd >= len(p.slots) {
			p.slots = append(p.slots, make([]slot, fd+1-len(p.slots)+len(p.slots)/2)...)
		}
		p.seq++
		seq := p.seq
		if p.slots[fd].h == nil {
			p.watched++
		}
		p.slots[fd] = slot{seq: seq, h: h}
		// The kernel hands back epoll_event.data as it was given: in
		// golang.org/x/sys/unix that 64-bit union is Fd (low half) and Pad
		// (high half). Pad carries the watch's generation, so that an event
		// still queued for a descriptor number that was closed and reused
		// meanwhile reaches nobody instead of the new socket's handler.
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd), Pad: int32(seq)}
		err := rawEpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
		p.mu.Unlock()
		if err != nil {
			p.forget(fd, seq)
			return &OpError{Op: "epoll_ctl", Err: os.NewSyscallError("epoll_ctl", err)}
		}
		return nil
	})
}

// Remove stops watching f. Call it before closing f (the kernel drops a
// closed descriptor from the set by itself, but its number may come back).
func (p *Poller) Remove(f *FD) {
	f.do(func(fd int) error {
		p.mu.Lock()
		if fd < len(p.slots) && p.slots[fd].h != nil {
			p.slots[fd] = slot{}
			p.watched--
		}
		if !p.closed {
			rawEpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
		p.mu.Unlock()
		return nil
	})
}

// Forget stops watching f without asking the kernel: for a socket about
// to be closed whose descriptor is its only one (not duplicated, not
// handed to another process), which closing takes out of the epoll set.
// An event already reported for it reaches nobody, as after Remove.
func (p *Poller) Forget(f *FD) {
	f.do(func(fd int) error {
		p.mu.Lock()
		if fd < len(p.slots) && p.slots[fd].h != nil {
			p.slots[fd] = slot{}
			p.watched--
		}
		p.mu.Unlock()
		return nil
	})
}

func (p *Poller) forget(fd int, seq uint32) {
	p.mu.Lock()
	if fd < len(p.slots) && p.slots[fd].seq == seq && p.slots[fd].h != nil {
		p.slots[fd] = slot{}
		p.watched--
	}
	p.mu.Unlock()
}

// Watched returns how many sockets are watched.
func (p *Poller) Watched() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.watched
}

// Run dispatches events until Close.
func (p *Poller) Run() error {
	events := make([]unix.EpollEvent, 256)
	hs := make([]Handler, len(events))
	err := p.rc.Read(func(epfd uintptr) bool {
		for {
			n, err := rawEpollWait(int(epfd), events)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return false // wait in Go's netpoller for the next event
			}
			p.mu.Lock()
			for i := range n {
				// An event of an earlier generation (see Add) is dropped.
				fd, seq := int(events[i].Fd), uint32(events[i].Pad)
				hs[i] = nil
				if fd < len(p.slots) && p.slots[fd].seq == seq {
					hs[i] = p.slots[fd].h
				}
			}
			p.mu.Unlock()
			for i := range n {
				if hs[i] != nil {
					hs[i].Ready(events[i].Events)
					hs[i] = nil
				}
			}
			if n < len(events) {
				return false
			}
		}
	})
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil
	}
	return err
}

// Close ends Run. Sockets are not closed.
func (p *Poller) Close() error {
	p.mu.Lock()
	was := p.closed
	p.slots, p.closed, p.watched = nil, true, 0
	p.mu.Unlock()
	if was {
		return nil
	}
	// Not under mu: closing waits for Run's wait to end, and Run takes mu.
	// No epoll_ctl uses the descriptor once closed is set.
	return p.ep.Close()
}
