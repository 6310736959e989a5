// Package test holds end-to-end tests: the real tcpops and tcpopsctl
// binaries, built once, driven by scripts as a person would type them,
// with real TCP clients on 127.0.0.1.
package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/tcpops/tcpops/rpc"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tcpops-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, b := range []string{"tcpops", "tcpopsctl"} {
		// Built as the README installs them: static.
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b), "../cmd/"+b)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", b, err, out)
			os.Exit(1)
		}
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a port that was free a moment ago on 127.0.0.1.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p, nil
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(e *testscript.Env) error {
			sockDir, err := os.MkdirTemp("", "ts")
			if err != nil {
				return err
			}
			e.Defer(func() { os.RemoveAll(sockDir) })
			e.Setenv("PATH", binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
			e.Setenv("TCPOPS_SOCKET", filepath.Join(sockDir, "s"))
			for i := 1; i <= 3; i++ {
				p, err := freePort()
				if err != nil {
					return err
				}
				e.Setenv("PORT"+strconv.Itoa(i), p)
			}
			e.Values[connsKey{}] = &conns{m: map[string]*net.TCPConn{}}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitdaemon": cmdWaitDaemon,
			"dial":       cmdDial,
			"send":       cmdSend,
			"recv":       cmdRecv,
			"fin":        cmdFin,
			"rst":        cmdRst,
			"conid":      cmdConid,
			"waitseq":    cmdWaitSeq,
			"sleep":      cmdSleep,
		},
	})
}

type connsKey struct{}

type conns struct {
	mu sync.Mutex
	m  map[string]*net.TCPConn
}

func getConns(ts *testscript.TestScript) *conns { return ts.Value(connsKey{}).(*conns) }

func (c *conns) get(ts *testscript.TestScript, name string) *net.TCPConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	tc, ok := c.m[name]
	if !ok {
		ts.Fatalf("no connection named %s (dial it first)", name)
	}
	return tc
}

func client(ts *testscript.TestScript) (*rpc.Client, context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	c, err := rpc.Dial(ctx, ts.Getenv("TCPOPS_SOCKET"))
	if err != nil {
		cancel()
		ts.Fatalf("%v", err)
	}
	return c, ctx, func() { c.Close(); cancel() }
}

// waitdaemon waits until the daemon answers on $TCPOPS_SOCKET.
func cmdWaitDaemon(ts *testscript.TestScript, neg bool, args []string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := rpc.Dial(ctx, ts.Getenv("TCPOPS_SOCKET"))
		if err == nil {
			_, err = c.Stats(ctx)
			c.Close()
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("daemon not answering: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dial NAME HOST:PORT opens a TCP connection.
func cmdDial(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: dial NAME HOST:PORT")
	}
	c, err := net.Dial("tcp", args[1])
	ts.Check(err)
	cs := getConns(ts)
	cs.mu.Lock()
	cs.m[args[0]] = c.(*net.TCPConn)
	cs.mu.Unlock()
	ts.Defer(func() { c.Close() })
}

// send NAME TEXT writes TEXT and a newline.
func cmdSend(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: send NAME TEXT")
	}
	_, err := getConns(ts).get(ts, args[0]).Write([]byte(args[1] + "\n"))
	ts.Check(err)
}

// recv NAME TEXT reads one line and checks it is TEXT.
func cmdRecv(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: recv NAME TEXT")
	}
	c := getConns(ts).get(ts, args[0])
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b []byte
	one := make([]byte, 1)
	for {
		_, err := c.Read(one)
		ts.Check(err)
		if one[0] == '\n' {
			break
		}
		b = append(b, one[0])
	}
	if string(b) != args[1] {
		ts.Fatalf("%s received %q, want %q", args[0], b, args[1])
	}
}

// fin NAME closes the connection (FIN).
func cmdFin(ts *testscript.TestScript, neg bool, args []string) {
	ts.Check(getConns(ts).get(ts, args[0]).Close())
}

// rst NAME resets the connection (RST).
func cmdRst(ts *testscript.TestScript, neg bool, args []string) {
	c := getConns(ts).get(ts, args[0])
	c.SetLinger(0)
	ts.Check(c.Close())
}

// conid NAME VAR [PEERVAR] sets VAR to the conid of the inbound leg of
// connection NAME, and PEERVAR to its outbound leg's.
func cmdConid(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: conid NAME VAR [PEERVAR]")
	}
	local := getConns(ts).get(ts, args[0]).LocalAddr().String()
	c, ctx, done := client(ts)
	defer done()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := c.List(ctx, rpc.ListParams{Remote: local, Direction: "in"})
		ts.Check(err)
		if len(r.Connections) == 1 && (len(args) < 3 || r.Connections[0].Peer != 0) {
			ts.Setenv(args[1], strconv.FormatUint(r.Connections[0].ConnID, 10))
			if len(args) == 3 {
				ts.Setenv(args[2], strconv.FormatUint(r.Connections[0].Peer, 10))
			}
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("no connection from %s in the daemon's table", local)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitseq N waits until the daemon has published event seq N.
func cmdWaitSeq(ts *testscript.TestScript, neg bool, args []string) {
	want, err := strconv.ParseUint(args[0], 10, 64)
	ts.Check(err)
	c, ctx, done := client(ts)
	defer done()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Stats(ctx)
		ts.Check(err)
		if st.EventSeq >= want {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("event seq %d, want %d", st.EventSeq, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sleep DURATION.
func cmdSleep(ts *testscript.TestScript, neg bool, args []string) {
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	time.Sleep(d)
}
