package daemontest

import (
	"strings"
	"sync"

	"github.com/tcpops/tcpops/conn"
)

type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func filterRemote(addr string) conn.Filter {
	pfx, port, _ := conn.ParseRemote(addr)
	return conn.Filter{Remote: pfx, Port: port, Direction: "in"}
}
