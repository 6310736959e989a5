package frame

import (
	"runtime"
	"testing"
)

// BenchmarkSIP cuts a stream of typical messages (OPTIONS, REGISTER, 200
// OK with SDP, CRLF keep-alives) fed in reads of several sizes: 32 KiB as
// the relay reads, 1460 bytes (one TCP segment, so most messages come in
// pieces), and one message per read.
func BenchmarkSIP(b *testing.B) {
	var stream []byte
	var msgs []string
	for len(stream) < 256<<10 {
		for _, m := range []string{options, register, ok200, "\r\n\r\n"} {
			stream = append(stream, m...)
			if m[0] != '\r' {
				msgs = append(msgs, m)
			}
		}
	}
	chunked := func(n int) [][]byte {
		var out [][]byte
		for i := 0; i < len(stream); i += n {
			out = append(out, stream[i:min(i+n, len(stream))])
		}
		return out
	}
	var perMessage [][]byte
	for _, m := range msgs {
		perMessage = append(perMessage, []byte(m))
	}
	for _, bb := range []struct {
		name  string
		reads [][]byte
	}{{"reads=32KiB", chunked(32 << 10)}, {"reads=1460B", chunked(1460)}, {"reads=message", perMessage}} {
		b.Run(bb.name, func(b *testing.B) {
			total := 0
			for _, r := range bb.reads {
				total += len(r)
			}
			b.SetBytes(int64(total))
			b.ReportAllocs()
			s := NewSIP(64 << 10)
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			n := 0
			for b.Loop() {
				for _, r := range bb.reads {
					s.Feed(r)
					for {
						m, err := s.Next()
						if err != nil {
							b.Fatal(err)
						}
						if m == nil {
							break
						}
						n++
					}
				}
			}
			runtime.ReadMemStats(&ms1)
			if n != b.N*len(msgs) {
				b.Fatalf("%d messages, want %d", n, b.N*len(msgs))
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/msg")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(n), "allocs/msg")
		})
	}
}

// BenchmarkText cuts 32 KiB reads of mostly ASCII text, each ending in
// the middle of a character that the next read completes.
func BenchmarkText(b *testing.B) {
	read := make([]byte, 32<<10)
	for i := range read {
		read[i] = 'a' + byte(i%26)
	}
	read[0], read[len(read)-1] = 0xa9, 0xc3 // é cut in two
	b.SetBytes(int64(len(read)))
	b.ReportAllocs()
	var tc Text
	tc.Cut([]byte{0xc3})
	for b.Loop() {
		if _, bin := tc.Cut(read); bin {
			b.Fatal("binary")
		}
	}
}
