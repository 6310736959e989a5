package natsbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/daemon/control"
	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/rpc"
)

var errNotConnected = errors.New("not connected to NATS")

// item is one message for the events stream: an event, or a record of
// events the ring overwrote before they could be stored.
type item struct {
	seq  uint64 // the newest event seq it covers
	lost uint64 // events it reports lost (0: it is an event)
	msg  *nats.Msg
	fut  jetstream.PubAckFuture
	// state after publishing: acked, or failed for sure (JetStream said
	// no), or unknown (the connection went away before the answer).
	acked, refused bool
}

// publish stores the ring's events in JetStream until the ring is closed
// and drained, or the bus stops. It reads the ring like any follower, so
// the relay and the table never wait for it; while NATS is away it
// stops reading, and the ring holds what is to come. Up to window
// events are on their way at once; when one fails, the bus waits for
// the others' fate, reconnects, learns what the stream holds of this run,
// and publishes again from the first event missing, alone, until it is
// stored: the stream holds each host's events in seq order, each once
// (Nats-Msg-Id, and the check of the last stored seq for outages longer
// than the deduplication window).
func (b *Bus) publish() {
	select {
	case <-b.ensured:
	case <-b.ctx.Done():
		return
	}
	in := make(chan *item)
	b.wg.Go(func() { b.read(in) })
	var pending []*item // published, in seq order, answers not all seen
	var redo []*item    // to publish again, before anything new
	open := true
	alone := false // after a failure: one at a time until one is stored
	// restart settles every answer pending, puts what was not stored
	// first in redo, waits until NATS stores the first of it, and goes on
	// one at a time; false when the bus stops first.
	restart := func() bool {
		redo = append(b.settle(pending), redo...)
		pending = nil
		alone = true
		return b.recover(&redo)
	}
	for {
		limit := window
		if alone {
			limit = 1
		}
		// Take the next item: one to publish again, else a new one.
		var next *item
		switch {
		case len(redo) > 0 && len(pending) < limit:
			next, redo = redo[0], redo[1:]
		case open && len(pending) == 0:
			select {
			case it, ok := <-in:
				next, open = it, ok
			case <-b.ctx.Done():
				return
			}
		case open && len(pending) < limit:
			select {
			case it, ok := <-in:
				next, open = it, ok
			default:
			}
		case !open && len(pending) == 0 && len(redo) == 0:
			return // the ring is closed and all it held is stored
		}
		if next != nil {
			b.send(next)
			pending = append(pending, next)
			if !next.refused {
				continue
			}
			// Not even sent: NATS is away.
			if !restart() {
				return
			}
			continue
		}
		if len(pending) == 0 {
			continue
		}
		// Wait for the oldest answer (or more work, while there is room).
		var more <-chan *item
		if open && len(pending) < limit && len(redo) == 0 {
			more = in
		}
		oldest := pending[0]
		select {
		case <-oldest.fut.Ok():
			oldest.acked = true
		case err := <-oldest.fut.Err():
			b.failed(oldest, err)
		case it, ok := <-more:
			if !ok {
				open = false
			} else {
				redo = append(redo, it) // sent at the top of the loop
			}
			continue
		case <-b.ctx.Done():
			return
		}
		if oldest.acked {
			b.stored(oldest)
			pending = pending[1:]
			alone = false
			continue
		}
		// The oldest failed: settle every answer, then start again from it.
		if !restart() {
			return
		}
	}
}

// read turns the ring into items until the ring is closed or the bus
// stops, then closes in.
func (b *Bus) read(in chan<- *item) {
	defer close(in)
	for {
		evs, lost, err := b.sub.Next(b.ctx, window)
		if err != nil {
			return
		}
		if lost != nil {
			if !b.put(in, b.lostItem(lost)) {
				return
			}
		}
		for i := range evs {
			if !b.put(in, b.eventItem(&evs[i])) {
				return
			}
		}
	}
}

