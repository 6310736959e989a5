package relay

import (
	"math/rand/v2"
	"os"
	"testing"
)

// TestStressRelayBytes is FuzzRelayBytes with random data, many times:
// TCPOPS_STRESS=1 for 3,000 sizes up to 100 KB, =small for 30,000 up to 64 B.
func TestStressRelayBytes(t *testing.T) {
	n, max := 3000, 100000
	switch os.Getenv("TCPOPS_STRESS") {
	case "":
		t.Skip("set TCPOPS_STRESS=1 or small")
	case "small":
		n, max = 30000, 64
	}
	echo, pair := fuzzRelays(t)
	for range n {
		data := make([]byte, rand.IntN(max))
		for j := range data {
			data[j] = byte(rand.IntN(256))
		}
		relayRoundTrip(t, echo, data)
		relayRoundTrip(t, pair, data)
	}
}
