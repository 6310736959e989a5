package conn

import (
	"net/netip"
	"time"
)

// The ring keeps each event as a record: fixed-size fields and no
// pointers, so that a full ring (65,536 events by default) is one block
// of memory the garbage collector never scans, about 110 bytes an event
// instead of about 260 for an Event and its address strings. What is rare
// (an error text, a WebSocket close, a balancer's address, an IPv6 zone,
// a reason or protocol this build does not know) is kept beside the ring
// by position and given back when its record is overwritten.

// record is one event in the ring; its seq is where it is.
type record struct {
	time     int64 // Unix ns
	connID   uint64
	peer     uint64
	duration int64
	bytesIn  uint64
	bytesOut uint64
	local    addr
	remote   addr
	listener uint32 // index in Events.names
	reason   uint8  // index in Reasons + 1; 0: none
	proto    uint8  // index in Protos + 1; 0: none
	dir      Direction
	flags    uint8
}

const (
	recReset uint8 = 1 << iota
	recExtra       // Events.extras has the rest
	recUsed
)

// addr is an IP address and port without a zone.
type addr struct {
	ip   [16]byte
	port uint16
	kind uint8 // 0: none, 4, 6
}

func packAddr(a netip.AddrPort) (addr, bool) {
	ip := a.Addr()
	switch {
	case !a.IsValid():
		return addr{}, true
	case ip.Zone() != "":
		return addr{}, false
	case ip.Is4():
		return addr{ip: ip.As16(), port: a.Port(), kind: 4}, true
	}
	return addr{ip: ip.As16(), port: a.Port(), kind: 6}, true
}

func (a *addr) String() string {
	switch a.kind {
	case 4:
		return netip.AddrPortFrom(netip.AddrFrom16(a.ip).Unmap(), a.port).String()
	case 6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.ip), a.port).String()
	}
	return ""
}

// extra is what a record leaves out.
type extra struct {
	local, remote, via string // when not packed (a zone), via always
	err                string
	wsCode             int
	wsReason           string
	reason             Reason // when not among Reasons
	proto              Proto  // when not among Protos
}

func protoIndex(p Proto) int {
	for i, x := range Protos {
		if x == p {
			return i
		}
	}
	return -1
}

// evAddrs are the addresses of an event: parsed from an Event's strings,
// or straight from a connection.
type evAddrs struct {
	local, remote netip.AddrPort
	localS        string // set when local could not be parsed
	remoteS       string
}

func parseAddrs(e *Event) evAddrs {
	var a evAddrs
	if e.Local != "" {
		var err error
		if a.local, err = netip.ParseAddrPort(e.Local); err != nil {
			a.localS = e.Local
		}
	}
	if e.Remote != "" {
		var err error
		if a.remote, err = netip.ParseAddrPort(e.Remote); err != nil {
			a.remoteS = e.Remote
		}
	}
	return a
}

// put stores e as seq's record; r.mu held.
func (r *Events) put(seq uint64, e *Event, a evAddrs) {
	rec := r.rec(seq)
	if rec.flags&recExtra != 0 {
		delete(r.extras, seq%r.size) // the event it held
	}
	*rec = record{time: e.Time.UnixNano(), connID: e.ConnID, peer: e.Peer, duration: int64(e.Duration),
		bytesIn: e.BytesIn, bytesOut: e.BytesOut, dir: e.Direction, flags: recUsed}
	if e.Reset {
		rec.flags |= recReset
	}
	var x extra
	need := false
	if e.Listener != "" {
		rec.listener = r.name(e.Listener)
	}
	if i := e.Reason.index(); i >= 0 {
		rec.reason = uint8(i + 1)
	} else if e.Reason != "" {
		x.reason, need = e.Reason, true
	}
	if i := protoIndex(e.Proto); i >= 0 {
		rec.proto = uint8(i + 1)
	} else if e.Proto != "" {
		x.proto, need = e.Proto, true
	}
	var ok bool
	if rec.local, ok = packAddr(a.local); !ok || a.localS != "" {
		x.local, need = e.Local, true
		if x.local == "" {
			x.local = a.local.String()
		}
	}
	if rec.remote, ok = packAddr(a.remote); !ok || a.remoteS != "" {
		x.remote, need = e.Remote, true
		if x.remote == "" {
			x.remote = a.remote.String()
		}
	}
	if e.Via != "" || e.Error != "" || e.WSCloseCode != 0 || e.WSCloseReason != "" {
		x.via, x.err, x.wsCode, x.wsReason, need = e.Via, e.Error, e.WSCloseCode, e.WSCloseReason, true
	}
	if need {
		if r.extras == nil {
			r.extras = make(map[uint64]*extra)
		}
		kept := x
		r.extras[seq%r.size] = &kept
		rec.flags |= recExtra
	}
}

// name interns a listener name; r.mu held.
func (r *Events) name(s string) uint32 {
	if i, ok := r.nameIdx[s]; ok {
		return i
	}
	if r.nameIdx == nil {
		r.nameIdx = make(map[string]uint32)
		r.names = []string{""}
	}
	i := uint32(len(r.names))
	r.names = append(r.names, s)
	r.nameIdx[s] = i
	return i
}

// get rebuilds the event of seq; r.mu held.
func (r *Events) get(seq uint64) Event {
	rec := r.rec(seq)
	e := Event{Seq: seq, Time: time.Unix(0, rec.time), ConnID: rec.connID, Peer: rec.peer, Direction: rec.dir,
		Duration: time.Duration(rec.duration), BytesIn: rec.bytesIn, BytesOut: rec.bytesOut,
		Reset: rec.flags&recReset != 0, Local: rec.local.String(), Remote: rec.remote.String()}
	if rec.listener != 0 {
		e.Listener = r.names[rec.listener]
	}
	if rec.reason != 0 {
		e.Reason = Reasons[rec.reason-1]
	}
	if rec.proto != 0 {
		e.Proto = Protos[rec.proto-1]
	}
	if rec.flags&recExtra != 0 {
		if x := r.extras[seq%r.size]; x != nil {
			if x.local != "" {
				e.Local = x.local
			}
			if x.remote != "" {
				e.Remote = x.remote
			}
			if x.reason != "" {
				e.Reason = x.reason
			}
			if x.proto != "" {
				e.Proto = x.proto
			}
			e.Via, e.Error, e.WSCloseCode, e.WSCloseReason = x.via, x.err, x.wsCode, x.wsReason
		}
	}
	return e
}
