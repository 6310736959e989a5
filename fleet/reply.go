package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/klauspost/compress/gzip"
	"github.com/nats-io/nats.go"

	"github.com/tcpops/tcpops/rpc"
)

// On NATS a request is the JSON-RPC request object of the control socket,
// and its reply the JSON-RPC response object: `nats req tcpops.rpc.HOST
// '{"method":"tcpops.stats"}'` works as typed. A reply larger than
// compressAbove is gzipped for a caller that sends Accept-Encoding: gzip
// (tcpopsctl does), and one still larger than the server's max_payload is
// cut into several messages to the reply subject, in order, the first
// saying how many.

const (
	compressAbove = 32 << 10
	// headroom is what a reply's headers may take of max_payload.
	headroom = 4 << 10
	// maxReply bounds a reassembled reply (a list of 20,000 connections,
	// the most one daemon holds, is about 10 MB).
	maxReply = 256 << 20
)

// Request is a JSON-RPC request as a daemon reads it from NATS.
type Request struct {
	JSONRPC *string         `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// ParseRequest reads a request; a bad one is answered with the error
// (with the request's id when it has one).
func ParseRequest(data []byte) (*Request, *rpc.Error) {
	var r Request
	if !json.Valid(data) {
		return &r, &rpc.Error{Code: rpc.CodeParseError, Message: "parse error: not JSON; send one JSON-RPC request object such as {\"method\":\"tcpops.stats\"}"}
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return &Request{}, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "invalid request: want a JSON object such as {\"method\":\"tcpops.stats\"}"}
	}
	switch {
	case r.JSONRPC != nil && *r.JSONRPC != "2.0":
		return &r, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: fmt.Sprintf("invalid request: jsonrpc must be \"2.0\", got %q", *r.JSONRPC)}
	case r.Method == nil:
		return &r, &rpc.Error{Code: rpc.CodeInvalidRequest, Message: "invalid request: method is missing"}
	}
	if p := bytes.TrimSpace(r.Params); len(p) > 0 && string(p) != "null" && p[0] != '{' {
		return &r, &rpc.Error{Code: rpc.CodeInvalidParams, Message: "invalid params: params must be an object of named params, such as {\"conid\":42}"}
	}
	return &r, nil
}

// EncodeRequest is the request tcpopsctl sends.
func EncodeRequest(method string, params json.RawMessage) []byte {
	m, _ := json.Marshal(method)
	b := make([]byte, 0, len(params)+len(m)+48)
	b = append(b, `{"jsonrpc":"2.0","id":1,"method":`...)
	b = append(b, m...)
	if len(params) > 0 {
		b = append(b, `,"params":`...)
		b = append(b, params...)
	}
	return append(b, '}')
}

// Response is a JSON-RPC response.
func Response(id json.RawMessage, result json.RawMessage, e *rpc.Error) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	b := make([]byte, 0, len(result)+len(id)+64)
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, id...)
	if e != nil {
		eb, _ := json.Marshal(e)
		b = append(b, `,"error":`...)
		b = append(b, eb...)
	} else {
		b = append(b, `,"result":`...)
		b = append(b, result...)
	}
	return append(b, '}')
}

// EncodeReply cuts a response into messages of at most maxPayload bytes,
// compressed first if gzipOK and it is large. Only the first has headers.
func EncodeReply(body []byte, gzipOK bool, maxPayload int64) ([]*nats.Msg, error) {
	h := nats.Header{}
	if gzipOK && len(body) > compressAbove {
		var b bytes.Buffer
		b.Grow(len(body) / 8)
		w, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
		if _, err := w.Write(body); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		body = b.Bytes()
		h.Set(HeaderEncoding, "gzip")
	}
	size := int(max(maxPayload-headroom, 1024))
	n := (len(body) + size - 1) / size
	if n > 1 {
		h.Set(HeaderChunks, strconv.Itoa(n))
	}
	msgs := make([]*nats.Msg, 0, max(n, 1))
	for i := 0; i < len(body) || i == 0; i += size {
		m := &nats.Msg{Data: body[i:min(i+size, len(body))]}
		if i == 0 {
			m.Header = h
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// DecodeReply puts a reply together from its first message and, when it
// was cut, the ones next returns, and reads the response: the result, or
// the daemon's error as an *rpc.Error.
func DecodeReply(first *nats.Msg, next func() (*nats.Msg, error)) (json.RawMessage, error) {
	body := first.Data
	if s := first.Header.Get(HeaderChunks); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxReply/1024 {
			return nil, fmt.Errorf("bad %s header %q in the reply", HeaderChunks, s)
		}
		body = append([]byte(nil), first.Data...)
		for i := 1; i < n; i++ {
			m, err := next()
			if err != nil {
				return nil, fmt.Errorf("reply part %d of %d: %w", i+1, n, err)
			}
			if len(body)+len(m.Data) > maxReply {
				return nil, fmt.Errorf("reply over %d bytes", maxReply)
			}
			body = append(body, m.Data...)
		}
	}
	if first.Header.Get(HeaderEncoding) == "gzip" {
		r, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("compressed reply: %w", err)
		}
		out, err := io.ReadAll(io.LimitReader(r, maxReply+1))
		if err != nil {
			return nil, fmt.Errorf("compressed reply: %w", err)
		}
		if len(out) > maxReply {
			return nil, fmt.Errorf("reply over %d bytes", maxReply)
		}
		body = out
	}
	var resp struct {
		Result json.RawMessage `json:"result"`
		Error  *rpc.Error      `json:"error"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("reply is not a JSON-RPC response: %w", err)
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	if resp.Result == nil {
		return nil, errors.New("reply is not a JSON-RPC response: no result and no error")
	}
	return resp.Result, nil
}
