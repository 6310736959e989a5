package control

import (
	"encoding/json"
	"fmt"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tcpops/tcpops/rpc"
)

// Caller is who makes a request that did not come over the control socket.
type Caller struct {
	// Via names the way the request came (nats), for the audit log.
	Via string
	// Attrs are what the audit log records of the caller (key, value, ...),
	// such as the NATS user.
	Attrs []any
	// Admin tells whether the caller may change connections; a changing
	// method from any other caller is refused with -32003, the refusal
	// ending with DenyHint when set.
	Admin    bool
	DenyHint string
}

// Do answers one request that came another way than the control socket
// (over NATS): the result as JSON, or the error as the wire carries it.
// Access, the audit log and metrics are those of the socket; following
// events needs a connection to stream on and is refused.
func (s *Server) Do(method string, params json.RawMessage, c Caller) (json.RawMessage, *rpc.Error) {
	var res any
	var err error
	var p *json.RawMessage
	if params != nil {
		p = &params
	}
	cl := &call{s: s, params: p}
	m, ok := s.methods[method]
	who := append([]any{"via", c.Via}, c.Attrs...)
	switch {
	case !ok:
		err = &jsonrpc2.Error{Code: rpc.CodeMethodNotFound, Message: fmt.Sprintf("unknown method %q (system.listMethods lists them)", method)}
	case !m.readOnly && !c.Admin:
		hint := "this caller may only read"
		if c.DenyHint != "" {
			hint = c.DenyHint
		}
		err = &jsonrpc2.Error{Code: rpc.CodeDenied, Message: fmt.Sprintf("permission denied: %s changes connections; %s", m.name, hint)}
		if c.DenyHint != "" {
			// Pointing the caller elsewhere is routine, not a refusal.
			s.log.Debug("rpc denied", append(who, "method", m.name)...)
		} else {
			s.log.Warn("rpc denied", append(who, "method", m.name)...)
		}
	default:
		cl.m = m
		if !m.readOnly {
			s.log.Info("rpc", append(who, "method", m.name, "params", rawString(p))...)
		}
		res, err = m.fn(cl)
	}
	rerr := s.answered(method, err)
	if rerr != nil {
		return nil, &rpc.Error{Code: int64(rerr.Code), Message: rerr.Message}
	}
	if cl.after != nil {
		defer cl.after() // what the socket does once the reply is written
	}
	if raw, ok := res.(rawJSON); ok {
		return json.RawMessage(raw), nil
	}
	b, err := marshal(res)
	if err != nil {
		rerr = s.rpcError(err)
		return nil, &rpc.Error{Code: int64(rerr.Code), Message: rerr.Message}
	}
	return b, nil
}
