package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// EventsOptions choose what of the events stream to read.
type EventsOptions struct {
	// Hosts are the hosts to read (none: every host).
	Hosts []string
	// StartSeq is the stream sequence to start at; StartTime the time.
	// Neither: everything the stream keeps.
	StartSeq  uint64
	StartTime time.Time
	// Follow keeps reading new records; without it reading stops at the
	// end of the stream.
	Follow bool
}

// StreamRecord is one message of the events stream: its stream sequence,
// the record decoded, and the JSON as stored.
type StreamRecord struct {
	StreamSeq uint64
	Record
	Data []byte
}

// Events reads the events stream in order, one host's subject or all,
// with an ordered consumer, calling fn for each record. It returns nil
// when ctx ends or, not following, at the end of the stream.
func (c *Conn) Events(ctx context.Context, o EventsOptions, fn func(*StreamRecord) error) error {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{EventsSubjects}, InactiveThreshold: time.Minute}
	if len(o.Hosts) == 1 {
		cfg.FilterSubjects = []string{EventsSubject(o.Hosts[0])}
	}
	switch {
	case o.StartSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.StartSeq
	case !o.StartTime.IsZero():
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &o.StartTime
	}
	cons, err := js.OrderedConsumer(ctx, EventsStream, cfg)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("no stream %s on this NATS: no daemon has published there yet (tcpops --nats creates it)", EventsStream)
		}
		return fmt.Errorf("reading %s: %w", EventsStream, err)
	}
	if !o.Follow {
		if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
			return nil
		}
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("reading %s: %w", EventsStream, err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading %s: %w", EventsStream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		r := &StreamRecord{StreamSeq: md.Sequence.Stream, Data: m.Data()}
		if err := json.Unmarshal(r.Data, &r.Record); err != nil {
			return fmt.Errorf("%s message %d is not a tcpops record: %w", EventsStream, md.Sequence.Stream, err)
		}
		if r.Host == "" {
			r.Host = HostOf(m.Subject())
		}
		if len(o.Hosts) < 2 || slices.Contains(o.Hosts, r.Host) {
			if err := fn(r); err != nil {
				return err
			}
		}
		if !o.Follow && md.NumPending == 0 {
			return nil
		}
	}
}
