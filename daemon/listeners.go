package daemon

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/tcpops/tcpops/relay"
)

// logListeners logs each serving listener: its URL, the address it is
// bound to (a port 0 resolved) and where it relays, so that the log says
// where the daemon listens after a start and after every reload.
func (d *Daemon) logListeners() {
	d.mu.Lock()
	ls := slices.Clone(d.Listeners)
	d.mu.Unlock()
	slices.SortFunc(ls, func(a, b ListenerAddr) int { return strings.Compare(a.URL, b.URL) })
	for _, l := range ls {
		args := []any{"url", l.URL, "address", l.Bound, "backend", l.Backend}
		if named(l.Listener) {
			args = append(args, "name", l.Name)
		}
		d.log.Info("listening", args...)
	}
}

// printListeners writes what --check-config says of each listener: where
// it would listen and where it relays.
func printListeners(w io.Writer, ls []relay.Listener) {
	for _, l := range ls {
		name := ""
		if named(l) {
			name = " (name " + l.Name + ")"
		}
		fmt.Fprintf(w, "  listener %s on %s, backend %s%s\n", l.URL, l.Addr, l.Backend, name)
	}
}

// named reports whether the listener was given a name= of its own, rather
// than the one made of its scheme, address and path.
func named(l relay.Listener) bool {
	return l.Name != string(l.Scheme)+"://"+l.Addr+l.Path
}
