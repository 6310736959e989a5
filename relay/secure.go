package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcpops/tcpops/conn"
)

// sockConn is the TCP socket under a TLS or WebSocket connection. It
// counts bytes and activity for the table at the socket (TLS records and
// WebSocket frames included), and closing it closes the table entry, so a
// connection that the HTTP server gives up on before any upgrade leaves
// the table with the reason it failed.
type sockConn struct {
	*net.TCPConn
	c      *conn.Conn
	usable atomic.Bool // handshake or upgrade done: the relay reads and decides

	// mu guards the fields below.
	mu      sync.Mutex
	why     error // what went wrong before the connection was usable
	readErr error // the first read error seen
}

func (s *sockConn) Read(b []byte) (int, error) {
	n, err := s.TCPConn.Read(b)
	if n > 0 {
		s.c.Touch(n, 0)
	}
	if err != nil {
		s.mu.Lock()
		if s.readErr == nil {
			s.readErr = err
		}
		s.mu.Unlock()
	}
	return n, err
}

func (s *sockConn) Write(b []byte) (int, error) {
	n, err := s.TCPConn.Write(b)
	if n > 0 {
		s.c.Touch(0, n)
	}
	return n, err
}

// fail records why the connection is refused before it became usable.
func (s *sockConn) fail(format string, a ...any) {
	s.mu.Lock()
	s.why = fmt.Errorf(format, a...)
	s.mu.Unlock()
}

// Close closes the socket and, before the connection became usable, its
// table entry, for the reason recorded or seen. After that the goroutine
// reading the connection sees the end and gives the reason (a WebSocket
// library closes the socket itself after a close handshake, before the
// reader has handed on the close frame).
func (s *sockConn) Close() error {
	if s.usable.Load() {
		return s.TCPConn.Close()
	}
	s.mu.Lock()
	why, rerr := s.why, s.readErr
	s.mu.Unlock()
	switch {
	case why != nil:
		s.c.Close(conn.ReasonError, why)
	case rerr != nil && !errors.Is(rerr, net.ErrClosed):
		closeFor(s.c, rerr)
	default:
		s.c.Close(conn.ReasonError, errors.New("closed before the connection was usable"))
	}
	return s.TCPConn.Close()
}

// closeSocket is the Closer of a TLS or WebSocket connection that is not
// usable yet: closing the socket ends a handshake in progress.
func closeSocket(c *conn.Conn, reset bool) error {
	tcp, ok := c.TCP().(*net.TCPConn)
	if !ok {
		return nil
	}
	if reset {
		tcp.SetLinger(0)
	}
	return tcp.Close()
}

// handshake runs the TLS handshake on an accepted socket within the
// handshake timeout. A failed one closes the connection with reason error
// and the TLS error or alert in the event (eof if the client just left).
func (s *Server) handshake(sc *sockConn, cfg *tls.Config) (*tls.Conn, bool) {
	tc := tls.Server(sc, cfg)
	timeout := s.conf.Load().HandshakeTimeout
	sc.SetDeadline(time.Now().Add(timeout))
	err := tc.Handshake()
	var ne net.Error
	switch {
	case err == nil:
		sc.SetDeadline(time.Time{})
		sc.c.SetTLS(tlsInfo(tc.ConnectionState()))
		return tc, true
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		sc.c.Close(conn.ReasonEOF, nil)
	case errors.Is(err, syscall.ECONNRESET):
		sc.c.Close(conn.ReasonReset, socketError(err))
	case errors.As(err, &ne) && ne.Timeout():
		sc.c.Close(conn.ReasonError, fmt.Errorf("tls handshake: not done within %s", timeout))
	default:
		sc.c.Close(conn.ReasonError, fmt.Errorf("tls handshake: %s", oneLine(err.Error())))
	}
	return nil, false
}

// tlsInfo is what the table shows of a TLS session.
func tlsInfo(cs tls.ConnectionState) conn.TLSInfo {
	in := conn.TLSInfo{Version: tls.VersionName(cs.Version), Cipher: tls.CipherSuiteName(cs.CipherSuite),
		SNI: cs.ServerName, ALPN: cs.NegotiatedProtocol}
	if len(cs.PeerCertificates) > 0 {
		in.PeerSubject = cs.PeerCertificates[0].Subject.String()
	}
	return in
}

// hexList matches the lists of numbers crypto/tls puts in its errors
// ("client offered: [c02b c02f ...]"): a scanner offers hundreds.
var hexList = regexp.MustCompile(`\[[0-9a-fA-F]{1,8}( [0-9a-fA-F]{1,8})*\]`)

// oneLine makes an error text fit an event: one line, lists of offered
// values counted rather than listed, at most 200 bytes.
func oneLine(s string) string {
	s = hexList.ReplaceAllStringFunc(s, func(l string) string {
		n := strings.Count(l, " ") + 1
		if n <= 4 {
			return l
		}
		return fmt.Sprintf("%d values", n)
	})
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "..."
	}
	return s
}

// serveTLS serves one tls:// connection: handshake, then relay.
func (s *Server) serveTLS(ctx context.Context, sc *sockConn, l Listener) {
	tc, ok := s.handshake(sc, l.tlsConfig)
	if !ok {
		return
	}
	in := sc.c
	sc.usable.Store(true)
	in.Established(nil, func(_ *conn.Conn, reset bool) error {
		if reset {
			sc.TCPConn.SetLinger(0)
			return sc.TCPConn.Close()
		}
		// close_notify may wait for a peer that does not read (up to
		// 5 s in crypto/tls); the table does not wait for it.
		go tc.Close()
		return nil
	}, conn.StateOK)
	s.serveLeg(ctx, &leg{c: in, r: tlsReader{tc}, w: tc, closeWrite: tc.CloseWrite}, l)
}

// tlsReader reads a TLS connection; a peer that closes the TCP connection
// without close_notify has ended it all the same.
type tlsReader struct{ tc *tls.Conn }

func (r tlsReader) Read(b []byte) (int, error) {
	n, err := r.tc.Read(b)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return n, err
}

// aeadSuites are the TLS 1.2 cipher suites offered: forward secret and
// AEAD only. crypto/tls still accepts ECDHE with AES-CBC and SHA-1 by
// default, which scanners flag. (TLS 1.3 suites are not configurable and
// all AEAD.)
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// CheckTLS loads the certificate and key a tls:// or wss:// listener would
// use (defCert and defKey: the daemon's --tls-cert and --tls-key), as the
// start does; nil for other schemes.
func CheckTLS(l Listener, defCert, defKey string) error {
	if !l.isTLS() {
		return nil
	}
	_, err := loadTLS(&l, defCert, defKey)
	return err
}

// loadTLS loads the certificate of a tls:// or wss:// listener.
func loadTLS(l *Listener, defCert, defKey string) (*tls.Config, error) {
	cert, key := l.CertFile, l.KeyFile
	if cert == "" {
		cert = defCert
	}
	if key == "" {
		key = defKey
	}
	if cert == "" || key == "" {
		return nil, fmt.Errorf("listen %s: a %s:// listener needs a certificate and key: --tls-cert and --tls-key, or ?cert=FILE&key=FILE", l.Name, l.Scheme)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("listen %s: certificate %s, key %s: %w", l.Name, cert, key, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, CipherSuites: aeadSuites}
	if l.TLSMin != 0 {
		cfg.MinVersion = l.TLSMin
	}
	if l.isWS() {
		cfg.NextProtos = []string{"http/1.1"}
	}
	return cfg, nil
}
