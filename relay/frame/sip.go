// Package frame cuts a backend's byte stream into WebSocket messages.
package frame

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
)

// MaxHeader is the largest SIP header section (start line, header fields
// and the empty line after them) that SIP accepts.
const MaxHeader = 64 << 10

// The ways a byte stream fails to be a SIP stream. SIP.Next wraps them
// with the detail of the message concerned; test with errors.Is.
var (
	ErrNoContentLength = errors.New("SIP message without Content-Length (mandatory on a stream, RFC 3261 18.3)")
	ErrStartLine       = errors.New("not a SIP request line or status line")
	ErrHeaderTooLarge  = errors.New("SIP header section over 64 KiB")
	ErrTooLarge        = errors.New("SIP message over the size limit")
	ErrContentLength   = errors.New("bad Content-Length")
)

// SIP cuts a SIP byte stream (RFC 3261 7 and 18.3) into whole messages:
// start line, header fields up to the empty line, and a body of
// Content-Length (compact form l) bytes. CR and LF bytes before a start
// line (the CRLF keep-alives of RFC 5626 3.5.1) are dropped. Nothing
// partial is ever returned: a message that is not complete yet waits in
// the splitter for the bytes that complete it.
//
// Feed the stream's bytes in order with Feed, and after each Feed call
// Next until it returns no message. A message is a sub-slice of what was
// fed, or of the splitter's own buffer when it came in pieces; it is valid
// until the next call of a method. An error is final: the splitter
// returns it from then on.
//
// The zero SIP has no limit on message size; use NewSIP for one.
type SIP struct {
	max int // largest message in bytes; 0: none

	in    []byte  // what is being cut: the bytes last fed, or buf
	off   int     // where the message being cut starts in in
	buf   *[]byte // pooled; holds a message that came in pieces
	inBuf bool    // in is *buf
	m     message
	err   error
}

// message is the parse state of the message being cut, kept across Feed
// calls so that a message arriving in pieces is scanned once. Offsets are
// from the start of the message.
type message struct {
	started  bool // a byte of a start line was seen (keep-alives are behind)
	scan     int  // where the search for the next LF goes on
	line     int  // start of the first line not processed yet
	startEnd int  // end of the start line (without CR LF)
	hdrEnd   int  // length of the header section, once its empty line came
	clen     int  // Content-Length; -1 while none was seen
	// The header field being read, when it is a Content-Length: it may
	// go on in folded lines.
	inCL   bool
	clFrom int // its start, for error texts
	clTo   int // the end of its first line
	num    number
}

// NewSIP returns a splitter that fails on a message longer than max bytes
// (max <= 0: no limit but MaxHeader for the header section).
func NewSIP(max int) *SIP { return &SIP{max: max} }

// Feed gives the splitter the next bytes of the stream. It keeps no
// reference to p after the Next call that returns no message.
func (s *SIP) Feed(p []byte) {
	if s.err != nil || len(p) == 0 {
		return
	}
	s.keep()
	if s.inBuf {
		*s.buf = append(*s.buf, p...)
		s.in = *s.buf
		return
	}
	s.in, s.off = p, 0
}

// Next returns the next whole message, or nil when the bytes fed so far
// hold no further one (then call Feed with more). Once it returns an
// error it returns that error from then on.
func (s *SIP) Next() ([]byte, error) {
	if s.err != nil {
		return nil, s.err
	}
	m := &s.m
	if !m.started {
		for s.off < len(s.in) && (s.in[s.off] == '\r' || s.in[s.off] == '\n') {
			s.off++
		}
		if s.off == len(s.in) {
			s.keep()
			return nil, nil
		}
		m.started = true
		m.clen = -1
	}
	msg := s.in[s.off:]
	if m.hdrEnd == 0 {
		if err := s.header(msg); err != nil {
			s.err = err
			s.release()
			s.in, s.off = nil, 0
			return nil, err
		}
		if m.hdrEnd == 0 {
			s.keep()
			return nil, nil
		}
	}
	n := m.hdrEnd + m.clen
	if len(msg) < n {
		s.keep()
		return nil, nil
	}
	s.off += n
	s.m = message{}
	return msg[:n:n], nil
}

