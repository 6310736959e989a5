package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcpops/tcpops/rpc"
)

// TestProgress: progress notifications go to the callback, in order, and
// thousands of them with nobody watching hold up neither the answer nor
// the events queue.
func TestProgress(t *testing.T) {
	const n = 3000
	answer := func(string) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, `{"jsonrpc":"2.0","method":"tcpops.progress","params":{"done":%d,"total":%d}}`+"\n", i+1, n)
		}
		b.WriteString(`{"jsonrpc":"2.0","id":%d,"result":{"matched":3000,"applied":[],"failed":[],"dry_run":false}}`)
		return b.String()
	}
	var calls int
	path := fakeDaemon(t, func(req string) string {
		calls++
		return fmt.Sprintf(answer(req), calls)
	})
	c, err := Dial(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Nobody watches: dropped.
	if r, err := c.Bulk(ctx, rpc.MethodClose, rpc.CloseParams{}); err != nil || r.Matched != n {
		t.Fatalf("unwatched: %+v, %v", r, err)
	}
	var mu sync.Mutex
	var got []rpc.Progress
	c.OnProgress(func(p rpc.Progress) { mu.Lock(); got = append(got, p); mu.Unlock() })
	if _, err := c.Bulk(ctx, rpc.MethodClose, rpc.CloseParams{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n || got[0].Done != 1 || got[n-1] != (rpc.Progress{Done: n, Total: n}) {
		t.Fatalf("%d progress calls, first %+v; want %d in order", len(got), got[0], n)
	}
}

// TestWithOrder: calls made from many goroutines go out in the order
// their turns give, whatever order the goroutines run in.
func TestWithOrder(t *testing.T) {
	var mu sync.Mutex
	var order []int
	path := fakeDaemon(t, func(req string) string {
		var r struct {
			ID     int `json:"id"`
			Params struct {
				ConnID int `json:"conid"`
			} `json:"params"`
		}
		json.Unmarshal([]byte(req), &r)
		mu.Lock()
		order = append(order, r.Params.ConnID)
		mu.Unlock()
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{"conid":%d,"state":1,"state_name":"ok"}}`, r.ID, r.Params.ConnID)
	})
	c, err := Dial(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 50
	turns := make([]chan struct{}, n+1)
	for i := range turns {
		turns[i] = make(chan struct{})
	}
	close(turns[0])
	var wg sync.WaitGroup
	for i := n - 1; i >= 0; i-- { // started last first
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			ctx := WithOrder(t.Context(), turns[i], func() { once.Do(func() { close(turns[i+1]) }) })
			if r, err := c.State(ctx, uint64(i+1)); err != nil || r.ConnID != uint64(i+1) {
				t.Errorf("call %d: %+v, %v", i+1, r, err)
			}
		}()
	}
	wg.Wait()
	for i, id := range order {
		if id != i+1 {
			t.Fatalf("requests went out as %v, want 1..%d in order", order, n)
		}
	}
	// A turn that never comes: the call times out as a timeout.
	ctx, cancel := context.WithTimeout(WithOrder(t.Context(), make(chan struct{}), func() {}), 50*time.Millisecond)
	defer cancel()
	if _, err := c.State(ctx, 1); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("a call whose turn never comes: %v, want a timeout", err)
	}
}
