package daemon

import (
	"testing"
)

// TestConfigOneListener: listen may name one listener alone, as a URL or
// a url mapping: a list of one.
func TestConfigOneListener(t *testing.T) {
	for _, text := range []string{
		"listen: tcp://127.0.0.1:5061?backend=10.0.0.5:5060\n",
		"listen:\n  url: tcp://127.0.0.1:5061\n  backend: 10.0.0.5:5060\n",
	} {
		cfg, err := ParseArgs([]string{"--config", writeFile(t, text)})
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if len(cfg.Listeners) != 1 || cfg.Listeners[0].Addr != "127.0.0.1:5061" || cfg.Listeners[0].Backend != "10.0.0.5:5060" {
			t.Fatalf("%q: listeners = %+v; want the one listener", text, cfg.Listeners)
		}
	}
}
