package control

import (
	"strconv"
	"time"

	"github.com/tcpops/tcpops/conn"
)

// AppendEvent appends WireEvent(e) as JSON, by hand: what encoding/json
// makes of it (TestAppendEventMatchesEncodingJSON), at a fraction of the
// cost, for the NATS publisher, which encodes every closed event.
func AppendEvent(b []byte, e *conn.Event) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendStr(b, `,"event":`, e.Name())
	b = appendStr(b, `,"reason":`, string(e.Reason))
	b = append(b, `,"conid":`...)
	b = strconv.AppendUint(b, e.ConnID, 10)
	if e.Peer != 0 {
		b = append(b, `,"peer":`...)
		b = strconv.AppendUint(b, e.Peer, 10)
	}
	b = appendStr(b, `,"proto":`, string(e.Proto))
	b = appendStr(b, `,"direction":`, e.Direction.String())
	b = appendStr(b, `,"listener":`, e.Listener)
	b = appendStr(b, `,"local":`, e.Local)
	b = appendStr(b, `,"remote":`, e.Remote)
	b = appendOptStr(b, `,"via":`, e.Via)
	b = appendFloat(b, `,"duration_s":`, seconds(e.Duration))
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendUint(b, e.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendUint(b, e.BytesOut, 10)
	b = appendOptStr(b, `,"error":`, e.Error)
	if e.WSCloseCode != 0 {
		b = append(b, `,"ws_close_code":`...)
		b = strconv.AppendInt(b, int64(e.WSCloseCode), 10)
	}
	b = appendOptStr(b, `,"ws_close_reason":`, e.WSCloseReason)
	return append(b, '}')
}
