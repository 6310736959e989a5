package cli

import (
	"bytes"
	"fmt"
	"testing"
)

// TestPlainTableAsTablewriter: the fast layout is tablewriter's, byte for byte.
func TestPlainTableAsTablewriter(t *testing.T) {
	list := []string{"CONID", "PEER", "PROTO", "DIR", "STATE", "REMOTE", "LOCAL", "IDLE", "EXPIRES", "KEEPALIVE", "IN", "OUT"}
	var many [][]string
	for i := range 300 {
		many = append(many, []string{fmt.Sprint(i * 37), "-", "tcp", "in", "ok", fmt.Sprintf("10.0.%d.%d:%d", i%7, i, 40000+i), "127.0.0.1:5060", "1.5s", "never", "7200/9/75", "0B", fmt.Sprintf("%dKiB", i)})
	}
	tests := []struct {
		name   string
		header []string
		rows   [][]string
	}{
		{"list", list, many},
		{"header only", list, nil},
		{"key values", nil, [][]string{{"connections", "3"}, {"by state", "ok=3"}, {"limits", "max-conns none, event-buffer 65536"}}},
		{"empty cells", []string{"HOST", "", ""}, [][]string{{"a", "connections", "3"}, {"b", "", "x"}, {"", "", ""}}},
		{"one column", []string{"X"}, [][]string{{"a"}, {"bbbb"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want bytes.Buffer
			if err := tableWriter(&want, tt.header, tt.rows); err != nil {
				t.Fatal(err)
			}
			got, ok := plainTable(tt.header, tt.rows)
			if !ok {
				t.Fatal("plainTable declined ASCII cells")
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Errorf("got:\n%q\nwant (tablewriter):\n%q", got, want.Bytes())
			}
		})
	}
	if _, ok := plainTable([]string{"NAME"}, [][]string{{"café"}}); ok {
		t.Error("plainTable took a non-ASCII cell")
	}
}
