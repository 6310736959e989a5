// Package sock reads and sets the kernel state of sockets: TCP keepalive,
// TCP_USER_TIMEOUT, TCP_INFO, Unix peer credentials, and the control socket
// file; and it holds plain TCP sockets as bare descriptors (FD) watched by
// an epoll set of their own (Poller).
//
// Everything here is Linux-only. Socket options work on a live connection
// (a net.TCPConn or an FD) through syscall.RawConn.Control, never keeping
// a descriptor past the call.
package sock
