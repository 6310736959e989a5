package frame

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzSIP checks the splitter on any stream: what it returns, with the
// keep-alives it dropped, is a prefix of the stream; each message cut
// alone is exactly one message; and cutting the stream elsewhere (at one
// point, or byte by byte) gives the same messages and the same error.
func FuzzSIP(f *testing.F) {
	for _, s := range []string{
		options, register, ok200, compact, options + register + ok200,
		"\r\n\r\n" + options + "\r\n" + register + "\r\n\r\n",
		"\r\n", "SIP/2.0 100 Trying\nl:0\n\n",
		"SIP/2.0 200 OK\r\nContent-Length: 3\r\nl: 4\r\n\r\nabcd",
		"HTTP/1.1 200 OK\r\n\r\n", "OPTIONS sip:x SIP/2.0\r\n\r\n",
		"MESSAGE sip:b SIP/2.0\r\nContent-Length:\r\n 5\r\n\r\nGr\xc3\xbc\xc3",
	} {
		f.Add([]byte(s), uint16(len(s)/2), false)
		f.Add([]byte(s), uint16(7), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint16, small bool) {
		max := 0
		if small {
			max = 300
		}
		whole, werr := split(max, in)

		// A prefix of the stream, keep-alives apart.
		pos := 0
		for i, m := range whole {
			for pos < len(in) && (in[pos] == '\r' || in[pos] == '\n') {
				pos++
			}
			if !bytes.HasPrefix(in[pos:], []byte(m)) {
				t.Fatalf("message %d is not the stream's bytes at %d", i, pos)
			}
			pos += len(m)
			if m == "" || m[0] == '\r' || m[0] == '\n' {
				t.Fatalf("message %d starts with %q", i, m[:min(len(m), 1)])
			}
			// Alone, it is one message.
			again, err := split(max, []byte(m))
			if err != nil || len(again) != 1 || again[0] != m {
				t.Fatalf("message %d cut alone gives %d messages, %v", i, len(again), err)
			}
		}

		same := func(how string, got []string, err error) {
			t.Helper()
			if !equal(got, whole) || errText(err) != errText(werr) {
				t.Fatalf("%s: %d messages, %v; whole: %d messages, %v", how, len(got), err, len(whole), werr)
			}
		}
		at := int(cut) % (len(in) + 1)
		got, err := split(max, in[:at], in[at:])
		same("cut in two", got, err)
		if len(in) <= 4<<10 {
			var pieces [][]byte
			for i := range in {
				pieces = append(pieces, in[i:i+1])
			}
			got, err = split(max, pieces...)
			same("byte by byte", got, err)
		}
	})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// FuzzText checks the UTF-8 cutter: the pieces and what is flushed at the
// end are the stream; text pieces are valid UTF-8, binary ones are not;
// at most 3 bytes wait.
func FuzzText(f *testing.F) {
	for _, s := range []string{"héllo wörld", "\xe2\x82\xac", "\xf0\x9f\x98\x80x", "\xff\xfe", "abc\xe2", "\xed\xa0\x80"} {
		f.Add([]byte(s), uint16(2))
	}
	f.Fuzz(func(t *testing.T, in []byte, step uint16) {
		n := int(step%8) + 1
		var tc Text
		var out []byte
		for i := 0; i < len(in); i += n {
			p, binary := tc.Cut(in[i:min(i+n, len(in))])
			if binary == utf8.Valid(p) {
				t.Fatalf("piece %q sent as binary=%v", p, binary)
			}
			if tc.n > 3 {
				t.Fatalf("%d bytes held", tc.n)
			}
			out = append(out, p...)
		}
		out = append(out, tc.Flush()...)
		if !bytes.Equal(out, in) {
			t.Fatalf("pieces give %q, want %q", out, in)
		}
	})
}
