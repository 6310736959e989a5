package conn

import (
	"fmt"
	"time"

	"github.com/tcpops/tcpops/sock"
)

// What names a setting of a connection that can be overridden for a while.
type What uint8

// The settings an override can change.
const (
	WhatKeepalive What = iota
	WhatLifetime
	WhatClosedEvent
	nWhat
)

// String returns the setting's name on the wire: keepalive, lifetime,
// closed_event.
func (w What) String() string {
	return [...]string{"keepalive", "lifetime", "closed_event", ""}[min(w, nWhat)]
}

// Override is a setting changed for a while: at Until the setting it
// replaced comes back.
type Override struct {
	What  What
	Until time.Time
}

// Restored tells the table's OnRestore function that an override ran out
// and what was done about it.
type Restored struct {
	ConnID uint64
	What   What
	// Value is the setting in force now, as read back (keepalive from the
	// kernel).
	Value string
	// Err is set when the previous setting could not be put back.
	Err error
}

// OnRestore sets a function told of every override that runs out
// (logging). Set it before connections are added; it must not block.
func (t *Table) OnRestore(fn func(Restored)) { t.onRestore = fn }

// overrides are a connection's pending restores, one per setting.
type overrides [nWhat]*override

// override is one pending restore; the connection's mu guards it.
type override struct {
	what  What
	until time.Time
	timer *time.Timer
	// The setting before the first override of this kind: a later
	// override replaces the ttl, not what comes back.
	keepalive   sock.KeepaliveConfig
	lifetime    time.Duration
	closedEvent bool
}

// overrideLocked returns the pending override of w, or nil; c.mu is held.
func (c *Conn) overrideLocked(w What) *override {
	if c.ext().ov == nil {
		return nil
	}
	return c.ext().ov[w]
}

// holdLocked makes the setting w, just changed, an override for ttl (a
// new one remembers the setting before through keep), or, with ttl 0,
// permanent (dropping an override of w); c.mu is held. It returns when
// the override runs out (zero for none).
func (c *Conn) holdLocked(w What, ttl time.Duration, o *override) time.Time {
	old := c.overrideLocked(w)
	if ttl <= 0 {
		if old != nil {
			old.timer.Stop()
			c.ext().ov[w] = nil
		}
		return time.Time{}
	}
	if old != nil {
		// The setting from before the first override comes back; a new
		// struct, so that the old timer, should it have fired already
		// and wait for the lock, finds it replaced.
		old.timer.Stop()
		o.keepalive, o.lifetime, o.closedEvent = old.keepalive, old.lifetime, old.closedEvent
	}
	if c.ext().ov == nil {
		c.extW().ov = &overrides{}
	}
	o.what = w
	o.until = time.Now().Add(ttl)
	// A timer that fires after a later call replaced it finds another
	// override in its place and does nothing.
	o.timer = time.AfterFunc(ttl, func() { c.restore(o) })
	c.ext().ov[w] = o
	return o.until
}

// stopOverridesLocked stops every pending restore of a closing connection;
// c.mu is held.
func (c *Conn) stopOverridesLocked() {
	if c.ext().ov == nil {
		return
	}
	for w, o := range c.ext().ov {
		if o != nil {
			o.timer.Stop()
			c.ext().ov[w] = nil
		}
	}
}

// Overrides lists the settings changed for a while, by What.
func (c *Conn) Overrides() []Override {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.overridesLocked()
}

func (c *Conn) overridesLocked() []Override {
	if c.ext().ov == nil {
		return nil
	}
	var out []Override
	for _, o := range c.ext().ov {
		if o != nil {
			out = append(out, Override{What: o.what, Until: o.until})
		}
	}
	return out
}

// restore runs when an override's timer fires: the setting from before
// comes back, unless the connection closed or a later call replaced the
// override.
func (c *Conn) restore(o *override) {
	c.mu.Lock()
	if c.closing || c.overrideLocked(o.what) != o {
		c.mu.Unlock()
		return
	}
	c.ext().ov[o.what] = nil
	r := Restored{ConnID: c.ID, What: o.what}
	switch o.what {
	case WhatKeepalive:
		var ka sock.Keepalive
		ka, r.Err = c.restoreKeepaliveLocked(o.keepalive)
		if r.Err == nil {
			r.Value = KeepaliveString(ka)
		}
	case WhatLifetime:
		c.setLifetimeLocked(o.lifetime)
		r.Value = o.lifetime.String()
	case WhatClosedEvent:
		c.closedEvent.Store(o.closedEvent)
		r.Value = fmt.Sprint(o.closedEvent)
	}
	c.mu.Unlock()
	if fn := c.t.onRestore; fn != nil {
		fn(r)
	}
}

// restoreKeepaliveLocked puts back a keepalive read from the kernel
// before: its idle, count and interval too when it was off, so that what
// reads back is what was there; c.mu is held.
func (c *Conn) restoreKeepaliveLocked(k sock.KeepaliveConfig) (sock.Keepalive, error) {
	if c.tcp == nil {
		return sock.Keepalive{}, ErrNoSocket
	}
	if !k.Enable && k.Idle > 0 {
		on := k
		on.Enable = true
		if err := sock.SetKeepalive(c.tcp, on); err != nil {
			return sock.Keepalive{}, err
		}
	}
	ka, err := sock.ApplyKeepalive(c.tcp, k)
	if err != nil {
		return sock.Keepalive{}, err
	}
	c.ka, c.kaUnread = &ka, false
	return ka, nil
}

