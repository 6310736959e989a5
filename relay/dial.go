package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

// A backend given by address is connected without a goroutine: the
// socket connects in the background and its first event in the Poller
// says how it went. Backends given by host name are resolved and dialled
// on the dialling goroutines (Server.dial).

// dialing is an outbound plain TCP leg being connected.
type dialing struct {
	in    *fdLeg
	l     *Listener
	timer *time.Timer
}

// dialFD starts connecting the backend of in.
func (s *Server) dialFD(in *fdLeg, l *Listener, addr netip.AddrPort) {
	fd, cerr := sock.Connect(addr)
	lg := &fdLeg{fd: fd, s: s}
	spec := conn.Spec{Remote: addr}
	if fd != nil {
		spec.Close = lg.close
	}
	out, ok := s.tableOut(in.c, *l, spec)
	if !ok {
		return
	}
	lg.c = out
	if cerr != nil {
		err := fmt.Errorf("dial %s: %w", l.Backend, cerr)
		s.backends.failed(s.log, l, err)
		out.Close(conn.ReasonError, err)
		return
	}
	timeout := s.conf.Load().DialTimeout
	d := &dialing{in: in, l: l}
	// The timer exists before d is visible to close, and starts counting
	// once it is: firing earlier would find nothing to time out.
	d.timer = time.AfterFunc(time.Hour, func() {
		// A leg closed before d was visible to its closer (the client went
		// at that moment) is no backend's failure.
		if lg.dialing.CompareAndSwap(d, nil) && !out.Closing() {
			err := fmt.Errorf("dial %s: no answer within %s", l.Backend, timeout)
			s.backends.failed(s.log, l, err)
			out.Close(conn.ReasonError, err)
		}
	})
	lg.dialing.Store(d)
	if out.Closing() {
		// Closed meanwhile, before its closer could see d: nothing to wait
		// for.
		if lg.dialing.CompareAndSwap(d, nil) {
			d.timer.Stop()
		}
		return
	}
	d.timer.Reset(timeout)
	if !s.watch(lg) && lg.dialing.CompareAndSwap(d, nil) {
		d.timer.Stop()
	}
}

// connected runs on the Poller when a connecting leg has an event.
func (l *fdLeg) connected(d *dialing, ev uint32) {
	err := l.fd.Connected(ev)
	if err == sock.ErrWouldBlock || !l.dialing.CompareAndSwap(d, nil) {
		return
	}
	d.timer.Stop()
	out := l.c
	if err != nil {
		err = fmt.Errorf("dial %s: %w", d.l.Backend, err)
		l.s.backends.failed(l.s.log, d.l, err)
		out.Close(conn.ReasonError, err)
		return
	}
	if !l.s.establish(out, l.fd, nil, *d.l) {
		return
	}
	if d.l.ProxyProtocol != 0 {
		if err := writeProxyHeader(d.in.c, out, d.l.ProxyProtocol, l.fd); err != nil {
			l.s.backends.failed(l.s.log, d.l, err)
			closeFor(out, err)
			return
		}
	}
	l.s.startFD(d.in, l, ev)
}

// writeProxyHeader sends the PROXY protocol header naming in's client and
// the address it connected to, to out, a freshly connected backend, before
// any byte of the client's. A fresh socket takes it at once: a short write
// is an error, as a socket that would block (sock.FD) is.
func writeProxyHeader(in, out *conn.Conn, version byte, w io.Writer) error {
	local, remote := in.Addrs()
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(remote), net.TCPAddrFromAddrPort(local))
	b, err := h.Format()
	if err != nil {
		return fmt.Errorf("proxy protocol header: %w", err)
	}
	n, err := w.Write(b)
	out.Touch(0, n)
	switch {
	case errors.Is(err, sock.ErrWouldBlock) || (err == nil && n < len(b)):
		return fmt.Errorf("proxy protocol header: backend took %d of %d bytes", n, len(b))
	case err != nil:
		return fmt.Errorf("proxy protocol header: %w", err)
	}
	return nil
}
