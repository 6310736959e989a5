package client

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tcpops/tcpops/rpc"
)

// TestMain fails the package when a test leaves goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeDaemon answers each request line on a Unix socket with the line
// answer returns for it, and returns the socket's path.
func fakeDaemon(t *testing.T, answer func(req string) string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			req, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(answer(req) + "\n")); err != nil {
				return
			}
		}
	}()
	return path
}

func TestCall(t *testing.T) {
	tests := []struct {
		name     string
		answer   string
		wantCode int64 // 0: no error
	}{
		{"result", `{"jsonrpc":"2.0","id":1,"result":{"conid":7,"state":1,"state_name":"ok"}}`, 0},
		{"error", `{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"param conid of tcpops.state: conids start at 1"}}`, rpc.CodeInvalidParams},
		{"notification first", `{"jsonrpc":"2.0","method":"tcpops.event","params":{}}` + "\n" + `{"jsonrpc":"2.0","id":1,"result":{"conid":7,"state":1,"state_name":"ok"}}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent := make(chan string, 1)
			path := fakeDaemon(t, func(req string) string { sent <- req; return tt.answer })
			c, err := Dial(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r, err := c.State(t.Context(), 7)
			if got, want := <-sent, `{"jsonrpc":"2.0","id":1,"method":"tcpops.state","params":{"conid":7}}`+"\n"; got != want {
				t.Errorf("sent %q, want %q", got, want)
			}
			var re *rpc.Error
			switch {
			case tt.wantCode == 0 && (err != nil || r.ConnID != 7 || r.StateName != "ok"):
				t.Errorf("got %+v, %v; want conid 7 ok", r, err)
			case tt.wantCode != 0 && (!errors.As(err, &re) || re.Code != tt.wantCode):
				t.Errorf("got error %v, want an *rpc.Error with code %d", err, tt.wantCode)
			}
		})
	}
}

func TestDisconnected(t *testing.T) {
	path := fakeDaemon(t, func(string) string { return "not json" })
	c, err := Dial(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Stats(t.Context()); !errors.Is(err, ErrDisconnected) {
		t.Errorf("got %v, want ErrDisconnected", err)
	}
}

func TestDialError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none")
	_, err := Dial(context.Background(), path)
	var de *DialError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "no such file (is the daemon running?") {
		t.Errorf("got %v, want a DialError saying no such file with the hint", err)
	}
}