// Buffered returns how many bytes of an unfinished message the splitter
// holds.
func (s *SIP) Buffered() int { return len(s.in) - s.off }

// Release gives back the splitter's buffer, dropping what it holds; the
// splitter can be fed again afterwards, from the start of a message.
func (s *SIP) Release() {
	s.release()
	s.in, s.off, s.m = nil, 0, message{}
}

// header reads the complete lines of the header section of msg that were
// not read yet, setting m.hdrEnd when the empty line that ends it is there.
func (s *SIP) header(msg []byte) error {
	m := &s.m
	for {
		i := bytes.IndexByte(msg[m.scan:], '\n')
		if i < 0 {
			m.scan = len(msg)
			return s.checkSize(msg, len(msg))
		}
		end := m.scan + i // the LF
		m.scan = end + 1
		// Sizes first, as when the LF had not come yet: the error does not
		// depend on how the stream was cut.
		if err := s.checkSize(msg, end); err != nil {
			return err
		}
		line := msg[m.line:end]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		from := m.line
		m.line = end + 1
		switch {
		case from == 0:
			m.startEnd = len(line)
			if !isStartLine(line) {
				return fmt.Errorf("%w: %q", ErrStartLine, clip(line))
			}
		case len(line) == 0:
			if err := s.endField(msg); err != nil {
				return err
			}
			if m.clen < 0 {
				return fmt.Errorf("%w: %q", ErrNoContentLength, clip(msg[:m.startEnd]))
			}
			m.hdrEnd = m.line
			if n := m.hdrEnd + m.clen; s.max > 0 && n > s.max {
				return fmt.Errorf("%w: %q is %d bytes, the limit is %d", ErrTooLarge, clip(msg[:m.startEnd]), n, s.max)
			}
			return nil
		case line[0] == ' ' || line[0] == '\t':
			// A folded line goes on with the field before it.
			if m.inCL {
				m.num.feed(line)
			}
		default:
			if err := s.endField(msg); err != nil {
				return err
			}
			if v, ok := contentLength(line); ok {
				m.inCL, m.clFrom, m.clTo = true, from, from+len(line)
				m.num = number{}
				m.num.feed(v)
			}
		}
	}
}

// checkSize fails when the header section, not ended yet, has n bytes
// before its next LF: more than a header section or a message may have.
func (s *SIP) checkSize(msg []byte, n int) error {
	m := &s.m
	what := msg
	if m.line > 0 {
		what = msg[:m.startEnd]
	}
	if s.max > 0 && n >= s.max && s.max < MaxHeader {
		return fmt.Errorf("%w: %q is over %d bytes before its header section ends", ErrTooLarge, clip(what), s.max)
	}
	if n >= MaxHeader {
		return fmt.Errorf("%w: %q", ErrHeaderTooLarge, clip(what))
	}
	return nil
}

// endField ends the header field being read: a Content-Length must have
// a number, the same in every Content-Length of a message.
func (s *SIP) endField(msg []byte) error {
	m := &s.m
	if !m.inCL {
		return nil
	}
	m.inCL = false
	if m.num.state == numNone || m.num.state == numBad {
		return fmt.Errorf("%w: %q", ErrContentLength, clip(msg[m.clFrom:m.clTo]))
	}
	if m.clen >= 0 && m.clen != m.num.v {
		return fmt.Errorf("%w: two Content-Length headers, %d and %d, in %q", ErrContentLength, m.clen, m.num.v, clip(msg[:m.startEnd]))
	}
	m.clen = m.num.v
	return nil
}

// contentLength reports whether the header field line is a Content-Length
// (or l), with its value.
func contentLength(line []byte) ([]byte, bool) {
	c := bytes.IndexByte(line, ':')
	if c < 0 {
		return nil, false
	}
	name := line[:c]
	for len(name) > 0 && (name[len(name)-1] == ' ' || name[len(name)-1] == '\t') {
		name = name[:len(name)-1]
	}
	switch len(name) {
	case 1:
		if name[0]|0x20 != 'l' {
			return nil, false
		}
	case len("content-length"):
		if !foldEqual(name, "content-length") {
			return nil, false
		}
	default:
		return nil, false
	}
	return line[c+1:], true
}

