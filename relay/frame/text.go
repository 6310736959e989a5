package frame

import "unicode/utf8"

// Text cuts a byte stream into pieces for text messages that never split a
// UTF-8 sequence: a sequence cut by the end of what was read (at most 3
// bytes) is held back and sent with the next read.
//
// A piece that is not valid UTF-8 even so (bytes that no further byte can
// make valid) goes whole as one binary message: text messages carry only
// valid UTF-8 (RFC 6455 8.1), and the bytes reach the client unchanged.
// The cut is per read, so the stream's later reads go as text again once
// they are valid.
type Text struct {
	held [utf8.UTFMax - 1]byte
	n    int     // bytes in held
	buf  *[]byte // pooled; held bytes and the read after them
}

// Cut returns what to send for the next bytes p of the stream, and whether
// it goes as a binary message. The piece is p or the cutter's own buffer;
// it is valid until the next call, and empty when p only continues a
// sequence that is still incomplete.
func (t *Text) Cut(p []byte) (piece []byte, binary bool) {
	t.release()
	data := p
	if t.n > 0 {
		t.buf = bufPool.Get().(*[]byte)
		*t.buf = append(append((*t.buf)[:0], t.held[:t.n]...), p...)
		data = *t.buf
	}
	k := incomplete(data)
	t.n = copy(t.held[:], data[len(data)-k:])
	piece = data[:len(data)-k]
	return piece, !utf8.Valid(piece)
}

// Flush returns the bytes held back at the end of the stream: an
// incomplete sequence, which is not UTF-8 and goes as a binary message.
func (t *Text) Flush() []byte {
	t.release()
	b := t.held[:t.n]
	t.n = 0
	return b
}

func (t *Text) release() {
	if t.buf != nil {
		if cap(*t.buf) <= maxPooled {
			bufPool.Put(t.buf)
		}
		t.buf = nil
	}
}

// incomplete returns the length of the UTF-8 sequence that b ends in the
// middle of: 1 to 3 bytes that more bytes can make a valid character, or 0.
func incomplete(b []byte) int {
	for k := 1; k <= min(len(b), utf8.UTFMax-1); k++ {
		c := b[len(b)-k]
		if c < 0x80 {
			return 0 // ASCII: complete
		}
		if c >= 0xC0 {
			// A lead byte: the sequence is incomplete when it wants
			// more than the k bytes there, and what is there can
			// begin a valid character.
			if seqLen(c) > k && validPrefix(b[len(b)-k:]) {
				return k
			}
			return 0
		}
		// A continuation byte: look further back.
	}
	return 0
}

// seqLen is the length of the sequence a lead byte starts (0: not a lead).
func seqLen(c byte) int {
	switch {
	case c >= 0xC2 && c <= 0xDF:
		return 2
	case c >= 0xE0 && c <= 0xEF:
		return 3
	case c >= 0xF0 && c <= 0xF4:
		return 4
	}
	return 0
}

// validPrefix reports whether b (a lead byte and fewer continuation bytes
// than it wants) begins some valid encoding: the second byte's range
// depends on the lead (RFC 3629 4: no overlong forms, no surrogates, not
// above U+10FFFF).
func validPrefix(b []byte) bool {
	if len(b) < 2 {
		return true
	}
	lo, hi := byte(0x80), byte(0xBF)
	switch b[0] {
	case 0xE0:
		lo = 0xA0
	case 0xED:
		hi = 0x9F
	case 0xF0:
		lo = 0x90
	case 0xF4:
		hi = 0x8F
	}
	if b[1] < lo || b[1] > hi {
		return false
	}
	for _, c := range b[2:] {
		if c < 0x80 || c > 0xBF {
			return false
		}
	}
	return true
}
