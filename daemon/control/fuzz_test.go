package control

import (
	"bufio"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
)

var (
	fuzzOnce   sync.Once
	fuzzServer *Server
)

// fuzzSrv is one server over a table with a few socketless connections,
// shared by the iterations of a fuzz worker.
func fuzzSrv(t testing.TB) *Server {
	fuzzOnce.Do(func() {
		tb := conn.NewTable(conn.Config{EventBuffer: 64})
		for i := range 4 {
			tb.Add(conn.Spec{Proto: "tcp", Direction: conn.DirIn, State: conn.StateOK,
				Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 5060),
				Close:  func(*conn.Conn, bool) error { return nil }})
		}
		s, err := NewServer(Config{Table: tb, WriteTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		fuzzServer = s
	})
	return fuzzServer
}

// socketPair returns two connected Unix stream sockets.
func socketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conv(fds[0]), conv(fds[1])
}

// codes a request line may be answered with; -32603 would be a bug.
var fuzzCodes = map[int]bool{rpc.CodeParseError: true, rpc.CodeInvalidRequest: true, rpc.CodeMethodNotFound: true,
	rpc.CodeInvalidParams: true, rpc.CodeNotFound: true, rpc.CodeSocket: true}

// FuzzRequest sends arbitrary lines to a real server: every answer is a
// well-formed response with a known code, never an internal error, and
// the connection keeps serving (a sentinel request is always answered).
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tcpops.state","params":{"conid":1}}`,
		`{"id":2,"method":"tcpops.keepalive","params":{"conid":1,"idle":60,"count":5,"interval":5}}`,
		`{"id":3,"method":"tcpops.lifetime","params":{"conid":2,"lifetime":0.5}}`,
		`{"id":4,"method":"tcpops.list","params":{"state":"ok","remote":"10.0.0.0/8","limit":2,"after":1}}`,
		`{"id":5,"method":"tcpops.events","params":{"since":0,"reason":["eof"]}}`,
		`{"id":6,"method":"tcpops.close","params":{"conid":3,"reset":true}}`,
		`{"id":7,"method":"system.methodHelp","params":{"method":"tcpops.info"}}`,
		`{"id":8,"method":"tcpops.closed_event","params":{"conid":4,"enable":false}}`,
		`[{"id":1,"method":"tcpops.stats"}]`, `{"id":{},"method":"x"}`, `{"method":5}`, `garbage`, `{"id":1,"method":"tcpops.state","params":[1]}`,
		`{"id":"s","method":"tcpops.info","params":{"conid":18446744073709551615}}`, `{"id":1,"method":"tcpops.list","params":{"idle_min":-1e308}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if len(line) > 4096 {
			return
		}
		srv := fuzzSrv(t)
		a, b := socketPair(t)
		defer b.Close()
		srv.ServeConn(a)
		b.SetDeadline(time.Now().Add(5 * time.Second))
		line = strings.ReplaceAll(line, `"follow"`, `"x"`) // a follower would keep streaming
		if _, err := b.Write([]byte(line + "\n" + `{"id":"sentinel","method":"core.version"}` + "\n")); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(b)
		for {
			s, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("connection ended before the sentinel was answered: %v (line %q)", err, line)
			}
			var rep struct {
				ID     json.RawMessage `json:"id"`
				Result json.RawMessage `json:"result"`
				Error  *struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(s), &rep); err != nil {
				t.Fatalf("reply %q is not JSON: %v", s, err)
			}
			if string(rep.ID) == `"sentinel"` {
				return
			}
			switch {
			case rep.Error != nil && !fuzzCodes[rep.Error.Code]:
				t.Fatalf("line %q: code %d (%s)", line, rep.Error.Code, rep.Error.Message)
			case rep.Error != nil && rep.Error.Message == "":
				t.Fatalf("line %q: error without a message", line)
			case rep.Error == nil && rep.Result == nil:
				t.Fatalf("line %q: reply %q has neither result nor error", line, s)
			}
		}
	})
}
