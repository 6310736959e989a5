// Package natstest runs a NATS server with JetStream inside a test
// process (github.com/nats-io/nats-server/v2), restartable on the same
// port and store, for the tests of the fleet's NATS side.
package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
)

// LeakOptions are for goleak in packages that run an embedded server: a
// stream whose creation a shutting-down server is still processing can
// leave the server's background loops (stream state flusher, access time
// ticker) running after Shutdown returns. They are the server's, not the
// code under test's.
var LeakOptions = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
	goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
}

// Server is an embedded nats-server.
type Server struct {
	t    testing.TB
	opts server.Options
	s    *server.Server
}

// Start runs a server on a free 127.0.0.1 port with JetStream in a
// temporary directory; configure, if set, adjusts its options (users,
// max_payload). It stops at the end of the test.
func Start(t testing.TB, configure func(*server.Options)) *Server {
	t.Helper()
	ns := &Server{t: t, opts: server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, ServerName: "natstest"}}
	if configure != nil {
		configure(&ns.opts)
	}
	ns.start()
	t.Cleanup(ns.Stop)
	return ns
}

func (ns *Server) start() {
	ns.t.Helper()
	opts := ns.opts
	s, err := server.NewServer(&opts)
	if err != nil {
		ns.t.Fatalf("nats-server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		ns.t.Fatal("nats-server not ready within 10s")
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		ns.t.Fatal("nats-server runs without JetStream")
	}
	ns.s = s
	// A restart must come back on the same port.
	ns.opts.Port = s.Addr().(*net.TCPAddr).Port
}

// URL is the client URL, nats://127.0.0.1:PORT.
func (ns *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", ns.opts.Port) }

// UserURL is the URL with a user and password in it.
func (ns *Server) UserURL(user, pass string) string {
	return fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", user, pass, ns.opts.Port)
}

// Stop shuts the server down (clients see it go away); a stopped server
// stays stopped.
func (ns *Server) Stop() {
	if ns.s == nil {
		return
	}
	ns.s.Shutdown()
	ns.s.WaitForShutdown()
	ns.s = nil
}

// Restart starts the server again on its port, with its JetStream store.
func (ns *Server) Restart() {
	ns.t.Helper()
	ns.Stop()
	ns.start()
}
