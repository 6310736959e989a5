package conn

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Sort is the order of a listing. Every order but SortConid puts the
// largest first: the most idle, the most bytes, the fastest, the oldest.
type Sort string

// The orders of a listing.
const (
	SortConid Sort = "conid"
	SortIdle  Sort = "idle"
	SortBytes Sort = "bytes"
	SortRate  Sort = "rate"
	SortAge   Sort = "age"
)

// Sorts lists every order.
var Sorts = []Sort{SortConid, SortIdle, SortBytes, SortRate, SortAge}

// ParseSort accepts the name of an order.
func ParseSort(s string) (Sort, error) {
	for _, o := range Sorts {
		if string(o) == s {
			return o, nil
		}
	}
	return "", fmt.Errorf("sort %q: want conid, idle, bytes, rate or age", s)
}

// View is what a live view (tcpopsctl top) asks of a listing besides the
// filters: an order, a page of it, free-text terms, rates and the kernel's
// view of each connection.
type View struct {
	Sort   Sort   // "" is SortConid
	Offset int    // matches to skip, in Sort order
	Match  string // space-separated terms, each a substring of remote, local, via, listener, proto, direction or state
	Rates  bool   // report each connection's bytes per second
	// TCPInfo reads TCP_INFO of each connection listed (only the page) and
	// applies the suspect rules.
	TCPInfo bool
	// Suspect keeps only connections a suspect rule picks; it reads
	// TCP_INFO of every connection that passes the other filters.
	Suspect bool
}

func (v *View) set() bool {
	return v.Sort != "" || v.Offset > 0 || v.Match != "" || v.Rates || v.TCPInfo || v.Suspect
}

// rateSample is what a connection's bytes per second is computed from.
type rateSample struct {
	at    atomic.Int64  // table clock of the sample, 0: none yet
	bytes atomic.Uint64 // bytes in + out then
	bps   atomic.Uint64 // math.Float64bits of bytes per second since the sample before
}

// rateEvery is the shortest interval rates are computed over: views that
// ask more often (two tops at once) share the last sample.
const rateEvery = 500 * time.Millisecond

// sampleRates computes every connection's bytes per second since the last
// sample. It is cheap (two atomic loads and three stores per connection)
// and runs only for listings that ask for rates.
func (t *Table) sampleRates(now int64) {
	t.rateMu.Lock()
	defer t.rateMu.Unlock()
	if t.rateAt != 0 && now-t.rateAt < int64(rateEvery) {
		return
	}
	t.rateAt = now
	wall := time.Now()
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, c := range sh.m {
			b := c.bytesIn.Load() + c.bytesOut.Load()
			var r float64
			if at := c.rate.at.Load(); at != 0 && now > at {
				r = float64(b-c.rate.bytes.Load()) / time.Duration(now-at).Seconds()
			} else if age := wall.Sub(c.Created()).Seconds(); age > 0 {
				r = float64(b) / age // first sample: the average so far
			}
			c.rate.bps.Store(math.Float64bits(r))
			c.rate.bytes.Store(b)
			c.rate.at.Store(now)
		}
		sh.mu.RUnlock()
	}
}

// matchTerms reports whether every term is a substring of one of the
// connection's names; buf is scratch space, returned for reuse. Nothing
// is allocated per connection: a filter is matched against the whole
// table every refresh.
func (in *Info) matchTerms(terms [][]byte, buf []byte) (bool, []byte) {
	if len(terms) == 0 {
		return true, buf
	}
	b := buf[:0]
	for _, a := range []netip.AddrPort{in.Remote, in.Local, in.Via} {
		if a.IsValid() {
			b = a.AppendTo(b)
		}
		b = append(b, 0)
	}
	b = append(append(b, in.Listener...), 0)
	b = append(append(b, in.Proto...), 0)
	b = append(append(b, in.Direction.String()...), 0)
	b = append(b, in.State.String()...)
	for _, t := range terms {
		if !bytes.Contains(b, t) {
			return false, b
		}
	}
	return true, b
}

