package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
)

// Discovery waits: for the hosts registered in TCPOPS_HOSTS to answer the
// micro service's ping (all of them answered: done at once), and, with no
// registry to go by, for whoever answers in pingWait.
const (
	registeredWait = time.Second
	pingWait       = 250 * time.Millisecond
)

// Host is a host of the fleet as discovery found it.
type Host struct {
	Name string
	// Registered: its registration is in TCPOPS_HOSTS (it started and did
	// not stop cleanly since).
	Registered bool
	// Answered: its micro service answered the ping.
	Answered bool
	Version  string
}

// Hosts finds the fleet: every daemon whose micro service answers a ping
// ($SRV.PING.tcpops), and every host registered in TCPOPS_HOSTS, which
// includes those that went away without stopping cleanly. It returns
// them sorted by name, and the registry's error if it could not be read
// (the hosts are then those that answered).
func (c *Conn) Hosts(ctx context.Context) ([]Host, error) {
	start := time.Now()
	msgs := make(chan *nats.Msg, 64)
	inbox := c.nc.NewInbox()
	sub, err := c.nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := c.nc.PublishRequest("$SRV.PING."+ServiceName, inbox, nil); err != nil {
		return nil, err
	}
	type regResult struct {
		names []string
		err   error
	}
	regc := make(chan regResult, 1)
	go func() {
		names, err := c.Registered(ctx)
		regc <- regResult{names, err}
	}()
	found := map[string]*Host{}
	get := func(name string) *Host {
		h := found[name]
		if h == nil {
			h = &Host{Name: name}
			found[name] = h
		}
		return h
	}
	var regErr error
	regDone, registered := false, 0
	allAnswered := func() bool {
		for _, h := range found {
			if h.Registered && !h.Answered {
				return false
			}
		}
		return true
	}
	// The wait is pingWait, or registeredWait while the registry has not
	// answered or lists hosts.
	timer := time.NewTimer(pingWait)
	defer timer.Stop()
	for !(regDone && registered > 0 && allAnswered()) {
		select {
		case m := <-msgs:
			var p struct {
				Name     string            `json:"name"`
				Version  string            `json:"version"`
				Metadata map[string]string `json:"metadata"`
			}
			if json.Unmarshal(m.Data, &p) != nil || p.Name != ServiceName || CheckHost(p.Metadata["host"]) != nil {
				continue
			}
			h := get(p.Metadata["host"])
			h.Answered, h.Version = true, p.Version
		case r := <-regc:
			regDone, regErr = true, r.err
			for _, n := range r.names {
				get(n).Registered = true
			}
			registered = len(r.names)
			if registered == 0 && time.Since(start) >= pingWait {
				return sorted(found), regErr
			}
		case <-timer.C:
			if !regDone || registered > 0 {
				if wait := registeredWait - time.Since(start); wait > 0 {
					timer.Reset(wait)
					continue
				}
			}
			if !regDone {
				regErr = fmt.Errorf("reading %s: no answer within %s", HostsStream, registeredWait)
			}
			return sorted(found), regErr
		case <-ctx.Done():
			return sorted(found), errors.Join(regErr, ctx.Err())
		}
	}
	return sorted(found), regErr
}

func sorted(m map[string]*Host) []Host {
	out := make([]Host, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, *m[k])
	}
	return out
}

// Registered lists the hosts registered in TCPOPS_HOSTS (one request:
// the stream's subjects).
func (c *Conn) Registered(ctx context.Context) ([]string, error) {
	req, _ := json.Marshal(map[string]string{"subjects_filter": HostsSubjects})
	subject := "$JS.API.STREAM.INFO." + HostsStream
	ctx, done := c.deniable(ctx, subject)
	defer done()
	m, err := c.nc.RequestWithContext(ctx, subject, req)
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		err = cause
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", HostsStream, err)
	}
	var r struct {
		State struct {
			Subjects map[string]uint64 `json:"subjects"`
		} `json:"state"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("reading %s: %w", HostsStream, err)
	}
	if r.Error != nil {
		return nil, fmt.Errorf("reading %s: %s (%d)", HostsStream, r.Error.Description, r.Error.Code)
	}
	var names []string
	for s := range r.State.Subjects {
		if h := HostOf(s); CheckHost(h) == nil {
			names = append(names, h)
		}
	}
	slices.Sort(names)
	return names, nil
}
