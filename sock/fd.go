package sock

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FD is a nonblocking TCP socket held as a bare descriptor, without Go's
// net.Conn machinery (a netFD, two address structs, a descriptor in Go's
// netpoller and a finalizer: about 600 bytes a socket). A Poller says when
// it is readable or writable; every call here returns at once.
//
// Each call on the descriptor holds mu shared and Close holds it alone, so
// a number is never used after close(2) has given it to a new socket.
type FD struct {
	mu     sync.RWMutex
	fd     int32 // 32 bytes in all: one an idle connection's socket costs
	closed bool
}

// ErrWouldBlock says a nonblocking call found nothing to do: wait for the
// Poller.
var ErrWouldBlock = errors.New("operation would block")

// NewFD takes ownership of fd, a nonblocking stream socket.
func NewFD(fd int) *FD { return &FD{fd: int32(fd)} }

// TakeConn moves the socket of c to an FD and closes c: a duplicate of
// the descriptor (F_DUPFD_CLOEXEC; the nonblocking flag is shared) outlives
// c, and c leaves Go's netpoller.
func TakeConn(c *net.TCPConn) (*FD, error) {
	nfd := -1
	err := control(c, func(fd int) error {
		var err error
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("fcntl", err)
		}
		return nil
	})
	c.Close()
	if err != nil {
		return nil, err
	}
	return NewFD(nfd), nil
}

// Listener accepts connections of a listening TCP socket as FDs. It holds
// a duplicate of the socket's descriptor (Go's net.TCPListener does not
// let its own be waited on), in Go's netpoller: close both.
type Listener struct {
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool
	// The call Accept waits with, made once, and what it found: Accept
	// is called by one goroutine at a time.
	try    func(fd uintptr) bool
	nfd    int
	remote netip.AddrPort
	aerr   unix.Errno
}

// NewListener makes a Listener on the socket of ln.
func NewListener(ln *net.TCPListener) (*Listener, error) {
	nfd := -1
	err := control(ln, func(fd int) error {
		var err error
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		return os.NewSyscallError("fcntl", err)
	})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(nfd), "listener") // nonblocking: pollable
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	l := &Listener{f: f, rc: rc}
	l.try = func(fd uintptr) bool {
		for {
			l.nfd, l.remote, l.aerr = accept4(int(fd))
			switch l.aerr {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			return true
		}
	}
	return l, nil
}

// Accept takes one pending connection and its peer's address, waiting
// until there is one (or the Listener is closed: net.ErrClosed); one
// goroutine at a time. The
// connection has the options of the listening socket, which it inherits:
// its keepalive (ListeningKeepalive) and TCP_NODELAY (see NoDelay).
func (l *Listener) Accept() (*FD, netip.AddrPort, error) {
	l.nfd, l.aerr = -1, 0
	err := l.rc.Read(l.try)
	nfd, remote, aerr := l.nfd, l.remote, l.aerr
	switch {
	case err != nil && l.closed.Load():
		return nil, netip.AddrPort{}, net.ErrClosed
	case err != nil:
		return nil, netip.AddrPort{}, err
	case aerr != 0:
		return nil, netip.AddrPort{}, os.NewSyscallError("accept4", aerr)
	}
	return NewFD(nfd), remote, nil
}

// SetNoDelay switches Nagle's delay off (TCP_NODELAY), as Go does for its
// own TCP connections: what the relay passes on goes at once. A socket
// for listening takes it before it listens (a ListenConfig's Control):
// the kernel copies it to every connection accepted from it, which then
// needs no call of its own.
func SetNoDelay(fd uintptr) error {
	return os.NewSyscallError("setsockopt TCP_NODELAY", rawSetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
}

// NoDelay reads TCP_NODELAY of c (a listening socket: whether the
// connections accepted from it have it).
func NoDelay(c syscall.Conn) (bool, error) {
	var v int
	err := control(c, func(fd int) error {
		var err error
		v, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
		return os.NewSyscallError("getsockopt TCP_NODELAY", err)
	})
	return v != 0, err
}

// SetNoDelay is SetNoDelay on the socket.
func (f *FD) SetNoDelay() error {
	return f.do(func(fd int) error { return SetNoDelay(uintptr(fd)) })
}

// Close closes the duplicate descriptor.
func (l *Listener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}

// do runs fn on the descriptor unless it is closed.
func (f *FD) do(fn func(fd int) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return net.ErrClosed
	}
	return fn(int(f.fd))
}

// once makes one nonblocking call on the descriptor (again after EINTR):
// ErrWouldBlock for EAGAIN, op's errno for any other failure.
func (f *FD) once(op string, call func(fd int) (int, error)) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	for {
		n, err := call(int(f.fd))
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, ErrWouldBlock
		}
		return 0, os.NewSyscallError(op, err)
	}
}

// Read reads what is there: (0, nil) at EOF, ErrWouldBlock when nothing is.
func (f *FD) Read(b []byte) (int, error) {
	return f.once("read", func(fd int) (int, error) { return rawRead(fd, b) })
}

