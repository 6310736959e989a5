package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/tcpops/tcpops/rpc"
)

func TestReplyRoundTrip(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"connections":[`)
	for i := range 30000 {
		fmt.Fprintf(&b, `{"conid":%d,"proto":"tcp","remote":"192.0.2.%d:%d"},`, i+1, i%250, 1024+i*7%60000)
	}
	big := b.String() + `{"conid":0}]}`
	tests := []struct {
		name       string
		result     string
		gzip       bool
		maxPayload int64
		msgs       int
		encoding   string
	}{
		{name: "small", result: `{"conid":1}`, gzip: true, maxPayload: 1 << 20, msgs: 1},
		{name: "large, gzip", result: big, gzip: true, maxPayload: 1 << 20, msgs: 1, encoding: "gzip"},
		{name: "large, plain, cut", result: big, gzip: false, maxPayload: 1 << 20, msgs: 2},
		{name: "large, gzip, cut", result: big, gzip: true, maxPayload: 8 << 10, msgs: 3, encoding: "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := Response(json.RawMessage(`7`), json.RawMessage(tt.result), nil)
			msgs, err := EncodeReply(body, tt.gzip, tt.maxPayload)
			if err != nil {
				t.Fatal(err)
			}
			if tt.msgs > 1 && len(msgs) < tt.msgs || tt.msgs == 1 && len(msgs) != 1 {
				t.Fatalf("%d messages, want %d or more", len(msgs), tt.msgs)
			}
			for i, m := range msgs {
				if int64(len(m.Data)) > tt.maxPayload-headroom && tt.maxPayload-headroom >= 1024 {
					t.Errorf("message %d: %d bytes, over %d", i, len(m.Data), tt.maxPayload-headroom)
				}
			}
			if got := msgs[0].Header.Get(HeaderEncoding); got != tt.encoding {
				t.Errorf("encoding %q, want %q", got, tt.encoding)
			}
			i := 0
			raw, err := DecodeReply(msgs[0], func() (*nats.Msg, error) {
				i++
				if i >= len(msgs) {
					return nil, errors.New("no more")
				}
				return msgs[i], nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if string(raw) != tt.result {
				t.Errorf("result of %d bytes differs from the %d sent", len(raw), len(tt.result))
			}
		})
	}
}

func TestReplyErrors(t *testing.T) {
	body := Response(nil, nil, &rpc.Error{Code: rpc.CodeNotFound, Message: "conid 9: not found"})
	if got, want := string(body), `{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"conid 9: not found"}}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	_, err := DecodeReply(&nats.Msg{Data: body}, nil)
	var je *rpc.Error
	if !errors.As(err, &je) || je.Code != rpc.CodeNotFound {
		t.Errorf("got %v, want the *rpc.Error", err)
	}
	for _, data := range []string{`garbage`, `{"jsonrpc":"2.0"}`} {
		if _, err := DecodeReply(&nats.Msg{Data: []byte(data)}, nil); err == nil || errors.As(err, &je) {
			t.Errorf("%s: got %v, want a framing error", data, err)
		}
	}
	// A cut reply whose parts do not come.
	m := &nats.Msg{Data: []byte(`{"jsonrpc"`), Header: nats.Header{HeaderChunks: {"2"}}}
	if _, err := DecodeReply(m, func() (*nats.Msg, error) { return nil, errors.New("timeout") }); err == nil || !strings.Contains(err.Error(), "part 2 of 2") {
		t.Errorf("got %v, want part 2 of 2 missing", err)
	}
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		in     string
		code   int64
		method string
		id     string
	}{
		{in: `{"method":"tcpops.stats"}`, method: "tcpops.stats"},
		{in: `{"jsonrpc":"2.0","id":"x","method":"tcpops.state","params":{"conid":1}}`, method: "tcpops.state", id: `"x"`},
		{in: `nope`, code: rpc.CodeParseError},
		{in: `[1]`, code: rpc.CodeInvalidRequest},
		{in: `{"jsonrpc":"1.0","method":"a"}`, code: rpc.CodeInvalidRequest},
		{in: `{"id":3}`, code: rpc.CodeInvalidRequest, id: "3"},
		{in: `{"method":"a","params":[1]}`, code: rpc.CodeInvalidParams},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRequest([]byte(tt.in))
			switch {
			case tt.code != 0 && (err == nil || err.Code != tt.code):
				t.Fatalf("got %v, want code %d", err, tt.code)
			case tt.code == 0 && (err != nil || *r.Method != tt.method):
				t.Fatalf("got %+v, %v; want method %s", r, err, tt.method)
			}
			if string(r.ID) != tt.id {
				t.Errorf("id %s, want %s", r.ID, tt.id)
			}
		})
	}
	if got, want := string(EncodeRequest("tcpops.list", json.RawMessage(`{"limit":5}`))), `{"jsonrpc":"2.0","id":1,"method":"tcpops.list","params":{"limit":5}}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestNames(t *testing.T) {
	for _, h := range []string{"web1", "edge-01", "a_b", strings.Repeat("x", 64)} {
		if err := CheckHost(h); err != nil {
			t.Errorf("%q: %v", h, err)
		}
	}
	for _, h := range []string{"", "web1.example.com", "a b", "a*", "a>", strings.Repeat("x", 65)} {
		if err := CheckHost(h); err == nil {
			t.Errorf("%q: accepted", h)
		}
	}
	if got := HostOf(EventsSubject("web1")); got != "web1" {
		t.Errorf("HostOf %q", got)
	}
	if got := HostOf(HostSubject("web2")); got != "web2" {
		t.Errorf("HostOf %q", got)
	}
	if got, want := Redact("nats://ops:secret@h1:4222,nats://h2:4222"), "nats://ops:xxx@h1:4222,nats://h2:4222"; got != want {
		t.Errorf("Redact: %s, want %s", got, want)
	}
	if got := (Options{URL: "nats://ops:secret@h1:4222"}).user(); got != "ops" {
		t.Errorf("user %q, want ops", got)
	}
	if got := (Options{URL: "nats://h1", Creds: "/etc/tcpops/admin.creds"}).user(); got != "creds admin" {
		t.Errorf("user %q, want creds admin", got)
	}
}
