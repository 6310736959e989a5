package rpc

import (
	"encoding/json"
	"testing"
	"time"
)

// TestWireJSON pins the JSON of a Conn and an Event, field names and order,
// as SPEC.md shows them to scripts and log shippers.
func TestWireJSON(t *testing.T) {
	id := Identity{ConnID: 42, Peer: 43, Proto: "tcp", Direction: "in", Listener: "tcp://127.0.0.1:5060",
		Local: "127.0.0.1:5060", Remote: "127.0.0.1:50312"}
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"conn", Conn{Identity: id, State: 1, StateName: "ok", Created: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC),
			IdleS: 1.2, LifetimeS: 120, ExpiresInS: 118.8, Keepalive: &Keepalive{Enabled: true, IdleS: 60, Count: 5, IntervalS: 5},
			ClosedEvent: true, BytesIn: 1200, BytesOut: 800},
			`{"conid":42,"peer":43,"proto":"tcp","direction":"in","listener":"tcp://127.0.0.1:5060",` +
				`"local":"127.0.0.1:5060","remote":"127.0.0.1:50312","state":1,"state_name":"ok",` +
				`"created":"2026-11-26T10:00:00Z","idle_s":1.2,"lifetime_s":120,"expires_in_s":118.8,` +
				`"keepalive":{"enabled":true,"idle_s":60,"count":5,"interval_s":5,"user_timeout_ms":0},` +
				`"closed_event":true,"bytes_in":1200,"bytes_out":800}`},
		{"event", Event{Seq: 17, Time: time.Date(2026, 11, 26, 10, 0, 0, 123456000, time.UTC), Event: "tcp:closed",
			Reason: "eof", Identity: id, DurationS: 12.5, BytesIn: 1200, BytesOut: 800},
			`{"seq":17,"time":"2026-11-26T10:00:00.123456Z","event":"tcp:closed","reason":"eof",` +
				`"conid":42,"peer":43,"proto":"tcp","direction":"in","listener":"tcp://127.0.0.1:5060",` +
				`"local":"127.0.0.1:5060","remote":"127.0.0.1:50312","duration_s":12.5,"bytes_in":1200,"bytes_out":800}`},
		{"event of a websocket", Event{Seq: 1, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Event: "tcp:closed", Reason: "error",
			Identity: Identity{ConnID: 7, Proto: "ws", Direction: "in"}, Error: "x", WSCloseCode: 1009, WSCloseReason: "too big"},
			`{"seq":1,"time":"2026-01-02T03:04:05Z","event":"tcp:closed","reason":"error","conid":7,"proto":"ws",` +
				`"direction":"in","listener":"","local":"","remote":"","duration_s":0,"bytes_in":0,"bytes_out":0,` +
				`"error":"x","ws_close_code":1009,"ws_close_reason":"too big"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
