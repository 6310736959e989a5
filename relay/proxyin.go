package relay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
)

// A listener with accept_proxy sits behind a balancer (HAProxy's
// send-proxy, send-proxy-v2, an AWS NLB, ...) that starts every connection
// with a PROXY protocol header naming the client. The header is read
// before anything else, exactly to its last byte (peeked first, so not a
// byte of the client's own is taken with it), and the connection then
// goes on as any other of its listener, with the client as its remote.

// ProxyAccept says which PROXY protocol headers a listener takes.
type ProxyAccept uint8

// The accept_proxy values.
const (
	ProxyOff ProxyAccept = iota
	ProxyV1
	ProxyV2
	ProxyAny
)

func (p ProxyAccept) String() string {
	return [...]string{"", "v1", "v2", "any"}[p]
}

// ProxyHeaderTimeout bounds the wait for a PROXY protocol header: a
// balancer sends it at once.
const ProxyHeaderTimeout = 5 * time.Second

const (
	proxyV1Max  = 107 // the longest v1 line, CRLF included
	proxyMax    = 4096
	proxyV1Sig  = "PROXY "
	proxyV2Sig  = "\r\n\r\n\x00\r\nQUIT\n"
	proxyV2Head = 16
)

// proxyHeaderLen says how long the header at the start of b is: 0 while
// more bytes are needed to tell, or an error naming what is wrong.
func proxyHeaderLen(b []byte, want ProxyAccept) (int, error) {
	switch {
	case bytes.HasPrefix(b, []byte(proxyV1Sig)):
		if want == ProxyV2 {
			return 0, errors.New("PROXY protocol v1 header, but this listener takes v2 (accept_proxy=v2)")
		}
		if i := bytes.Index(b[:min(len(b), proxyV1Max)], []byte("\r\n")); i >= 0 {
			return i + 2, nil
		}
		if len(b) >= proxyV1Max {
			return 0, fmt.Errorf("PROXY protocol v1 header without CRLF in its first %d bytes", proxyV1Max)
		}
		return 0, nil
	case bytes.HasPrefix(b, []byte(proxyV2Sig)):
		if want == ProxyV1 {
			return 0, errors.New("PROXY protocol v2 header, but this listener takes v1 (accept_proxy=v1)")
		}
		if len(b) < proxyV2Head {
			return 0, nil
		}
		n := proxyV2Head + int(binary.BigEndian.Uint16(b[14:16]))
		if n > proxyMax {
			return 0, fmt.Errorf("PROXY protocol v2 header of %d bytes (at most %d taken)", n, proxyMax)
		}
		if len(b) < n {
			return 0, nil
		}
		return n, nil
	case bytes.HasPrefix([]byte(proxyV1Sig), b), bytes.HasPrefix([]byte(proxyV2Sig), b):
		return 0, nil // a prefix of a signature: wait for more
	}
	return 0, fmt.Errorf("no PROXY protocol header: the connection starts with %q", b[:min(len(b), 16)])
}

// readProxyHeader reads the PROXY protocol header that must start tcp, and
// nothing after it, within ProxyHeaderTimeout. It returns the client it
// names: the balancer itself (via) for a LOCAL command (a health check)
// or an UNKNOWN source.
func readProxyHeader(tcp *net.TCPConn, c *conn.Conn, want ProxyAccept, via netip.AddrPort) (netip.AddrPort, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	tcp.SetReadDeadline(time.Now().Add(ProxyHeaderTimeout))
	defer tcp.SetReadDeadline(time.Time{})
	buf := make([]byte, proxyMax)
	var have, total int // bytes of the header taken, and its length once known
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			// Peeked: the client's own bytes stay in the socket.
			n, _, err := unix.Recvfrom(int(fd), buf[have:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EAGAIN || err == unix.EINTR:
				return false
			case err != nil:
				perr = os.NewSyscallError("recvfrom", err)
				return true
			case n == 0:
				perr = io.EOF
				return true
			}
			total, perr = proxyHeaderLen(buf[:have+n], want)
			if total > 0 || perr != nil {
				return true
			}
			// Too short to tell, so every byte of it belongs to the header:
			// taken, so that a FIN behind it shows.
			m, err := unix.Read(int(fd), buf[have:have+n])
			if err != nil {
				perr = os.NewSyscallError("read", err)
				return true
			}
			have += m
			c.Touch(m, 0)
		}
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		if have > 0 {
			return netip.AddrPort{}, fmt.Errorf("PROXY protocol header incomplete after %s (%d bytes: %q)", ProxyHeaderTimeout, have, buf[:min(have, 16)])
		}
		return netip.AddrPort{}, fmt.Errorf("no PROXY protocol header within %s", ProxyHeaderTimeout)
	case err != nil:
		return netip.AddrPort{}, err
	case errors.Is(perr, io.EOF) && have > 0:
		return netip.AddrPort{}, fmt.Errorf("PROXY protocol header incomplete: closed after %d bytes (%q)", have, buf[:min(have, 16)])
	case errors.Is(perr, io.EOF):
		return netip.AddrPort{}, errors.New("no PROXY protocol header: closed before one arrived")
	case perr != nil:
		return netip.AddrPort{}, perr
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(buf[:total]), total))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid PROXY protocol header %q: %s", buf[:min(total, 64)], strings.TrimPrefix(err.Error(), "proxyproto: "))
	}
	got, err := io.ReadFull(tcp, buf[have:total])
	c.Touch(got, 0)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if h.Command.IsLocal() || h.TransportProtocol == proxyproto.UNSPEC {
		return via, nil
	}
	src, _, ok := h.TCPAddrs()
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("PROXY protocol header names a %v source; want TCP over IPv4 or IPv6", h.TransportProtocol)
	}
	ap := src.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// proxyAllowed says whether the balancer at via may send a header.
func (l *Listener) proxyAllowed(via netip.AddrPort) bool {
	if len(l.ProxyFrom) == 0 {
		return true
	}
	a := via.Addr().Unmap()
	for _, p := range l.ProxyFrom {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// takeProxyHeader reads the header of an accept_proxy connection and
// makes the client it names the connection's remote; false when the
// connection was closed instead (reason error, with the text that says
// what was wrong).
func (s *Server) takeProxyHeader(tcp *net.TCPConn, c *conn.Conn, l *Listener) bool {
	via := c.RemoteAddr()
	if !l.proxyAllowed(via) {
		c.Close(conn.ReasonError, fmt.Errorf("PROXY protocol from %s refused: not in proxy_from %s", via.Addr(), prefixes(l.ProxyFrom)))
		return false
	}
	client, err := readProxyHeader(tcp, c, l.AcceptProxy, via)
	if err != nil {
		if errors.Is(err, unix.ECONNRESET) {
			c.Close(conn.ReasonReset, socketError(err))
		} else {
			c.Close(conn.ReasonError, err)
		}
		return false
	}
	if err := c.SetClient(client, via); err != nil {
		c.Close(conn.ReasonError, fmt.Errorf("client %s: %w", client.Addr(), err))
		return false
	}
	return true
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