// KeepaliveString writes a keepalive as the logs show it: off, or
// on IDLE/COUNT/INTERVAL (with the user timeout when set).
func KeepaliveString(k sock.Keepalive) string {
	if !k.Enabled {
		return fmt.Sprintf("off (%d/%d/%d)", k.Idle, k.Count, k.Interval)
	}
	if k.UserTimeoutMs > 0 {
		return fmt.Sprintf("on %d/%d/%d user_timeout %dms", k.Idle, k.Count, k.Interval, k.UserTimeoutMs)
	}
	return fmt.Sprintf("on %d/%d/%d", k.Idle, k.Count, k.Interval)
}

// SetKeepaliveFor applies k to the socket and returns what the kernel
// holds afterwards. With ttl > 0 the keepalive read back before comes back
// after ttl (until says when); with ttl 0 the change is permanent and ends
// any such override.
func (c *Conn) SetKeepaliveFor(k sock.KeepaliveConfig, ttl time.Duration) (ka sock.Keepalive, until time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closing:
		return ka, until, ErrClosed
	case c.ext().drain != nil:
		return ka, until, ErrDraining
	case c.tcp == nil:
		return ka, until, ErrNoSocket
	}
	o := &override{}
	if ttl > 0 && c.overrideLocked(WhatKeepalive) == nil {
		prev, err := sock.GetKeepalive(c.tcp)
		if err != nil {
			return ka, until, err
		}
		o.keepalive = sock.KeepaliveConfig{Enable: prev.Enabled, Idle: prev.Idle, Count: prev.Count,
			Interval: prev.Interval, UserTimeoutMs: prev.UserTimeoutMs}
	}
	if ka, err = sock.ApplyKeepalive(c.tcp, k); err != nil {
		return ka, until, err
	}
	c.ka, c.kaUnread = &ka, false
	return ka, c.holdLocked(WhatKeepalive, ttl, o), nil
}

// SetLifetimeFor is SetLifetime, and with ttl > 0 the lifetime before
// comes back after ttl (set then as SetLifetime sets it); with ttl 0 the
// change is permanent and ends any such override.
func (c *Conn) SetLifetimeFor(d, ttl time.Duration) (expiresIn time.Duration, until time.Time, err error) {
	if d < 0 {
		return 0, until, ErrBadLifetime
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return 0, until, ErrClosed
	}
	if c.ext().drain != nil {
		return 0, until, ErrDraining
	}
	o := &override{lifetime: c.lifetime}
	c.setLifetimeLocked(d)
	until = c.holdLocked(WhatLifetime, ttl, o)
	return c.expiresInLocked(c.t.clock()), until, nil
}

// SetClosedEventFor is SetClosedEvent, and with ttl > 0 the setting
// before comes back after ttl; with ttl 0 the change is permanent and
// ends any such override.
func (c *Conn) SetClosedEventFor(on bool, ttl time.Duration) (until time.Time, err error) {
	if on && c.t.cfg.Load().ClosedEvent == ModeOff {
		return until, ErrEventsOff
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return until, ErrClosed
	}
	o := &override{closedEvent: c.closedEvent.Load()}
	c.closedEvent.Store(on)
	return c.holdLocked(WhatClosedEvent, ttl, o), nil
}

// OverrideState is a pending override as handed to another process (an
// upgrade): what comes back, and when.
type OverrideState struct {
	What        What                 `json:"what"`
	Until       time.Time            `json:"until"`
	Keepalive   sock.KeepaliveConfig `json:"keepalive"`
	Lifetime    time.Duration        `json:"lifetime_ns"`
	ClosedEvent bool                 `json:"closed_event"`
}

// exportOverridesLocked describes the pending overrides; c.mu is held.
func (c *Conn) exportOverridesLocked() []OverrideState {
	if c.ext().ov == nil {
		return nil
	}
	var out []OverrideState
	for _, o := range c.ext().ov {
		if o != nil {
			out = append(out, OverrideState{What: o.what, Until: o.until, Keepalive: o.keepalive, Lifetime: o.lifetime, ClosedEvent: o.closedEvent})
		}
	}
	return out
}

// adoptOverridesLocked arms the overrides handed over by another process:
// each restores its setting at the same instant it would have there (at
// once if that has passed); c.mu is held.
func (c *Conn) adoptOverridesLocked(states []OverrideState) {
	for _, s := range states {
		if s.What >= nWhat {
			continue
		}
		o := &override{keepalive: s.Keepalive, lifetime: s.Lifetime, closedEvent: s.ClosedEvent}
		if c.ext().ov == nil {
			c.extW().ov = &overrides{}
		}
		o.what, o.until = s.What, s.Until
		o.timer = time.AfterFunc(max(time.Until(s.Until), 0), func() { c.restore(o) })
		c.ext().ov[s.What] = o
	}
}
