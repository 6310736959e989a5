package daemon

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Giving memory back after a burst. Go's heap keeps what a burst of
// connections left free (up to about twice the live heap, which the
// collector allows before it runs again) and gives it back to the kernel
// only slowly and only above that goal: a daemon that has relayed a burst
// of short connections and gone quiet holds the burst's peak for good.
// Every releaseEvery, if the heap holds at least releaseFree bytes more
// than the live heap of the last collection (free memory, and garbage
// that no collection has freed yet: an idle daemon allocates too little
// to start one) and the daemon allocated less than releaseQuiet bytes
// since the last look (no burst going on), that memory goes back to the
// kernel (debug.FreeOSMemory: one collection, then every free page
// returned). A busy daemon is left alone, and so is an idle one once it
// has given back.
const (
	releaseEvery = 5 * time.Second
	releaseFree  = 1 << 20
	releaseQuiet = 1 << 20
)

var memSamples = []metrics.Sample{
	{Name: "/memory/classes/heap/free:bytes"},
	{Name: "/gc/heap/allocs:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/gc/heap/live:bytes"},
}

// giveBackMemory runs until ctx ends.
func giveBackMemory(ctx context.Context) {
	t := time.NewTicker(releaseEvery)
	defer t.Stop()
	var lastAllocs uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if releaseNow(&lastAllocs) {
			debug.FreeOSMemory()
		}
	}
}

// releaseNow reads the heap and says whether to give memory back; last
// is the allocation count of the previous look.
func releaseNow(last *uint64) bool {
	s := make([]metrics.Sample, len(memSamples))
	copy(s, memSamples)
	metrics.Read(s)
	for i := range s {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return false
		}
	}
	free, allocs, objects, live := s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64(), s[3].Value.Uint64()
	quiet := allocs-*last < releaseQuiet
	*last = allocs
	return quiet && free+objects >= live+releaseFree
}