func (b *Bus) put(in chan<- *item, it *item) bool {
	select {
	case in <- it:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// eventItem encodes fleet.EventRecord{Host, Boot, WireEvent(e)} by hand
// (TestEventRecord): the host and boot, then the event's own fields.
func (b *Bus) eventItem(e *conn.Event) *item {
	data := make([]byte, 0, len(b.recordHead)+256)
	data = append(data, b.recordHead...)
	data = control.AppendEvent(data, e)
	data[len(b.recordHead)] = ',' // the event's own {
	return b.newItem(e.Seq, 0, strconv.FormatUint(e.Seq, 10), data)
}

func (b *Bus) lostItem(l *conn.Lost) *item {
	data := encode(fleet.LostRecord{Host: b.cfg.Host, Boot: b.boot, Event: rpc.NotifyEventsLost, Time: time.Now().UTC(), FromSeq: l.From, ToSeq: l.To})
	b.log.Warn("nats: closed events overwritten in the ring before they could be stored; publishing a record of the gap", "from_seq", l.From, "to_seq", l.To)
	return b.newItem(l.To, l.To-l.From+1, fmt.Sprintf("lost:%d-%d", l.From, l.To), data)
}

func (b *Bus) newItem(seq, lost uint64, id string, data []byte) *item {
	// The header names are canonical already: no Set, which would
	// canonicalize each of them again for every event.
	m := &nats.Msg{Subject: b.subject, Data: data, Header: nats.Header{
		fleet.HeaderMsgID: {b.cfg.Host + ":" + b.boot + ":" + id},
		fleet.HeaderSeq:   {strconv.FormatUint(seq, 10)},
		fleet.HeaderBoot:  {b.boot},
		fleet.HeaderHost:  {b.cfg.Host},
	}}
	return &item{seq: seq, lost: lost, msg: m}
}

func encode(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// send publishes it without waiting for the answer.
func (b *Bus) send(it *item) {
	it.acked, it.refused, it.fut = false, false, nil
	fut, err := b.js.PublishMsgAsync(it.msg, jetstream.WithRetryAttempts(0))
	if err != nil {
		// Not sent (not connected: nothing is buffered).
		it.refused = true
		if !b.nc.IsConnected() {
			err = errNotConnected
		}
		b.setErr(err)
		return
	}
	it.fut = fut
}

// failed notes how it failed: JetStream's own no is sure, a lost
// connection or a timeout leaves it unknown whether it was stored.
func (b *Bus) failed(it *item, err error) {
	b.setErr(err)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		it.refused = true
	}
}

func (b *Bus) stored(it *item) {
	b.publishedTo.Store(it.seq)
	if it.lost > 0 {
		b.lost.Add(it.lost)
	} else {
		b.published.Add(1)
	}
}

// settle waits for every answer in pending (each comes: an ack, an error,
// the timeout, or the connection's loss) and returns the items to publish
// again: from the first that was not stored on, in order. One stored
// after one that was not is out of order in the stream; it is counted and
// logged (it takes a publish that JetStream refuses while the next is
// taken, which a reconnect cannot cause).
func (b *Bus) settle(pending []*item) []*item {
	first := -1
	deadline := time.Now().Add(ackTimeout + time.Second)
	for i, it := range pending {
		if it.fut != nil && !it.acked && !it.refused {
			t := time.NewTimer(max(time.Until(deadline), 0))
			select {
			case <-it.fut.Ok():
				it.acked = true
			case err := <-it.fut.Err():
				b.failed(it, err)
			case <-t.C:
			case <-b.ctx.Done():
			}
			t.Stop()
		}
		if it.acked && first < 0 {
			b.stored(it)
			continue
		}
		if first < 0 {
			first = i
		}
	}
	if first < 0 {
		return nil
	}
	var redo []*item
	for _, it := range pending[first:] {
		if it.acked {
			b.outOfOrder.Add(1)
			b.log.Warn("nats: a closed event was stored after one that was not; it is stored again in order", "seq", it.seq)
			it.acked = false
		}
		redo = append(redo, it)
	}
	return redo
}

// recover waits until NATS is back and redo[0] is stored, publishing it
// alone; it drops from redo what the stream already holds of this run.
// False when the bus stops first.
func (b *Bus) recover(redo *[]*item) bool {
	for attempt := 0; len(*redo) > 0; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(backoff(attempt)):
			case <-b.ready:
			case <-b.ctx.Done():
				return false
			}
		}
		if !b.nc.IsConnected() {
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, ackTimeout)
		if last, ok := b.lastStored(ctx); ok {
			// What a lost connection left unknown, the stream tells: it
			// holds a prefix of what was sent on that connection.
			for len(*redo) > 0 && !(*redo)[0].refused && (*redo)[0].seq <= last {
				b.stored((*redo)[0])
				*redo = (*redo)[1:]
			}
		}
		if len(*redo) == 0 {
			cancel()
			return true
		}
		it := (*redo)[0]
		_, err := b.js.PublishMsg(ctx, it.msg, jetstream.WithRetryAttempts(0))
		cancel()
		if err == nil {
			b.stored(it)
			*redo = (*redo)[1:]
			b.lastErr.Store(nil)
			b.log.Info("nats: storing closed events again", "from_seq", it.seq, "waiting", len(*redo))
			return true
		}
		b.setErr(err)
		if b.nc.IsConnected() {
			b.kick(b.setup) // connected, yet refused: the stream may be gone
		}
		it.refused = false // unknown again: the next round asks the stream
		if attempt == 0 || attempt%20 == 0 {
			b.log.Warn("nats: storing closed events failed; they wait in the ring", "seq", it.seq, "err", err)
		}
	}
	return true
}

// lastStored is the newest seq of this run in the stream (false: none, or
// it could not be read).
func (b *Bus) lastStored(ctx context.Context) (uint64, bool) {
	s, err := b.js.Stream(ctx, fleet.EventsStream)
	if err != nil {
		return 0, false
	}
	m, err := s.GetLastMsgForSubject(ctx, fleet.EventsSubject(b.cfg.Host))
	if err != nil || m.Header.Get(fleet.HeaderBoot) != b.boot {
		return 0, false
	}
	seq, err := strconv.ParseUint(m.Header.Get(fleet.HeaderSeq), 10, 64)
	return seq, err == nil
}
