package metrics_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/tcpops/tcpops/internal/natstest"
)

// TestMain fails the package when a test leaves goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions...) }
