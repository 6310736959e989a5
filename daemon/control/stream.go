package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tcpops/tcpops/rpc"
)

// stream is newline-delimited JSON over a socket, as a person types it
// into socat. Unlike the library's plain stream it caps a line at MaxLine,
// answers unparseable or malformed requests itself (-32700, -32600,
// -32602 for positional params) and keeps the connection for the next line,
// and puts a deadline on every write so a peer that stops reading is cut
// off instead of blocking its writer.
type stream struct {
	conn         net.Conn
	r            *bufio.Reader
	maxLine      int // longest line read; 0: no limit
	writeTimeout time.Duration
	onBad        func(code int) // counts rejected lines; may be nil
	onTimeout    func()         // counts writes that missed their deadline; may be nil
	idleTimeout  time.Duration  // longest wait for the next request, unless following
	onIdle       func()         // counts connections closed for idling; may be nil
	following    atomic.Bool    // an events follower streams on this connection

	// wmu guards writes.
	wmu sync.Mutex
}

func newStream(c net.Conn, writeTimeout time.Duration) *stream {
	return &stream{conn: c, r: bufio.NewReaderSize(c, 64<<10), maxLine: rpc.MaxLine, writeTimeout: writeTimeout}
}

// errLineTooLong ends the connection after its -32600 answer.
var errLineTooLong = fmt.Errorf("request line over %d bytes", rpc.MaxLine)

// WriteObject writes one JSON value and a newline.
func (s *stream) WriteObject(v any) error {
	b, err := marshal(v)
	if err != nil {
		return err
	}
	return s.writeLine(b)
}

// marshal encodes v without HTML escaping and without a newline.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// writeResult writes a successful response. The result is encoded once
// and framed here: going through the library would encode it, then
// validate and copy it twice more, which for a list of 10,000 connections
// (megabytes) was most of the daemon's time. A rawJSON result is written
// as it is.
func (s *stream) writeResult(id jsonrpc2.ID, res any) error {
	raw, ok := res.(rawJSON)
	if !ok {
		var err error
		if raw, err = marshal(res); err != nil {
			return err
		}
	}
	idb, err := id.MarshalJSON()
	if err != nil {
		return err
	}
	head := make([]byte, 0, len(idb)+32)
	head = append(head, `{"jsonrpc":"2.0","id":`...)
	head = append(head, idb...)
	head = append(head, `,"result":`...)
	return s.write(head, raw, []byte("}\n"))
}

func (s *stream) writeLine(b []byte) error {
	if len(b) == 0 || b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	return s.write(b)
}

// write writes parts as one line (writev: a large result is not copied).
func (s *stream) write(parts ...[]byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.writeTimeout > 0 {
		s.conn.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	}
	bufs := net.Buffers(parts)
	_, err := bufs.WriteTo(s.conn)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() && s.onTimeout != nil {
		s.onTimeout()
	}
	return err
}

// readLine reads one line of at most MaxLine bytes (without the newline).
func (s *stream) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, err := s.r.ReadSlice('\n')
		if s.maxLine > 0 && len(line)+len(chunk) > s.maxLine+1 {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return bytes.TrimRight(line, "\r\n"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(bytes.TrimSpace(line)) > 0:
			return line, nil // a last line without newline
		}
		return nil, err
	}
}

// probe is the shape check of a request before the library sees it.
type probe struct {
	JSONRPC *string          `json:"jsonrpc"`
	Method  *json.RawMessage `json:"method"`
	ID      *json.RawMessage `json:"id"`
	Params  *json.RawMessage `json:"params"`
	Result  *json.RawMessage `json:"result"`
	Error   *json.RawMessage `json:"error"`
}

// ReadObject reads the next well-formed message into v, answering bad lines.
// A server connection that sends no complete request for idleTimeout
// (nothing, or half a line) is closed, unless it follows events.
func (s *stream) ReadObject(v any) error {
	for {
		if s.idleTimeout > 0 {
			if s.following.Load() {
				s.conn.SetReadDeadline(time.Time{})
			} else {
				s.conn.SetReadDeadline(time.Now().Add(s.idleTimeout))
			}
		}
		line, err := s.readLine()
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() && s.onIdle != nil {
			s.onIdle()
		}
		if err == errLineTooLong {
			s.reject(nil, rpc.CodeInvalidRequest, err.Error()+"; the connection is closed")
			return err
		}
		if err != nil {
			return err
		}
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) == 0 {
			continue
		}
		if id, code, msg := check(trimmed); code != 0 {
			s.reject(id, code, msg)
			continue
		}
		if err := json.Unmarshal(trimmed, v); err != nil {
			s.reject(nil, rpc.CodeInvalidRequest, "invalid request: "+err.Error())
			continue
		}
		return nil
	}
}

// check returns a code and message when line is not a request we serve,
// with the request's id when it has a usable one.
func check(line []byte) (id json.RawMessage, code int, msg string) {
	if !json.Valid(line) {
		var x any
		err := json.Unmarshal(line, &x)
		return nil, rpc.CodeParseError, "parse error: " + err.Error()
	}
	switch line[0] {
	case '[':
		return nil, rpc.CodeInvalidRequest, "batch requests are not supported: send one request object per line"
	case '{':
	default:
		return nil, rpc.CodeInvalidRequest, "invalid request: want a JSON object such as {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tcpops.stats\"}"
	}
	var p probe
	if err := json.Unmarshal(line, &p); err != nil {
		return nil, rpc.CodeInvalidRequest, "invalid request: " + err.Error()
	}
	if p.ID != nil {
		switch raw := bytes.TrimSpace(*p.ID); {
		case string(raw) == "null":
		case raw[0] == '"':
			id = raw
		default:
			var n uint64
			if err := json.Unmarshal(raw, &n); err != nil {
				return nil, rpc.CodeInvalidRequest, "invalid request: id must be a string or a non-negative integer, got " + string(raw)
			}
			id = raw
		}
	}
	if p.JSONRPC != nil && *p.JSONRPC != "2.0" {
		return id, rpc.CodeInvalidRequest, fmt.Sprintf("invalid request: jsonrpc must be \"2.0\", got %q", *p.JSONRPC)
	}
	if p.Result != nil || p.Error != nil {
		return id, rpc.CodeInvalidRequest, "invalid request: the daemon takes requests, not responses"
	}
	if p.Method == nil {
		return id, rpc.CodeInvalidRequest, "invalid request: method is missing"
	}
	var m string
	if err := json.Unmarshal(*p.Method, &m); err != nil {
		return id, rpc.CodeInvalidRequest, "invalid request: method must be a string, got " + string(*p.Method)
	}
	if p.Params != nil {
		raw := bytes.TrimSpace(*p.Params)
		if string(raw) != "null" && raw[0] != '{' {
			return id, rpc.CodeInvalidParams, "invalid params: params must be an object of named params, such as {\"conid\":42}"
		}
	}
	return id, 0, ""
}

// reject answers a line that never reached a handler.
func (s *stream) reject(id json.RawMessage, code int, msg string) {
	if s.onBad != nil {
		s.onBad(code)
	}
	if id == nil {
		id = json.RawMessage("null")
	}
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpc.Error       `json:"error"`
	}{"2.0", id, rpc.Error{Code: int64(code), Message: msg}})
	s.writeLine(b)
}

// Close closes the socket.
func (s *stream) Close() error { return s.conn.Close() }
