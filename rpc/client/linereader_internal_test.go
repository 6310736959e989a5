package client

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// dribble returns at most a few bytes a read, as a socket may.
type dribble struct {
	r   io.Reader
	rng *rand.Rand
}

func (d *dribble) Read(p []byte) (int, error) {
	n := 1 + d.rng.IntN(7000)
	if n < len(p) {
		p = p[:n]
	}
	return d.r.Read(p)
}

func TestLineReader(t *testing.T) {
	var lines []string
	for _, n := range []int{0, 1, 100, 4095, 4096, 4097, 10000, 3 << 20, 5, 2 << 20, 70} {
		lines = append(lines, strings.Repeat(string(rune('a'+len(lines))), n)+"\n")
	}
	all := strings.Join(lines, "")
	for _, seed := range []uint64{1, 2, 3} {
		l := lineReader{rd: &dribble{strings.NewReader(all), rand.New(rand.NewPCG(seed, seed))}}
		for i, want := range lines {
			got, err := l.readLine()
			if err != nil || !bytes.Equal(got, []byte(want)) {
				t.Fatalf("seed %d, line %d: %d bytes, %v; want %d bytes", seed, i, len(got), err, len(want))
			}
		}
		if got, err := l.readLine(); err != io.EOF {
			t.Errorf("after the last line: %q, %v; want io.EOF", got, err)
		}
		if len(l.buf) > lineBufMax {
			t.Errorf("the buffer is still %d bytes", len(l.buf))
		}
	}
	l := lineReader{rd: strings.NewReader("a\nno newline at the end")}
	if got, err := l.readLine(); string(got) != "a\n" || err != nil {
		t.Errorf("got %q, %v", got, err)
	}
	if got, err := l.readLine(); err != io.EOF {
		t.Errorf("a last line without newline: %q, %v; want io.EOF", got, err)
	}
}
