package sock

import (
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The address calls of the per-connection path, made directly: the
// wrappers of golang.org/x/sys/unix ask the kernel for the socket's
// protocol (getsockopt SO_PROTOCOL) on every AF_INET address they decode,
// one more system call each, and allocate the address they return.

// rawAddrPort decodes an AF_INET or AF_INET6 address (IPv4-mapped
// addresses unmapped); invalid for anything else.
func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// addrCall runs getsockname or getpeername (trap) on fd.
func addrCall(trap uintptr, fd int) (netip.AddrPort, unix.Errno) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return netip.AddrPort{}, e
	}
	return rawAddrPort(&rsa), 0
}

func getsockname(fd int) (netip.AddrPort, error) {
	a, e := addrCall(unix.SYS_GETSOCKNAME, fd)
	if e != 0 {
		return a, os.NewSyscallError("getsockname", e)
	}
	return a, nil
}

func getpeername(fd int) (netip.AddrPort, error) {
	a, e := addrCall(unix.SYS_GETPEERNAME, fd)
	if e != 0 {
		return a, os.NewSyscallError("getpeername", e)
	}
	return a, nil
}

// accept4 takes a connection from the listening socket fd, nonblocking
// and close-on-exec, with its peer's address.
func accept4(fd int) (int, netip.AddrPort, unix.Errno) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), rawAddrPort(&rsa), 0
}