// Write writes what the socket takes now; ErrWouldBlock when it takes
// nothing.
func (f *FD) Write(b []byte) (int, error) {
	return f.once("write", func(fd int) (int, error) { return rawWrite(fd, b) })
}

// SpliceTo moves up to max bytes from the socket into the pipe whose
// write end is pw: (0, nil) at EOF, ErrWouldBlock when nothing is there.
func (f *FD) SpliceTo(pw, max int) (int, error) {
	return f.once("splice", func(fd int) (int, error) {
		return rawSplice(fd, pw, max)
	})
}

// SpliceFrom moves up to n bytes from the pipe whose read end is pr into
// the socket, as many as it takes now; ErrWouldBlock with the count moved
// when it is full.
func (f *FD) SpliceFrom(pr, n int) (int, error) {
	done := 0
	for done < n {
		m, err := f.once("splice", func(fd int) (int, error) {
			return rawSplice(pr, fd, n-done)
		})
		done += m
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// CloseWrite sends FIN (shutdown SHUT_WR).
func (f *FD) CloseWrite() error {
	return f.do(func(fd int) error {
		return os.NewSyscallError("shutdown", rawShutdown(fd, unix.SHUT_WR))
	})
}

// Close closes the socket, with an RST instead of a FIN when reset is set
// (SO_LINGER 0). Later calls return net.ErrClosed.
func (f *FD) Close(reset bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return net.ErrClosed
	}
	f.closed = true
	if reset {
		unix.SetsockoptLinger(int(f.fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	return os.NewSyscallError("close", rawClose(int(f.fd)))
}

// LocalAddr returns the socket's local address.
func (f *FD) LocalAddr() (netip.AddrPort, error) {
	var local netip.AddrPort
	err := f.do(func(fd int) error {
		var err error
		local, err = getsockname(fd)
		return err
	})
	return local, err
}

// Addrs returns the socket's local and remote addresses.
func (f *FD) Addrs() (local, remote netip.AddrPort, err error) {
	err = f.do(func(fd int) error {
		if local, err = getsockname(fd); err != nil {
			return err
		}
		remote, err = getpeername(fd)
		return err
	})
	return local, remote, err
}

func sockaddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// SyscallConn gives the socket options of this package (keepalive,
// TCP_INFO) the descriptor. Only Control is meant for it: Read and Write
// run their func once and do not wait.
func (f *FD) SyscallConn() (syscall.RawConn, error) { return rawFD{f}, nil }

type rawFD struct{ f *FD }

func (r rawFD) Control(fn func(fd uintptr)) error {
	return r.f.do(func(fd int) error { fn(uintptr(fd)); return nil })
}

func (r rawFD) Read(fn func(fd uintptr) bool) error {
	return r.f.do(func(fd int) error {
		if !fn(uintptr(fd)) {
			return ErrWouldBlock
		}
		return nil
	})
}

func (r rawFD) Write(fn func(fd uintptr) bool) error { return r.Read(fn) }

// Connect starts connecting a new nonblocking socket to addr and returns
// at once; the Poller reports the outcome as the socket's first
// writable or error event, and ConnectErr reads it.
func Connect(addr netip.AddrPort) (*FD, error) {
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	var sa unsafe.Pointer
	var salen uintptr
	family := unix.AF_INET6
	if a := addr.Addr(); a.Is4() || a.Is4In6() {
		family = unix.AF_INET
		sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Unmap().As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		p[0], p[1] = byte(addr.Port()>>8), byte(addr.Port())
		sa, salen = unsafe.Pointer(&sa4), unix.SizeofSockaddrInet4
	} else {
		sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
		p := (*[2]byte)(unsafe.Pointer(&sa6.Port))
		p[0], p[1] = byte(addr.Port()>>8), byte(addr.Port())
		sa, salen = unsafe.Pointer(&sa6), unix.SizeofSockaddrInet6
	}
	fd, err := rawSocket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	SetNoDelay(uintptr(fd))
	for {
		err = rawConnect(fd, sa, salen)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil && err != unix.EINPROGRESS {
		rawClose(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	return NewFD(fd), nil
}

// ConnectErr is the outcome of Connect once the socket is writable or
// failed: nil when connected, the errno otherwise (SO_ERROR), and
// ErrWouldBlock while it is still in progress.
func (f *FD) ConnectErr() error {
	return f.do(func(fd int) error {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return os.NewSyscallError("getsockopt", err)
		}
		if v != 0 {
			return os.NewSyscallError("connect", unix.Errno(v))
		}
		// Writable with no error may still be a connect in progress
		// only if nothing happened yet: a peer name says it is done.
		if _, e := addrCall(unix.SYS_GETPEERNAME, fd); e == unix.ENOTCONN {
			return ErrWouldBlock
		}
		return nil
	})
}

// Connected is ConnectErr for the events the Poller reported (ev): a
// socket reported writable without an error or hang-up has connected
// (a TCP socket still connecting is never writable), and no system call
// is needed to know it; anything else asks the kernel.
func (f *FD) Connected(ev uint32) error {
	if ev&unix.EPOLLOUT != 0 && ev&(unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		return nil
	}
	return f.ConnectErr()
}
