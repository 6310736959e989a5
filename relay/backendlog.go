package relay

import (
	"log/slog"
	"sync"
	"time"
)

// backendLogEvery is the least time between two log lines about one
// backend: a backend that is down refuses every connection, and one line
// per connection would drown the log.
const backendLogEvery = 10 * time.Second

// backendLog rate-limits the warnings about failing backends, per
// backend. The zero value is ready; backends come from the configuration,
// so the map stays small.
type backendLog struct {
	now func() time.Time // time.Now unless a test sets it

	// mu guards the field below.
	mu   sync.Mutex
	seen map[string]*backendSeen
}

type backendSeen struct {
	logged time.Time // when the last line was written
	held   int       // failures since then not logged
}

// failed logs, at warn, that the backend of l failed for a connection
// (could not be dialled, or refused the PROXY protocol header), unless a
// line about this backend was written less than backendLogEvery ago; the
// next line says how many failures were held back meanwhile.
func (b *backendLog) failed(log *slog.Logger, l *Listener, err error) {
	now := time.Now
	if b.now != nil {
		now = b.now
	}
	t := now()
	b.mu.Lock()
	if b.seen == nil {
		b.seen = map[string]*backendSeen{}
	}
	s := b.seen[l.Backend]
	if s == nil {
		s = &backendSeen{}
		b.seen[l.Backend] = s
	}
	if !s.logged.IsZero() && t.Sub(s.logged) < backendLogEvery {
		s.held++
		b.mu.Unlock()
		return
	}
	held, prev := s.held, s.logged
	s.logged, s.held = t, 0
	b.mu.Unlock()
	args := []any{"backend", l.Backend, "listener", l.Name, "err", err}
	if held > 0 {
		// Failures not logged since the previous line, and how long ago
		// that was.
		args = append(args, "more_failures", held, "in", t.Sub(prev).Round(time.Second).String())
	}
	log.Warn("backend failed", args...)
}
