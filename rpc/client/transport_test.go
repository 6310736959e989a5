package client

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/tcpops/tcpops/rpc"
)

// fakeTransport answers from a table and records what it was sent.
type fakeTransport struct {
	method string
	params string
	result string
	err    error
	closed bool
}

func (f *fakeTransport) RoundTrip(_ context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	f.method, f.params = method, string(params)
	return json.RawMessage(f.result), f.err
}

func (f *fakeTransport) Close() error { f.closed = true; return nil }

func TestTransport(t *testing.T) {
	f := &fakeTransport{result: `{"conid":7,"state":1,"state_name":"ok"}`}
	c := New(f, "host a")
	st, err := c.State(t.Context(), 7)
	if err != nil {
		t.Fatal(err)
	}
	if f.method != rpc.MethodState || f.params != `{"conid":7}` {
		t.Errorf("sent %s %s, want %s {\"conid\":7}", f.method, f.params, rpc.MethodState)
	}
	if st.ConnID != 7 || st.StateName != "ok" {
		t.Errorf("got %+v, want conid 7 ok", st)
	}
	var raw json.RawMessage
	if err := c.Call(t.Context(), "x.y", map[string]any{"select": map[string]bool{"all": true}}, &raw); err != nil || string(raw) != f.result {
		t.Errorf("raw call: %s, %v", raw, err)
	}
	if f.params != `{"select":{"all":true}}` {
		t.Errorf("params sent %s, want them unchanged", f.params)
	}
	f.err = &rpc.Error{Code: rpc.CodeNotFound, Message: "conid 9: not found"}
	_, err = c.Alive(t.Context(), 9)
	var je *rpc.Error
	if !errors.As(err, &je) || je.Code != rpc.CodeNotFound {
		t.Errorf("got %v, want the transport's *rpc.Error", err)
	}
	err = c.Follow(t.Context(), t.Context(), rpc.EventsParams{}, nil, nil)
	if !errors.Is(err, ErrNoFollow) {
		t.Errorf("follow: got %v, want ErrNoFollow", err)
	}
	c.Close()
	if !f.closed {
		t.Error("Close did not close the transport")
	}
}
