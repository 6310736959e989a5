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
// Every releaseEvery, if the heap holds at least releaseFree bytes that
// are free and the daemon allocated less than releaseQuiet bytes since
// the last look (no burst going on), the free memory goes back to the
// kernel (debug.FreeOSMemory: one collection, then every free page
// returned). A busy or idle daemon is left alone.
const (
	releaseEvery = 5 * time.Second
	releaseFree  = 4 << 20
	releaseQuiet = 1 << 20
)

var memSamples = []metrics.Sample{
	{Name: "/memory/classes/heap/free:bytes"},
	{Name: "/gc/heap/allocs:bytes"},
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
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return false
	}
	free, allocs := s[0].Value.Uint64(), s[1].Value.Uint64()
	quiet := allocs-*last < releaseQuiet
	*last = allocs
	return quiet && free >= releaseFree
}
