package control

import (
	"sync"
	"testing"

	"github.com/tcpops/tcpops/conn"
)

// TestNoFollowerAfterWait: followers that subscribe while the server
// stops (a tcpopsctl events -f reconnecting during a shutdown) are either
// counted before Wait waits for them or refused; never counted while it
// waits (a WaitGroup misuse the race detector reported).
func TestNoFollowerAfterWait(t *testing.T) {
	tb := conn.NewTable(conn.Config{})
	s, err := NewServer(Config{Table: tb})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if s.addFollower() {
				s.followers.Done()
			}
		})
	}
	tb.Events().Close()
	s.Wait()
	wg.Wait()
	if s.addFollower() {
		t.Fatal("a follower was counted after Wait began")
	}
}
