package control

import (
	"encoding/json"
	"math"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/sock"
)

// rawJSON is a result already encoded; the server writes it as it is.
type rawJSON []byte

// appendList encodes a list result by hand, straight from the table's
// snapshots. A list of 10,000 connections is the largest answer the daemon
// gives, and reflection-based encoding of wire structs was most of its
// cost; TestAppendListMatchesEncodingJSON keeps the output identical to
// encoding/json of ListResult.
func appendList(b []byte, infos []conn.Info, next uint64) []byte {
	return appendPage(b, infos, next, -1)
}

// appendPage is appendList with the number of matches (total < 0: none).
func appendPage(b []byte, infos []conn.Info, next uint64, total int) []byte {
	b = append(b, `{"connections":[`...)
	for i := range infos {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendConn(b, &infos[i])
	}
	b = append(b, ']')
	if next != 0 {
		b = append(b, `,"next":`...)
		b = strconv.AppendUint(b, next, 10)
	}
	if total >= 0 {
		b = append(b, `,"total":`...)
		b = strconv.AppendInt(b, int64(total), 10)
	}
	return append(b, '}')
}

// appendConn writes wireConn(*in) as JSON. It reads the snapshot rather
// than the wire Conn: converting first costs the two address strings of
// every connection, 20,000 allocations for a list of 10,000, and made the
// encoding about half again as slow.
func appendConn(b []byte, in *conn.Info) []byte {
	b = append(b, `{"conid":`...)
	b = strconv.AppendUint(b, in.ID, 10)
	if in.Peer != 0 {
		b = append(b, `,"peer":`...)
		b = strconv.AppendUint(b, in.Peer, 10)
	}
	b = appendStr(b, `,"proto":`, string(in.Proto))
	b = appendStr(b, `,"direction":`, in.Direction.String())
	b = appendStr(b, `,"listener":`, in.Listener)
	b = appendAddr(b, `,"local":`, in.Local)
	b = appendAddr(b, `,"remote":`, in.Remote)
	if in.Via.IsValid() {
		b = appendAddr(b, `,"via":`, in.Via)
	}
	b = append(b, `,"state":`...)
	b = strconv.AppendInt(b, int64(in.State), 10)
	b = appendStr(b, `,"state_name":`, in.State.String())
	b = append(b, `,"created":"`...)
	b = in.Created.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendFloat(b, `,"idle_s":`, seconds(in.Idle))
	b = appendFloat(b, `,"lifetime_s":`, seconds(in.Lifetime))
	b = appendFloat(b, `,"expires_in_s":`, seconds(in.ExpiresIn))
	if k := in.Keepalive; k != nil {
		b = appendKeepalive(b, k)
	}
	b = append(b, `,"closed_event":`...)
	b = strconv.AppendBool(b, in.ClosedEvent)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendUint(b, in.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendUint(b, in.BytesOut, 10)
	if t := in.TLS; t != nil {
		b = appendStr(b, `,"tls":{"version":`, t.Version)
		b = appendStr(b, `,"cipher":`, t.Cipher)
		b = appendOptStr(b, `,"sni":`, t.SNI)
		b = appendOptStr(b, `,"alpn":`, t.ALPN)
		b = appendOptStr(b, `,"peer_subject":`, t.PeerSubject)
		b = append(b, '}')
	}
	if w := in.WS; w != nil {
		b = appendStr(b, `,"ws":{"path":`, w.Path)
		b = appendOptStr(b, `,"subprotocol":`, w.Subprotocol)
		b = appendOptStr(b, `,"origin":`, w.Origin)
		b = append(b, '}')
	}
	if len(in.Overrides) > 0 {
		b = appendOverrides(b, in.Overrides)
	}
	if dr := in.Draining; dr != nil {
		b = appendDraining(b, dr)
	}
	return appendInspection(b, in)
}

// appendInspection writes what a view asked for: rate, suspect rules and
// TCP_INFO. These are few (one page), so TCP_INFO goes through
// encoding/json.
func appendInspection(b []byte, in *conn.Info) []byte {
	if in.Rated {
		b = appendFloat(b, `,"bytes_per_s":`, math.Round(in.Rate))
	}
	if len(in.Suspect) > 0 {
		b = append(b, `,"suspect":[`...)
		for i, s := range in.Suspect {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendStr(b, "", string(s))
		}
		b = append(b, ']')
	}
	if in.TCPInfo != nil {
		b = append(b, `,"tcp_info":`...)
		j, _ := json.Marshal((*rpc.TCPInfo)(in.TCPInfo))
		b = append(b, j...)
	}
	return append(b, '}')
}

func appendOverrides(b []byte, ovs []conn.Override) []byte {
	b = append(b, `,"overrides":[`...)
	for i, o := range ovs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStr(b, `{"what":`, o.What.String())
		b = append(b, `,"until":"`...)
		b = o.Until.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `"}`...)
	}
	return append(b, ']')
}

// appendOptStr is appendStr for a field left out when empty (omitempty).
func appendOptStr(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendStr(b, key, s)
}

func appendAddr(b []byte, key string, a netip.AddrPort) []byte {
	b = append(b, key...)
	b = append(b, '"')
	if a.IsValid() {
		b = a.AppendTo(b)
	}
	return append(b, '"')
}

func appendKeepalive(b []byte, k *sock.Keepalive) []byte {
	b = append(b, `,"keepalive":{"enabled":`...)
	b = strconv.AppendBool(b, k.Enabled)
	b = append(b, `,"idle_s":`...)
	b = strconv.AppendInt(b, int64(k.Idle), 10)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(k.Count), 10)
	b = append(b, `,"interval_s":`...)
	b = strconv.AppendInt(b, int64(k.Interval), 10)
	b = append(b, `,"user_timeout_ms":`...)
	b = strconv.AppendInt(b, int64(k.UserTimeoutMs), 10)
	return append(b, '}')
}

// appendFloat writes a float as encoding/json does for the values we
// send (seconds rounded to milliseconds, never huge).
func appendFloat(b []byte, key string, f float64) []byte {
	b = append(b, key...)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

const hex = "0123456789abcdef"

// appendStr writes key and s as a JSON string, escaped as encoding/json
// does with HTML escaping off.
func appendStr(b []byte, key, s string) []byte {
	b = append(b, key...)
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			if r == utf8.RuneError {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			}
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
