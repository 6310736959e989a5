package conn

import (
	"cmp"
	"fmt"
	"math"
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
			} else if age := wall.Sub(c.Created).Seconds(); age > 0 {
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
// connection's names.
func (in *Info) matchTerms(terms []string) bool {
	if len(terms) == 0 {
		return true
	}
	fields := []string{addrString(in.Remote), addrString(in.Local), addrString(in.Via), in.Listener,
		string(in.Proto), in.Direction.String(), in.State.String()}
	for _, t := range terms {
		if !slices.ContainsFunc(fields, func(f string) bool { return strings.Contains(f, t) }) {
			return false
		}
	}
	return true
}

// ListView is List for a filter with a View: every match is taken (the
// order may put any of them first), then one page of it is returned, with
// the number of matches. next is set in conid order only.
func (t *Table) ListView(f Filter) (infos []Info, next uint64, total int) {
	v := &f.View
	now := t.clock()
	wall := time.Now()
	rates := v.Rates || v.Sort == SortRate
	if rates {
		t.sampleRates(now)
	}
	terms := strings.Fields(v.Match)
	type entry struct {
		in Info
		c  *Conn
	}
	cs := t.conns(f.After)
	es := make([]entry, 0, len(cs))
	for _, c := range cs {
		in := c.info(now)
		if !f.match(&in) || !in.matchTerms(terms) {
			continue
		}
		if rates {
			in.Rate, in.Rated = math.Float64frombits(c.rate.bps.Load()), true
		}
		if v.Suspect {
			c.inspect(&in, wall)
			if len(in.Suspect) == 0 {
				continue
			}
		}
		es = append(es, entry{in, c})
	}
	total = len(es)
	var key func(*Info) float64
	switch v.Sort {
	case SortIdle:
		key = func(in *Info) float64 { return float64(in.Idle) }
	case SortBytes:
		key = func(in *Info) float64 { return float64(in.BytesIn + in.BytesOut) }
	case SortRate:
		key = func(in *Info) float64 { return in.Rate }
	case SortAge:
		key = func(in *Info) float64 { return -float64(in.Created.UnixNano()) }
	}
	if key != nil {
		slices.SortStableFunc(es, func(a, b entry) int { return cmp.Compare(key(&b.in), key(&a.in)) })
	}
	es = es[min(v.Offset, len(es)):]
	if f.Limit > 0 && len(es) > f.Limit {
		es = es[:f.Limit]
		if key == nil {
			next = es[len(es)-1].in.ID
		}
	}
	infos = make([]Info, len(es))
	for i := range es {
		if v.TCPInfo && !v.Suspect {
			es[i].c.inspect(&es[i].in, wall)
		}
		infos[i] = es[i].in
	}
	return infos, next, total
}
