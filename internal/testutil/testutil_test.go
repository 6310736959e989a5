package testutil

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestUntil(t *testing.T) {
	tests := []struct {
		name     string
		trueFrom time.Duration // cond holds from this time on; <0: never
		want     bool
	}{
		{name: "at once", trueFrom: 0, want: true},
		{name: "later", trueFrom: 3 * time.Second, want: true},
		{name: "just in time", trueFrom: Timeout, want: true},
		{name: "never", trueFrom: -1, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				checks := 0
				got := Until(func() bool {
					checks++
					return tt.trueFrom >= 0 && time.Since(start) >= tt.trueFrom
				})
				if got != tt.want {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
				took := time.Since(start)
				switch {
				case tt.want && took > tt.trueFrom+maxPoll:
					t.Errorf("returned %v after the condition came true, want within %v", took-tt.trueFrom, maxPoll)
				case !tt.want && (took < Timeout || took > Timeout+maxPoll):
					t.Errorf("gave up after %v, want %v", took, Timeout)
				}
				if !tt.want && checks > int(Timeout/maxPoll)+10 {
					t.Errorf("%d checks in %v: polls too often", checks, Timeout)
				}
			})
		})
	}
}

// failRecorder records a failure instead of failing the test.
type failRecorder struct {
	testing.TB
	msg string
}

func (r *failRecorder) Helper() {}

func (r *failRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestWaitForNamesWhatItWaitedFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &failRecorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			WaitFor(r, "the moon", func() bool { return false })
		}()
		<-done
		if want := "waiting for the moon"; !strings.Contains(r.msg, want) {
			t.Fatalf("failure %q, want it to contain %q", r.msg, want)
		}
	})
}
