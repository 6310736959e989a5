package sock

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller parks idle sockets in an epoll set of its own, so that a
// connection with nothing to read costs no goroutine and no buffer. Each
// socket is watched one-shot: when it becomes readable (data, FIN, error),
// its Ready func runs once on a new goroutine, and the socket is not
// watched again until Arm is called for it.
//
// The sockets stay in Go's own netpoller too, so blocking writes and Close
// work as usual; Poller only replaces the goroutine that would wait in Read.
type Poller struct {
	epfd   int
	wakeFd int // eventfd that ends Run

	// mu guards the fields below.
	mu     sync.Mutex
	ready  map[uint64]func()
	closed bool
}

// NewPoller creates the epoll set.
func NewPoller() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return &Poller{epfd: epfd, wakeFd: wfd, ready: make(map[uint64]func())}, nil
}

const wakeToken = ^uint64(0)

// ErrPollerClosed is returned by Arm after Close.
var ErrPollerClosed = errors.New("poller closed")

func setToken(ev *unix.EpollEvent, t uint64) {
	ev.Fd = int32(uint32(t))
	ev.Pad = int32(uint32(t >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// Arm watches c for readability under token (unique per socket while it
// is watched). The first Arm of a socket adds it with its ready func;
// later ones re-arm it (ready is then the same func and not stored again).
// If c is readable already, ready runs at once (epoll re-checks on arm),
// so no wake-up is lost between a read that found nothing and Arm.
func (p *Poller) Arm(c syscall.Conn, tok uint64, ready func()) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrPollerClosed
	}
	_, known := p.ready[tok]
	if !known {
		p.ready[tok] = ready // a socket keeps its ready func; re-arming writes nothing
	}
	p.mu.Unlock()
	// The token is known before the socket is armed, so an event that
	// fires at once finds it.
	err := control(c, func(fd int) error {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
		setToken(&ev, tok)
		op := unix.EPOLL_CTL_MOD
		if !known {
			op = unix.EPOLL_CTL_ADD
		}
		err := unix.EpollCtl(p.epfd, op, fd, &ev)
		if err == unix.EEXIST && op == unix.EPOLL_CTL_ADD {
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
		}
		if err != nil {
			return &OpError{Op: "epoll_ctl", Err: os.NewSyscallError("epoll_ctl", err)}
		}
		return nil
	})
	if err != nil && !known {
		p.Forget(tok)
	}
	return err
}

// Forget drops the token; call it when the socket is closed (the kernel
// drops a closed descriptor from the epoll set by itself).
func (p *Poller) Forget(tok uint64) {
	p.mu.Lock()
	delete(p.ready, tok)
	p.mu.Unlock()
}

// Watched returns how many sockets are known to the poller.
func (p *Poller) Watched() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// Run waits for readiness and dispatches until Close. It is meant to run on
// its own goroutine; epoll_wait blocks one OS thread, not a P.
func (p *Poller) Run() error {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("epoll_wait", err)
		}
		for i := range n {
			t := token(&events[i])
			if t == wakeToken {
				p.mu.Lock()
				closed := p.closed
				p.mu.Unlock()
				if closed {
					unix.Close(p.epfd)
					unix.Close(p.wakeFd)
					return nil
				}
				continue
			}
			p.mu.Lock()
			fn := p.ready[t]
			p.mu.Unlock()
			if fn != nil {
				go fn()
			}
		}
	}
}

// Close ends Run. Sockets are not closed.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1
	if _, err := unix.Write(p.wakeFd, one[:]); err != nil {
		return fmt.Errorf("poller wake: %w", err)
	}
	return nil
}
