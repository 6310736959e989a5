package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/daemon/control"
	"github.com/tcpops/tcpops/rpc"
)

// eventLog appends every closed event to a file as one JSON object a line
// (NDJSON, as tcpops.events gives them), for log shippers. Reopen, on
// SIGUSR1, starts a new file at the same path after it was rotated away.
type eventLog struct {
	path string
	log  *slog.Logger

	// mu guards the fields below.
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
}

func openEventLog(path string, log *slog.Logger) (*eventLog, error) {
	l := &eventLog{path: path, log: log}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *eventLog) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("--event-log: %w", err)
	}
	l.f, l.w = f, bufio.NewWriter(f)
	return nil
}

// Reopen closes the file and opens the path again.
func (l *eventLog) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Flush()
	l.f.Close()
	return l.open()
}

// run writes events from sub until the ring closes (shutdown), then the
// file is flushed and closed.
func (l *eventLog) run(sub *conn.Subscription) {
	defer func() {
		l.mu.Lock()
		l.w.Flush()
		l.f.Close()
		l.mu.Unlock()
	}()
	for {
		evs, lost, err := sub.Next(context.Background(), 256)
		if errors.Is(err, conn.ErrEventsClosed) {
			return
		}
		l.mu.Lock()
		if lost != nil {
			l.write(map[string]any{"event": rpc.NotifyEventsLost, "from_seq": lost.From, "to_seq": lost.To})
		}
		for i := range evs {
			l.write(control.WireEvent(&evs[i]))
		}
		// Written out at once: a shipper tailing the file sees each burst.
		if err := l.w.Flush(); err != nil {
			l.log.Error("event log write failed", "path", l.path, "err", err)
		}
		l.mu.Unlock()
	}
}

// write encodes one line; l.mu is held.
func (l *eventLog) write(v any) {
	enc := json.NewEncoder(l.w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
