package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tcpops/tcpops/"

// forbidden are packages tcpopsctl must not link, with or below them: the
// daemon's side of the control socket and everything behind it. The CLI
// talks to the daemon only through rpc/client in the wire types of rpc.
var forbidden = []string{
	module + "conn",
	module + "relay",
	module + "daemon", // and daemon/control, the server
	module + "metrics",
	"github.com/prometheus",
	"github.com/coder/websocket",
	"github.com/pires/go-proxyproto",
	"github.com/sourcegraph/jsonrpc2",
	"github.com/nats-io/nats-server", // the embedded server is for tests only
}

// allowed are the packages of this module tcpopsctl may link. A new one
// fails the test until it is added here, so a change to what the CLI links
// is seen in review, as tailscale's depaware.txt makes it seen.
var allowed = []string{
	module + "cli",
	module + "cmd/tcpopsctl",
	module + "fleet",
	module + "rpc",
	module + "rpc/client",
	module + "sock",
}

// TestDeps pins what tcpopsctl links.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", ".").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	var deps []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		deps = append(deps, f[0])
		imports[f[0]] = f[1:]
	}
	if !slices.Contains(deps, module+"rpc/client") {
		t.Fatalf("go list -deps found no rpc/client among %d packages; is the listing right?", len(deps))
	}
	for _, p := range deps {
		for _, f := range forbidden {
			if p == f || strings.HasPrefix(p, f+"/") {
				t.Errorf("tcpopsctl links %s, which it must not: %s", p, strings.Join(chain(imports, module+"cmd/tcpopsctl", p), " -> "))
			}
		}
		if strings.HasPrefix(p, module) && !slices.Contains(allowed, p) && !slices.ContainsFunc(forbidden, func(f string) bool { return p == f || strings.HasPrefix(p, f+"/") }) {
			t.Errorf("tcpopsctl now links %s (%s); if it should, add it to allowed", p, strings.Join(chain(imports, module+"cmd/tcpopsctl", p), " -> "))
		}
	}
}

// chain is a shortest import path from one package to another.
func chain(imports map[string][]string, from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == to {
			var out []string
			for ; p != ""; p = prev[p] {
				out = append(out, strings.TrimPrefix(p, module))
			}
			slices.Reverse(out)
			return out
		}
		for _, q := range imports[p] {
			if _, seen := prev[q]; !seen {
				prev[q] = p
				queue = append(queue, q)
			}
		}
	}
	return []string{to}
}
