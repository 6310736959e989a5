package frame

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

const (
	options = "OPTIONS sip:alice@127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKhjhs8ass877\r\n" +
		"Max-Forwards: 70\r\nTo: <sip:alice@127.0.0.1>\r\nFrom: <sip:bob@127.0.0.1>;tag=1928301774\r\n" +
		"Call-ID: a84b4c76e66710\r\nCSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	register = "REGISTER sip:127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKnashds7\r\n" +
		"To: <sip:bob@127.0.0.1>\r\nFrom: <sip:bob@127.0.0.1>;tag=456248\r\nCall-ID: 843817637684230@998sdasdh09\r\n" +
		"CSeq: 1826 REGISTER\r\nContact: <sip:bob@df7jal23ls0d.invalid;transport=ws>\r\nExpires: 7200\r\nContent-Length: 0\r\n\r\n"
	sdp = "v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

var ok200 = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK776asdhds\r\n" +
	"To: Bob <sip:bob@127.0.0.1>;tag=a6c85cf\r\nFrom: Alice <sip:alice@127.0.0.1>;tag=1928301774\r\n" +
	"Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContent-Type: application/sdp\r\n" +
	fmt.Sprintf("Content-Length: %d\r\n\r\n", len(sdp)) + sdp

// compact uses the compact form l, odd case, white space around the colon
// and a value folded onto the next line.
var compact = "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/TCP 127.0.0.1\r\ncONTENT-tYPE: text/plain\r\n" +
	"l \t:\r\n  6 \r\n\r\nhéllo"

// split feeds in the pieces and returns the messages (copied) and the error.
func split(max int, pieces ...[]byte) ([]string, error) {
	s := NewSIP(max)
	defer s.Release()
	var out []string
	for _, p := range pieces {
		s.Feed(p)
		for {
			m, err := s.Next()
			if err != nil {
				return out, err
			}
			if m == nil {
				break
			}
			out = append(out, string(m))
		}
	}
	return out, nil
}

// cuts returns in cut at the given offsets.
func cuts(in string, at ...int) [][]byte {
	var out [][]byte
	last := 0
	for _, a := range at {
		out = append(out, []byte(in[last:a]))
		last = a
	}
	return append(out, []byte(in[last:]))
}

func bytewise(in string) [][]byte {
	var out [][]byte
	for i := range len(in) {
		out = append(out, []byte{in[i]})
	}
	return out
}

func TestSIPSplit(t *testing.T) {
	utf := "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nContent-Type: text/plain;charset=utf-8\r\nContent-Length: 7\r\n\r\nGrüße" // ü, ß: 2 bytes each
	crlfBody := "NOTIFY sip:x SIP/2.0\r\nContent-Length: 4\r\n\r\n\r\n\r\n"
	lfOnly := "SIP/2.0 180 Ringing\nCSeq: 1 INVITE\nContent-Length: 2\n\nab"
	twoCL := "SIP/2.0 200 OK\r\nContent-Length: 3\r\nl: 3\r\n\r\nabc"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"one", options, []string{options}},
		{"many in one write", options + register + ok200 + options, []string{options, register, ok200, options}},
		{"keep-alives around", "\r\n\r\n" + options + "\r\n" + register + "\r\n\r\n\r\n", []string{options, register}},
		{"keep-alives only", "\r\n\r\n\r\n", nil},
		{"body with sdp", ok200, []string{ok200}},
		{"compact l folded", compact, []string{compact}},
		{"utf-8 body", utf, []string{utf}},
		{"body of CRLFs", crlfBody + options, []string{crlfBody, options}},
		{"bare LF", lfOnly + lfOnly, []string{lfOnly, lfOnly}},
		{"same Content-Length twice", twoCL, []string{twoCL}},
		{"incomplete kept back", options + register[:40], []string{options}},
		{"body incomplete", ok200[:len(ok200)-1], nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole, byte by byte, and cut at every point in two.
			got, err := split(0, []byte(tt.in))
			if err != nil || !equal(got, tt.want) {
				t.Fatalf("whole: got %q, %v; want %q", got, err, tt.want)
			}
			got, err = split(0, bytewise(tt.in)...)
			if err != nil || !equal(got, tt.want) {
				t.Fatalf("byte by byte: got %q, %v; want %q", got, err, tt.want)
			}
			for i := range len(tt.in) {
				got, err = split(0, cuts(tt.in, i)...)
				if err != nil || !equal(got, tt.want) {
					t.Fatalf("cut at %d: got %q, %v; want %q", i, got, err, tt.want)
				}
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSIPErrors(t *testing.T) {
	longHeader := "OPTIONS sip:x SIP/2.0\r\nX-Long: " + strings.Repeat("a", MaxHeader) + "\r\nContent-Length: 0\r\n\r\n"
	tests := []struct {
		name   string
		in     string
		max    int
		want   error
		text   string
		before int // messages before the error
	}{
		{"no Content-Length", options + "OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n", 0, ErrNoContentLength,
			`SIP message without Content-Length (mandatory on a stream, RFC 3261 18.3): "OPTIONS sip:x SIP/2.0"`, 1},
		{"http status line", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, ErrStartLine,
			`not a SIP request line or status line: "HTTP/1.1 200 OK"`, 0},
		{"http request line", "GET / HTTP/1.1\r\n", 0, ErrStartLine, `not a SIP request line or status line: "GET / HTTP/1.1"`, 0},
		{"garbage after a message", options + "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", 0, ErrStartLine, "", 1},
		{"status without code", "SIP/2.0 OK\r\n", 0, ErrStartLine, "", 0},
		{"request without version", "OPTIONS sip:x\r\n", 0, ErrStartLine, "", 0},
		{"leading space", " OPTIONS sip:x SIP/2.0\r\n", 0, ErrStartLine, "", 0},
		{"header section over 64 KiB", longHeader, 0, ErrHeaderTooLarge, `SIP header section over 64 KiB: "OPTIONS sip:x SIP/2.0"`, 0},
		{"start line over 64 KiB", "OPTIONS sip:" + strings.Repeat("x", MaxHeader), 0, ErrHeaderTooLarge, "", 0},
		{"message over max", ok200, 300, ErrTooLarge,
			fmt.Sprintf(`SIP message over the size limit: "SIP/2.0 200 OK" is %d bytes, the limit is 300`, len(ok200)), 0},
		{"header over max", register, 100, ErrTooLarge,
			`SIP message over the size limit: "REGISTER sip:127.0.0.1 SIP/2.0" is over 100 bytes before its header section ends`, 0},
		{"Content-Length not a number", "SIP/2.0 200 OK\r\nContent-Length: 12a\r\n\r\n", 0, ErrContentLength,
			`bad Content-Length: "Content-Length: 12a"`, 0},
		{"Content-Length empty", "SIP/2.0 200 OK\r\nl:\r\n\r\n", 0, ErrContentLength, `bad Content-Length: "l:"`, 0},
		{"Content-Length two numbers", "SIP/2.0 200 OK\r\nContent-Length: 1 2\r\n\r\n", 0, ErrContentLength, "", 0},
		{"Content-Length negative", "SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n", 0, ErrContentLength, "", 0},
		{"Content-Length huge", "SIP/2.0 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0, ErrContentLength, "", 0},
		{"Content-Length conflicting", "SIP/2.0 200 OK\r\nContent-Length: 3\r\nl: 4\r\n\r\nabcd", 0, ErrContentLength,
			`bad Content-Length: two Content-Length headers, 3 and 4, in "SIP/2.0 200 OK"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, how := range []struct {
				name   string
				pieces [][]byte
			}{{"whole", [][]byte{[]byte(tt.in)}}, {"byte by byte", bytewise(tt.in)}, {"halves", cuts(tt.in, len(tt.in)/2)}} {
				got, err := split(tt.max, how.pieces...)
				if !errors.Is(err, tt.want) || len(got) != tt.before {
					t.Fatalf("%s: got %d messages, %v; want %d, then %v", how.name, len(got), err, tt.before, tt.want)
				}
				if tt.text != "" && err.Error() != tt.text {
					t.Fatalf("%s: error %q, want %q", how.name, err, tt.text)
				}
			}
		})
	}
}

func TestSIPErrorIsFinal(t *testing.T) {
	s := NewSIP(0)
	s.Feed([]byte("HTTP/1.1 200 OK\r\n"))
	_, err := s.Next()
	if !errors.Is(err, ErrStartLine) {
		t.Fatalf("got %v, want ErrStartLine", err)
	}
	s.Feed([]byte(options))
	if m, err2 := s.Next(); m != nil || err2 != err {
		t.Fatalf("after the error: %q, %v; want the same error", m, err2)
	}
}

// TestSIPNoCopy: messages complete in what was fed are sub-slices of it;
// the splitter keeps the incomplete rest, and the caller may reuse its
// buffer at once.
func TestSIPNoCopy(t *testing.T) {
	s := NewSIP(0)
	in := []byte(options + register[:50])
	s.Feed(in)
	m, _ := s.Next()
	if &m[0] != &in[0] {
		t.Fatal("a message complete in the bytes fed was copied")
	}
	if m, _ := s.Next(); m != nil || s.Buffered() != 50 {
		t.Fatalf("got %q with %d buffered, want nothing and 50", m, s.Buffered())
	}
	copy(in, bytes.Repeat([]byte("X"), len(in))) // the caller reuses its buffer
	s.Feed([]byte(register[50:]))
	if m, _ := s.Next(); string(m) != register {
		t.Fatalf("got %q, want the REGISTER", m)
	}
	if m, _ := s.Next(); m != nil || s.Buffered() != 0 {
		t.Fatalf("got %q with %d buffered, want nothing", m, s.Buffered())
	}
}

func TestSIPLarge(t *testing.T) {
	big := "SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\nX-Big: " + strings.Repeat("b", 38000) + "\r\nContent-Length: 10\r\n\r\n0123456789"
	in := "\r\n\r\n" + big + options
	var pieces [][]byte
	for i := 0; i < len(in); i += 32 << 10 {
		pieces = append(pieces, []byte(in[i:min(i+32<<10, len(in))]))
	}
	got, err := split(64<<10, pieces...)
	if err != nil || !equal(got, []string{big, options}) {
		t.Fatalf("got %d messages, %v", len(got), err)
	}
	if _, err := split(32<<10, pieces...); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("with a 32 KiB limit: %v, want ErrTooLarge", err)
	}
}

func TestIsStartLine(t *testing.T) {
	for _, tt := range []struct {
		line string
		want bool
	}{
		{"OPTIONS sip:a@b SIP/2.0", true},
		{"INVITE sips:a@b;transport=tcp SIP/2.0", true},
		{"FOO-BAR.x! tel:+123 sip/2.0", true},
		{"SIP/2.0 200 OK", true},
		{"SIP/2.0 100 ", true},
		{"SIP/2.0 100", true},
		{"sip/2.0 486 Busy Here", true},
		{"SIP/2.0 2000 OK", false},
		{"SIP/2 200 OK", false},
		{"SIP/2.0  200 OK", false},
		{"SIP/.0 200 OK", false},
		{"OPTIONS  sip:a SIP/2.0", false},
		{"OPTIONS sip:a SIP/2.0 ", false},
		{"OPTIONS sip:a HTTP/1.1", false},
		{"OPT(ONS sip:a SIP/2.0", false},
		{"", false},
		{"SIP/", false},
	} {
		if got := isStartLine([]byte(tt.line)); got != tt.want {
			t.Errorf("isStartLine(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}
