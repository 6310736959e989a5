package natsbus

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/daemon/control"
	"github.com/tcpops/tcpops/fleet"
)

// TestEventRecord: the hand-made record is fleet.EventRecord as
// encoding/json makes it, with the headers readers rely on.
func TestEventRecord(t *testing.T) {
	b := &Bus{cfg: Config{Host: "web-1"}, boot: "1764151200123"}
	b.name()
	e := conn.Event{Seq: 17, Time: time.Date(2026, 11, 26, 10, 0, 0, 123456000, time.UTC), Reason: conn.ReasonReset, ConnID: 42, Peer: 43,
		Proto: "tcp", Direction: conn.DirIn, Listener: "sip <edge>", Local: "127.0.0.1:5060", Remote: "127.0.0.1:50312", Duration: 12500 * time.Millisecond}
	it := b.eventItem(&e)
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	enc.Encode(fleet.EventRecord{Host: "web-1", Boot: "1764151200123", Event: control.WireEvent(&e)})
	if string(it.msg.Data) != string(bytes.TrimSpace(want.Bytes())) {
		t.Errorf("record\n got %s\nwant %s", it.msg.Data, want.Bytes())
	}
	if it.msg.Subject != "tcpops.events.web-1" || it.msg.Header.Get("Nats-Msg-Id") != "web-1:1764151200123:17" ||
		it.msg.Header.Get(fleet.HeaderSeq) != "17" || it.msg.Header.Get(fleet.HeaderBoot) != "1764151200123" {
		t.Errorf("message %s %v", it.msg.Subject, it.msg.Header)
	}
}
