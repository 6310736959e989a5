// Package testutil waits, bounded, on the conditions tests of several
// packages wait for.
package testutil

import (
	"testing"
	"time"
)

// Timeout bounds every wait. It is generous so that only a condition that
// never comes true fails, even on a loaded machine or under -race; a wait
// on one that does come true costs only the time it takes.
const Timeout = 20 * time.Second

// maxPoll is the longest pause between two checks of a condition.
const maxPoll = 20 * time.Millisecond

// Until checks cond until it holds and reports whether it did within
// Timeout. The first check is at once; the pauses between checks grow from
// a millisecond to maxPoll. cond runs on the caller's goroutine, so it may
// call t.Fatal.
func Until(cond func() bool) bool {
	deadline := time.Now().Add(Timeout)
	for poll := time.Millisecond; ; poll = min(2*poll, maxPoll) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll)
	}
}

// WaitFor fails the test, saying what it waited for, unless cond holds
// within Timeout. A caller that has more to say on failure (the last value
// seen) uses Until and fails with its own message.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Until(cond) {
		t.Fatalf("timed out after %v waiting for %s", Timeout, what)
	}
}