// ListView is List for a filter with a View: every match is taken (the
// order may put any of them first), then one page of it is returned, with
// the number of matches. next is set in conid order only.
//
// It is what a live view asks every second of a table of 10,000, so the
// matching reads only the connection's atomics where the filters allow;
// the full snapshot (a lock, two addresses) is taken for the page alone.
func (t *Table) ListView(f Filter) (infos []Info, next uint64, total int) {
	v := &f.View
	now := t.clock()
	wall := time.Now()
	rates := v.Rates || v.Sort == SortRate
	if rates {
		t.sampleRates(now)
	}
	var terms [][]byte
	for _, w := range strings.Fields(v.Match) {
		terms = append(terms, []byte(w))
	}
	var scratch []byte
	// Filters on the remote address, free text and suspects need the
	// snapshot; the rest read fields that never change or atomics.
	full := f.Remote.IsValid() || len(terms) > 0 || v.Suspect
	// Entries hold no pointers: sorting them costs no write barriers.
	type entry struct {
		key float64
		id  uint64
		c   int32 // index in cs
		in  int32 // index in kept, or -1
	}
	cs := make([]*Conn, 0, t.Len()+16)
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for id, c := range sh.m {
			if id > f.After {
				cs = append(cs, c)
			}
		}
		sh.mu.RUnlock()
	}
	key := func(idle time.Duration, bytes uint64, c *Conn) float64 {
		switch v.Sort {
		case SortIdle:
			return float64(idle)
		case SortBytes:
			return float64(bytes)
		case SortRate:
			return math.Float64frombits(c.rate.bps.Load())
		case SortAge:
			return -float64(c.Created().UnixNano())
		}
		return 0
	}
	var kept []Info // snapshots with TCP_INFO, taken to pick suspects
	es := make([]entry, 0, len(cs))
	for i, c := range cs {
		if !full {
			st, idle := c.State(), time.Duration(now-c.lastActive.Load())
			if f.State != 0 && st != f.State || f.Proto != "" && c.Proto != f.Proto || f.Direction != 0 && c.Direction != f.Direction ||
				f.Listener != "" && c.Listener != f.Listener || f.IdleMin > 0 && idle < f.IdleMin {
				continue
			}
			es = append(es, entry{key(idle, c.bytesIn.Load()+c.bytesOut.Load(), c), c.ID, int32(i), -1})
			continue
		}
		in := c.info(now)
		if !f.match(&in) {
			continue
		}
		var ok bool
		if ok, scratch = in.matchTerms(terms, scratch); !ok {
			continue
		}
		e := entry{key(in.Idle, in.BytesIn+in.BytesOut, c), c.ID, int32(i), -1}
		if v.Suspect {
			c.inspect(&in, wall)
			if len(in.Suspect) == 0 {
				continue
			}
			e.in = int32(len(kept))
			kept = append(kept, in)
		}
		es = append(es, e)
	}
	total = len(es)
	slices.SortFunc(es, func(a, b entry) int {
		switch { // keys are never NaN: plain compares, no cmp.Compare
		case a.key > b.key:
			return -1
		case a.key < b.key:
			return 1
		}
		return cmp.Compare(a.id, b.id)
	})
	es = es[min(v.Offset, len(es)):]
	if f.Limit > 0 && len(es) > f.Limit {
		es = es[:f.Limit]
		if v.Sort == "" || v.Sort == SortConid {
			next = es[len(es)-1].id
		}
	}
	infos = make([]Info, len(es))
	for i, e := range es {
		c := cs[e.c]
		if e.in >= 0 {
			infos[i] = kept[e.in]
		} else {
			infos[i] = c.info(now)
		}
		if rates {
			infos[i].Rate, infos[i].Rated = math.Float64frombits(c.rate.bps.Load()), true
		}
		if v.TCPInfo && infos[i].TCPInfo == nil && !v.Suspect {
			c.inspect(&infos[i], wall)
		}
	}
	return infos, next, total
}
