package cli

import (
	"io"
	"slices"
	"testing"
	"time"

	"github.com/tcpops/tcpops/daemon/daemontest"
)

func TestSplitWords(t *testing.T) {
	tests := []struct {
		line string
		want []string
		err  bool
	}{
		{line: "list", want: []string{"list"}},
		{line: "  keepalive  enable 42 60 5 5 ", want: []string{"keepalive", "enable", "42", "60", "5", "5"}},
		{line: `call tcpops.keepalive '{"conid": 42, "idle": 60}'`, want: []string{"call", "tcpops.keepalive", `{"conid": 42, "idle": 60}`}},
		{line: `call x "a \"b\" c" d\ e`, want: []string{"call", "x", `a "b" c`, "d e"}},
		{line: `list --listener ''`, want: []string{"list", "--listener", ""}},
		{line: `call x 'open`, err: true},
		{line: "   ", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, err := splitWords(tt.line)
			if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
				t.Errorf("got %q, %v; want %q (error %v)", got, err, tt.want, tt.err)
			}
		})
	}
}

// TestShellComplete asks the shell's completion what Tab offers: the same
// answers bash gets from the command tree, over the shell's one
// connection.
func TestShellComplete(t *testing.T) {
	d := daemontest.Start(t)
	for range 3 {
		d.Dial(t, 0)
	}
	s := &shell{o: &Options{Socket: d.Socket, Output: "table", Timeout: 5 * time.Second, Stdout: io.Discard, Stderr: io.Discard}, keep: &keeper{}}
	defer s.keep.close()
	tests := []struct {
		line, head string
		want       []string
	}{
		{line: "inf", head: "", want: []string{"info "}},
		{line: "info ", head: "info ", want: []string{"1 ", "2 ", "3 "}},
		{line: "keepalive enable 2", head: "keepalive enable ", want: []string{"2 "}},
		{line: "keepalive dis", head: "keepalive ", want: []string{"disable "}},
		{line: "list --sta", head: "list ", want: []string{"--state "}},
		{line: "list --state acc", head: "list --state ", want: []string{"accepting "}},
		{line: "top --sort r", head: "top --sort ", want: []string{"rate "}},
		{line: "lifetime 1 ", head: "lifetime 1 ", want: nil},
		{line: "-o js", head: "-o ", want: []string{"json "}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			head, got, tail := s.complete(tt.line+"X", len([]rune(tt.line)))
			if head != tt.head || !slices.Equal(got, tt.want) || tail != "X" {
				t.Errorf("got %q %q %q, want %q %q %q", head, got, tail, tt.head, tt.want, "X")
			}
		})
	}
	if n := d.RPC.Clients(); n != 1 {
		t.Errorf("%d control clients after completing, want the shell's one", n)
	}
}
