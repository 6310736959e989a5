// Package sock reads and sets the kernel state of sockets: TCP keepalive,
// TCP_USER_TIMEOUT, TCP_INFO, Unix peer credentials, and the control socket
// file; it also parks idle sockets in an epoll set of their own.
//
// Everything here is Linux-only and works on a live connection through
// syscall.RawConn.Control, never keeping a file descriptor past the call.
package sock
