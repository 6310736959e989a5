package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpops/tcpops/internal/testcert"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
	rpcclient "github.com/tcpops/tcpops/rpc/client"
)

// TestSIGTERMWhileClientsConnect stops the daemon while four clients dial
// it as fast as they can: every connection a client saw working (its byte
// echoed) has exactly one closed event, in the event log and to a
// follower, whatever the moment the signal lands. Several rounds, because
// the moment differs each time.
func TestSIGTERMWhileClientsConnect(t *testing.T) {
	for round := range 6 {
		dir := t.TempDir()
		logPath := filepath.Join(dir, "events.ndjson")
		d := startDaemon(t, filepath.Join(dir, "s"), "--event-log", logPath, "--log-level", "error")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c, err := rpcclient.Dial(ctx, d.socket)
		if err != nil {
			t.Fatal(err)
		}
		followed := map[string]int{} // inbound remote → events
		followErr := make(chan error, 1)
		go func() {
			followErr <- c.Follow(ctx, ctx, rpc.EventsParams{}, func(e rpc.Event) error {
				if e.Direction == "in" {
					followed[e.Remote]++
				}
				return nil
			}, func(l rpc.EventsLost) error { return errors.New("events lost") })
		}()

		// Clients dial, send a byte, read the echo, and keep the
		// connection (every other one is closed by the client).
		var (
			mu     sync.Mutex
			echoed []string // local addresses of connections that worked
			conns  []net.Conn
			stop   = make(chan struct{})
			wg     sync.WaitGroup
		)
		for range 4 {
			wg.Go(func() {
				for i := range 1500 {
					select {
					case <-stop:
						return
					default:
					}
					tc, err := net.DialTimeout("tcp", d.addr, 2*time.Second)
					if err != nil {
						return // the daemon is gone
					}
					tc.SetDeadline(time.Now().Add(5 * time.Second))
					_, werr := tc.Write([]byte{'x'})
					_, rerr := tc.Read(make([]byte, 1))
					mu.Lock()
					if werr == nil && rerr == nil {
						echoed = append(echoed, tc.LocalAddr().String())
					}
					if i%2 == 0 {
						tc.Close()
					} else {
						conns = append(conns, tc)
					}
					mu.Unlock()
				}
			})
		}
		// Signal once the clients are well under way.
		testutil.WaitFor(t, "clients echoed", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(echoed) >= 50*(round+1)
		})
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := d.cmd.Wait(); err != nil {
			t.Fatalf("round %d: daemon exit after SIGTERM: %v, want 0", round, err)
		}
		close(stop)
		wg.Wait()
		if err := <-followErr; !errors.Is(err, rpcclient.ErrDisconnected) {
			t.Fatalf("round %d: follower ended with %v, want the daemon gone", round, err)
		}
		c.Close()
		for _, tc := range conns {
			tc.Close()
		}

		logged, conids := readEventLog(t, logPath)
		var missing []string
		for _, a := range echoed {
			if logged[a] == 0 {
				missing = append(missing, a)
			}
			if followed[a] == 0 {
				missing = append(missing, a+" (follower)")
			}
		}
		if len(missing) > 0 {
			t.Fatalf("round %d: %d connections echoed, %d without a closed event: %v", round, len(echoed), len(missing), missing)
		}
		for id, n := range conids {
			if n != 1 {
				t.Fatalf("round %d: conid %d has %d closed events, want 1", round, id, n)
			}
		}
		t.Logf("round %d: %d connections echoed, %d events logged", round, len(echoed), len(conids))
	}
}

// readEventLog reads an --event-log file: inbound events by remote
// address, and events by conid. The seqs must run from 1 without a gap.
func readEventLog(t *testing.T, path string) (byRemote map[string]int, byConid map[uint64]int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	byRemote, byConid = map[string]int{}, map[uint64]int{}
	sc := bufio.NewScanner(f)
	var seq uint64
	for sc.Scan() {
		var e rpc.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event log line %q: %v", sc.Text(), err)
		}
		if e.Seq != seq+1 {
			t.Fatalf("event log: seq %d after %d", e.Seq, seq)
		}
		seq = e.Seq
		byConid[e.ConnID]++
		if e.Direction == "in" {
			byRemote[e.Remote]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return byRemote, byConid
}

// TestSIGTERMWithDialsAndUpgradesInProgress: connections that the daemon
// accepted but that are not relayed yet (a TLS client whose backend has
// not answered the connect, a WebSocket client whose upgrade request is
// half sent) are closed by a shutdown with reason shutdown, both legs, not
// as errors of a dial or an upgrade cut short when the listeners stopped.
func TestSIGTERMWithDialsAndUpgradesInProgress(t *testing.T) {
	dir := t.TempDir()
	cert, err := testcert.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	tport, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	wport, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "events.ndjson")
	d := startDaemon(t, filepath.Join(dir, "s"), "--event-log", logPath, "--backend-timeout", "1m",
		"--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile,
		"--listen", "tls://127.0.0.1:"+tport+"?backend="+fullBacklog(t),
		"--listen", "ws://127.0.0.1:"+wport+"/ws?backend=echo")
	const n = 3
	for range n {
		tc, err := tls.Dial("tcp", "127.0.0.1:"+tport, cert.Client)
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		wc, err := net.Dial("tcp", "127.0.0.1:"+wport)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.Close()
		wc.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n"))
	}
	testutil.WaitFor(t, "the TLS clients' backend legs dialling and the upgrades waiting", func() bool {
		st := mustStats(t, d.socket)
		return st.ByState["connecting"] == n && st.ByState["accepting"] == n
	})
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v, want 0", err)
	}
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	count := 0
	for sc := bufio.NewScanner(f); sc.Scan(); count++ {
		var e rpc.Event
		json.Unmarshal(sc.Bytes(), &e)
		if e.Reason != "shutdown" {
			t.Errorf("conid %d (%s %s): reason %q %q, want shutdown", e.ConnID, e.Proto, e.Direction, e.Reason, e.Error)
		}
	}
	if count != 3*n {
		t.Fatalf("%d events, want %d (TLS clients, their backend legs, WebSocket clients)", count, 3*n)
	}
}
