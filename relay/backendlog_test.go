package relay

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// TestBackendLogRateLimited: one line per backend per backendLogEvery; the
// next line says how many failures were held back and over how long.
func TestBackendLogRateLimited(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	b := backendLog{now: func() time.Time { return now }}
	a := &Listener{Name: "sip", Backend: "10.0.0.5:5060"}
	other := &Listener{Name: "tcp://127.0.0.1:7000", Backend: "10.0.0.6:5060"}
	refused := errors.New("dial 10.0.0.5:5060: connect: connection refused")
	for range 5 {
		b.failed(log, a, refused)
		now = now.Add(time.Second)
	}
	b.failed(log, other, errors.New("dial 10.0.0.6:5060: no answer within 5s"))
	now = now.Add(backendLogEvery)
	b.failed(log, a, refused)
	want := `level=WARN msg="backend failed" backend=10.0.0.5:5060 listener=sip err="dial 10.0.0.5:5060: connect: connection refused"
level=WARN msg="backend failed" backend=10.0.0.6:5060 listener=tcp://127.0.0.1:7000 err="dial 10.0.0.6:5060: no answer within 5s"
level=WARN msg="backend failed" backend=10.0.0.5:5060 listener=sip err="dial 10.0.0.5:5060: connect: connection refused" more_failures=4 in=15s
`
	if got := out.String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
