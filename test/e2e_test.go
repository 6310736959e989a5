// Package test holds end-to-end tests: the real tcpops and tcpopsctl
// binaries, built once, driven by scripts as a person would type them,
// with real TCP clients on 127.0.0.1.
package test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rogpeppe/go-internal/testscript"
	"go.uber.org/goleak"

	"github.com/tcpops/tcpops/internal/testcert"
	"github.com/tcpops/tcpops/internal/testutil"
	rpcclient "github.com/tcpops/tcpops/rpc/client"

	"github.com/tcpops/tcpops/rpc"
)

var binDir string

func TestMain(m *testing.M) {
	if dir := os.Getenv("TCPOPS_TEST_BINDIR"); dir != "" {
		// A test re-run in a network namespace uses its parent's binaries.
		binDir = dir
		os.Exit(m.Run())
	}
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
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// freePort returns a port that was free a moment ago on 127.0.0.1, for a
// daemon to listen on. It is taken below the kernel's ephemeral range
// (32768 and up), where other tests' port-0 listeners and every client
// connection's local port come from, and never twice in this process.
func freePort() (string, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := 20000 + rand.IntN(12000)
		if ports[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		ports[p] = true
		return strconv.Itoa(p), nil
	}
	return "", errors.New("no free port in 20000-32000")
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
			for i := 1; i <= 4; i++ {
				p, err := freePort()
				if err != nil {
					return err
				}
				e.Setenv("PORT"+strconv.Itoa(i), p)
			}
			e.Values[connsKey{}] = &conns{m: map[string]*client{}}
			e.Values[certKey{}] = &certHolder{}
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
			"waitgrep":   cmdWaitGrep,
			"gencert":    cmdGenCert,
		},
	})
}

type connsKey struct{}

type conns struct {
	mu sync.Mutex
	m  map[string]*client
}

// client is a connection made by dial: tcp, tls, ws or wss.
type client struct {
	net.Conn                 // what is written and read: bytes, or messages for ws
	tcp      *net.TCPConn    // the socket under it
	ws       *websocket.Conn // for ws and wss
}

func getConns(ts *testscript.TestScript) *conns { return ts.Value(connsKey{}).(*conns) }

func (c *conns) get(ts *testscript.TestScript, name string) *client {
	c.mu.Lock()
	defer c.mu.Unlock()
	tc, ok := c.m[name]
	if !ok {
		ts.Fatalf("no connection named %s (dial it first)", name)
	}
	return tc
}

// rpcClient dials the daemon; the context bounds the dial and every call
// a command makes while it waits.
func rpcClient(ts *testscript.TestScript) (*rpcclient.Client, context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Timeout)
	c, err := rpcclient.Dial(ctx, ts.Getenv("TCPOPS_SOCKET"))
	if err != nil {
		cancel()
		ts.Fatalf("%v", err)
	}
	return c, ctx, func() { c.Close(); cancel() }
}

// waitdaemon waits until the daemon answers on $TCPOPS_SOCKET.
func cmdWaitDaemon(ts *testscript.TestScript, neg bool, args []string) {
	var err error
	if !testutil.Until(func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var c *rpcclient.Client
		if c, err = rpcclient.Dial(ctx, ts.Getenv("TCPOPS_SOCKET")); err != nil {
			return false
		}
		defer c.Close()
		_, err = c.Stats(ctx)
		return err == nil
	}) {
		ts.Fatalf("daemon not answering: %v", err)
	}
}

