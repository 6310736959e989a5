package control

import (
	"slices"
	"testing"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
)

// TestVocabularyMatchesConn keeps the wire's names of states and reasons,
// which the CLI uses without linking the table, equal to the table's own.
func TestVocabularyMatchesConn(t *testing.T) {
	if got, want := rpc.StateNames(), conn.StateNames(); !slices.Equal(got, want) {
		t.Errorf("StateNames() = %v, want %v", got, want)
	}
	var reasons []string
	for _, r := range conn.Reasons {
		reasons = append(reasons, string(r))
		if got, want := rpc.EventName(string(r)), r.Event(); got != want {
			t.Errorf("EventName(%q) = %q, want %q", r, got, want)
		}
	}
	if got := rpc.Reasons(); !slices.Equal(got, reasons) {
		t.Errorf("Reasons() = %v, want %v", got, reasons)
	}
}
