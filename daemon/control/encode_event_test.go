package control

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/tcpops/tcpops/conn"
)

func TestAppendEventMatchesEncodingJSON(t *testing.T) {
	evs := []conn.Event{
		{Seq: 1, Time: time.Date(2026, 11, 26, 10, 0, 0, 123456000, time.Local), Reason: conn.ReasonEOF, ConnID: 42, Peer: 43,
			Proto: "tcp", Direction: conn.DirIn, Listener: "tcp://127.0.0.1:5060", Local: "127.0.0.1:5060", Remote: "127.0.0.1:50312",
			Duration: 12500 * time.Millisecond, BytesIn: 1200, BytesOut: 800},
		{Seq: 1 << 60, Reason: conn.ReasonError, ConnID: 7, Proto: "wss", Direction: conn.DirOut, Listener: "odd \"name\" \\ \n\t\x01 é \u2028 <&> \xff",
			Via: "10.0.0.1:33000", Error: "tls handshake: remote error: tls: bad certificate <x>", WSCloseCode: 1009, WSCloseReason: "too big",
			Duration: time.Microsecond},
		{Reason: conn.ReasonLifetime, Duration: 3 * time.Hour},
		{},
	}
	for _, e := range evs {
		got := AppendEvent(nil, &e)
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		enc.Encode(WireEvent(&e))
		if string(got) != string(bytes.TrimSpace(want.Bytes())) {
			t.Errorf("hand encoding differs:\n got %s\nwant %s", got, want.Bytes())
		}
	}
}
