package cli_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tcpops/tcpops/daemon/daemontest"
)

// TestJSONOneStyle: with -o json every command prints each object as one
// line of compact JSON, and with --pretty the same objects indented.
func TestJSONOneStyle(t *testing.T) {
	d := daemontest.Start(t)
	tc, id := d.Dial(t, 0)
	tc.Write([]byte("x"))
	tc.Read(make([]byte, 1))
	_, id2 := d.Dial(t, 0)
	ids, ids2 := fmt.Sprint(id), fmt.Sprint(id2)
	commands := [][]string{
		{"list"}, {"info", ids}, {"alive", ids}, {"state", ids}, {"keepalive", "enable", ids, "60", "5", "5"},
		{"keepalive", "disable", ids}, {"lifetime", ids, "10m"}, {"lifetime", "10m", "--all", "--dry-run"}, {"closed-event", ids}, {"stats"},
		{"call", "tcpops.state", "conid=" + ids}, {"methods"}, {"version"}, {"wait", "ready"}, {"wait", "count", "--eq", "2"},
		{"close", ids2}, {"wait", "closed", ids2}, {"events"},
	}
	for _, args := range commands {
		code, out, errOut := run(t, append([]string{"-s", d.Socket, "-o", "json"}, args...)...)
		if code != 0 || out == "" {
			t.Errorf("-o json %v: exit %d, %q, %q", args, code, out, errOut)
			continue
		}
		var values []any
		for line := range strings.Lines(out) {
			line = strings.TrimSuffix(line, "\n")
			var compact bytes.Buffer
			if err := json.Compact(&compact, []byte(line)); err != nil || compact.String() != line || !strings.HasPrefix(line, "{") && !strings.HasPrefix(line, "[") {
				t.Errorf("-o json %v: line %q is not one compact JSON object (%v)", args, line, err)
			}
			var v any
			json.Unmarshal([]byte(line), &v)
			values = append(values, v)
		}
		if args[0] == "close" || args[0] == "wait" && args[1] == "closed" {
			continue // not to be run twice
		}
		code, pretty, _ := run(t, append([]string{"-s", d.Socket, "--pretty"}, args...)...)
		dec := json.NewDecoder(strings.NewReader(pretty))
		var again []any
		for dec.More() {
			var v any
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("--pretty %v: %v in %q", args, err, pretty)
			}
			again = append(again, v)
		}
		if code != 0 || !strings.Contains(pretty, "\n  ") {
			t.Errorf("--pretty %v: exit %d, %q; want indented JSON", args, code, pretty)
		}
		if len(again) != len(values) || args[0] != "stats" && args[0] != "info" && args[0] != "list" && !slices.Contains(args, "--dry-run") && !reflect.DeepEqual(again, values) {
			t.Errorf("--pretty %v: %v, want the objects of -o json %v", args, again, values)
		}
	}
	if code, _, errOut := run(t, "-s", d.Socket, "-o", "table", "--pretty", "list"); code != 2 || !strings.Contains(errOut, "--pretty indents JSON") {
		t.Errorf("-o table --pretty: exit %d, %q; want a usage error", code, errOut)
	}
}