// dial NAME [SCHEME://]HOST:PORT[/PATH] opens a connection: tcp (the
// default), tls, ws or wss; tls and wss trust the certificate of gencert.
func cmdDial(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: dial NAME [SCHEME://]HOST:PORT[/PATH]")
	}
	scheme, rest, ok := strings.Cut(args[1], "://")
	if !ok {
		scheme, rest = "tcp", args[1]
	}
	var tcp *net.TCPConn
	dialTCP := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			tcp = c.(*net.TCPConn)
		}
		return c, err
	}
	cl := &client{}
	switch scheme {
	case "tcp":
		c, err := dialTCP(context.Background(), "tcp", rest)
		ts.Check(err)
		cl.Conn = c
	case "tls":
		c, err := dialTCP(context.Background(), "tcp", rest)
		ts.Check(err)
		cl.Conn = tls.Client(c, clientTLS(ts))
	case "ws", "wss":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tr := &http.Transport{DialContext: dialTCP}
		if scheme == "wss" {
			tr.TLSClientConfig = clientTLS(ts)
		}
		ws, _, err := websocket.Dial(ctx, args[1], &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
		ts.Check(err)
		cl.ws = ws
		cl.Conn = websocket.NetConn(context.Background(), ws, websocket.MessageText)
	default:
		ts.Fatalf("dial: scheme %q: want tcp, tls, ws or wss", scheme)
	}
	cl.tcp = tcp
	cs := getConns(ts)
	cs.mu.Lock()
	cs.m[args[0]] = cl
	cs.mu.Unlock()
	ts.Defer(func() { cl.Close() })
}

func clientTLS(ts *testscript.TestScript) *tls.Config {
	c := ts.Value(certKey{}).(*certHolder).c
	if c == nil {
		ts.Fatalf("run gencert before dialling tls or wss")
	}
	return c.Client
}

type certKey struct{}

type certHolder struct{ c *testcert.Cert }

// waitgrep FILE REGEXP waits until FILE, the output of a command running
// in the background, say, matches REGEXP (multi-line, as stdout does).
func cmdWaitGrep(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: waitgrep FILE REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	path := ts.MkAbs(args[0])
	var b []byte
	if !testutil.Until(func() bool {
		b, _ = os.ReadFile(path)
		return re.Match(b)
	}) {
		ts.Fatalf("no match for %q in %s after %v:\n%s", args[1], args[0], testutil.Timeout, b)
	}
}

// gencert writes a certificate for 127.0.0.1 into $WORK and sets $CERT
// and $KEY.
func cmdGenCert(ts *testscript.TestScript, neg bool, args []string) {
	c, err := testcert.Write(ts.Getenv("WORK"))
	ts.Check(err)
	ts.Setenv("CERT", c.CertFile)
	ts.Setenv("KEY", c.KeyFile)
	ts.Value(certKey{}).(*certHolder).c = c
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
	c.tcp.SetLinger(0)
	ts.Check(c.tcp.Close())
}

// conid NAME VAR [PEERVAR] sets VAR to the conid of the inbound leg of
// connection NAME, and PEERVAR to its outbound leg's.
func cmdConid(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: conid NAME VAR [PEERVAR]")
	}
	local := getConns(ts).get(ts, args[0]).tcp.LocalAddr().String()
	c, ctx, done := rpcClient(ts)
	defer done()
	var in rpc.Conn
	if !testutil.Until(func() bool {
		r, err := c.List(ctx, rpc.ListParams{Remote: local, Direction: "in"})
		ts.Check(err)
		if len(r.Connections) != 1 || (len(args) == 3 && r.Connections[0].Peer == 0) {
			return false
		}
		in = r.Connections[0]
		return true
	}) {
		ts.Fatalf("no connection from %s in the daemon's table", local)
	}
	ts.Setenv(args[1], strconv.FormatUint(in.ConnID, 10))
	if len(args) == 3 {
		ts.Setenv(args[2], strconv.FormatUint(in.Peer, 10))
	}
}

// waitseq N waits until the daemon has published event seq N.
func cmdWaitSeq(ts *testscript.TestScript, neg bool, args []string) {
	want, err := strconv.ParseUint(args[0], 10, 64)
	ts.Check(err)
	c, ctx, done := rpcClient(ts)
	defer done()
	var st rpc.Stats
	if !testutil.Until(func() bool {
		var err error
		st, err = c.Stats(ctx)
		ts.Check(err)
		return st.EventSeq >= want
	}) {
		ts.Fatalf("event seq %d, want %d", st.EventSeq, want)
	}
}