// foldEqual compares b to the lower-case ASCII s, ignoring case.
func foldEqual(b []byte, s string) bool {
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// number reads a Content-Length value: digits with white space around,
// possibly over folded lines.
type number struct {
	v     int
	state uint8
}

const (
	numNone   uint8 = iota // no digit yet
	numDigits              // in the digits
	numAfter               // white space after the digits
	numBad                 // anything else, or too big
)

// maxContentLength keeps a Content-Length far from overflowing an int;
// a message limit is far below it.
const maxContentLength = 1 << 30

func (n *number) feed(b []byte) {
	for _, c := range b {
		switch {
		case n.state == numBad:
			return
		case c == ' ' || c == '\t':
			if n.state == numDigits {
				n.state = numAfter
			}
		case '0' <= c && c <= '9' && n.state <= numDigits:
			n.state = numDigits
			n.v = n.v*10 + int(c-'0')
			if n.v > maxContentLength {
				n.state = numBad
			}
		default:
			n.state = numBad
		}
	}
}

// isStartLine reports whether line is a SIP request line (Method SP
// Request-URI SP SIP-Version) or status line (SIP-Version SP Status-Code
// SP Reason-Phrase), RFC 3261 7.1 and 7.2.
func isStartLine(line []byte) bool {
	if isVersion(line[:min(len(line), 4)], true) {
		// SIP/2.0 200 OK
		sp := bytes.IndexByte(line, ' ')
		if sp < 0 || !isVersion(line[:sp], false) {
			return false
		}
		code := line[sp+1:]
		if len(code) < 3 || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) {
			return false
		}
		return len(code) == 3 || code[3] == ' '
	}
	// OPTIONS sip:x SIP/2.0
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return false
	}
	for _, c := range line[:sp] {
		if !isToken(c) {
			return false
		}
	}
	rest := line[sp+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return false
	}
	for _, c := range rest[:sp2] {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return isVersion(rest[sp2+1:], false)
}

// isVersion reports whether b is SIP/DIGITS.DIGITS ("SIP/" is not case
// sensitive), or with prefix only whether it starts so.
func isVersion(b []byte, prefix bool) bool {
	if len(b) < 4 || !foldEqual(b[:4], "sip/") {
		return false
	}
	if prefix {
		return true
	}
	v := b[4:]
	dot := bytes.IndexByte(v, '.')
	if dot <= 0 || dot == len(v)-1 {
		return false
	}
	for i, c := range v {
		if i != dot && !isDigit(c) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isToken reports whether c may be in a token (RFC 3261 25.1).
func isToken(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', isDigit(c):
		return true
	}
	return bytes.IndexByte([]byte("-.!%*_+`'~"), c) >= 0
}

// clip shortens a line for an error text.
func clip(b []byte) []byte {
	const n = 64
	if len(b) > n {
		return b[:n]
	}
	return b
}

// keep holds the bytes of the unfinished message in the splitter's own
// buffer, so that the caller may reuse what it fed.
func (s *SIP) keep() {
	rest := s.in[s.off:]
	switch {
	case len(rest) == 0:
		s.release()
		s.in, s.off = nil, 0
	case s.inBuf:
		if s.off > 0 {
			n := copy(*s.buf, rest)
			*s.buf = (*s.buf)[:n]
			s.in, s.off = *s.buf, 0
		}
	default:
		s.buf = bufPool.Get().(*[]byte)
		*s.buf = append((*s.buf)[:0], rest...)
		s.in, s.off, s.inBuf = *s.buf, 0, true
	}
}

func (s *SIP) release() {
	if s.buf == nil {
		return
	}
	if cap(*s.buf) <= maxPooled {
		*s.buf = (*s.buf)[:0]
		bufPool.Put(s.buf)
	}
	s.buf, s.inBuf = nil, false
}

// Buffers for messages that came in pieces are shared: a connection holds
// one only while such a message is incomplete. Larger ones are left to the
// garbage collector.
const maxPooled = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
