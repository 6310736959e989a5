package frame

import (
	"fmt"
	"testing"
)

func TestTextCut(t *testing.T) {
	type piece struct {
		s      string
		binary bool
	}
	tests := []struct {
		name  string
		reads []string
		want  []piece
		flush string
	}{
		{"ascii", []string{"abc", "def"}, []piece{{"abc", false}, {"def", false}}, ""},
		{"2-byte cut", []string{"gr\xc3", "\xbc\xc3\x9fe"}, []piece{{"gr", false}, {"üße", false}}, ""},
		{"3-byte cut after 1", []string{"x\xe2", "\x82\xacy"}, []piece{{"x", false}, {"€y", false}}, ""},
		{"3-byte cut after 2", []string{"x\xe2\x82", "\xacy"}, []piece{{"x", false}, {"€y", false}}, ""},
		{"4-byte cut after 3", []string{"\xf0\x9f\x98", "\x80"}, []piece{{"", false}, {"😀", false}}, ""},
		{"4-byte over three reads", []string{"a\xf0", "\x9f", "\x98\x80b"}, []piece{{"a", false}, {"", false}, {"😀b", false}}, ""},
		{"only a lead byte", []string{"\xe2"}, []piece{{"", false}}, "\xe2"},
		{"stream ends in a cut", []string{"ok\xc3"}, []piece{{"ok", false}}, "\xc3"},
		{"invalid byte goes binary", []string{"a\xffb", "ok"}, []piece{{"a\xffb", true}, {"ok", false}}, ""},
		{"stray continuation", []string{"\x80abc"}, []piece{{"\x80abc", true}}, ""},
		{"overlong lead", []string{"\xc0\xaf"}, []piece{{"\xc0\xaf", true}}, ""},
		{"surrogate is not held", []string{"a\xed\xa0"}, []piece{{"a\xed\xa0", true}}, ""},
		{"above U+10FFFF is not held", []string{"a\xf4\x90"}, []piece{{"a\xf4\x90", true}}, ""},
		{"E0 overlong is not held", []string{"a\xe0\x80"}, []piece{{"a\xe0\x80", true}}, ""},
		{"binary read, then a char cut", []string{"\xff\xc3", "\xa9t\xc3\xa9"}, []piece{{"\xff", true}, {"été", false}}, ""},
		{"cut not completed", []string{"a\xe2\x82", "bc"}, []piece{{"a", false}, {"\xe2\x82bc", true}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tc Text
			var got []piece
			for _, r := range tt.reads {
				p, bin := tc.Cut([]byte(r))
				got = append(got, piece{string(p), bin})
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %+q, want %+q", fmt.Sprint(got), fmt.Sprint(tt.want))
			}
			if f := string(tc.Flush()); f != tt.flush {
				t.Fatalf("flush %q, want %q", f, tt.flush)
			}
		})
	}
}

// TestTextNoCopy: a read that completes no held sequence is sent as it is.
func TestTextNoCopy(t *testing.T) {
	var tc Text
	in := []byte("abc\xe2")
	p, _ := tc.Cut(in)
	if &p[0] != &in[0] || len(p) != 3 {
		t.Fatalf("piece %q was copied or cut wrong", p)
	}
}
