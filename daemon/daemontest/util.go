package daemontest

import (
	"strings"
	"sync"

	"github.com/tcpops/tcpops/conn"
)

// Buffer is a strings.Builder safe for a writer and a reader at once.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *Buffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *Buffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func filterRemote(addr string) conn.Filter {
	pfx, port, _ := conn.ParseRemote(addr)
	return conn.Filter{Remote: pfx, Port: port, Direction: conn.DirIn}
}
