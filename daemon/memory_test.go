package daemon

import (
	"runtime"
	"runtime/debug"
	"testing"
)

var sink [][]byte

// TestReleaseNow: memory is given back once a burst is over and only
// then: not while it allocates, and not again once given back.
func TestReleaseNow(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no collection but ours
	var last uint64
	releaseNow(&last)
	for range 256 {
		sink = append(sink, make([]byte, 64<<10)) // 16 MiB: a burst
	}
	if releaseNow(&last) {
		t.Fatal("release while the burst allocates")
	}
	sink = nil
	runtime.GC() // what the burst left is free now
	if !releaseNow(&last) {
		t.Fatal("no release after the burst, with its 16 MiB free")
	}
	debug.FreeOSMemory()
	if releaseNow(&last) {
		t.Fatal("release again with nothing free")
	}
}
