package control_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/tcpops/tcpops/daemon/control"
	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testcert"
	"github.com/tcpops/tcpops/rpc"
)

// openRPC is the document as rpc.discover describes it, with a compiled
// schema for each method's result and notification.
type openRPC struct {
	doc struct {
		OpenRPC string `json:"openrpc"`
		Methods []struct {
			Name          string `json:"name"`
			Notifications []struct {
				Name string `json:"name"`
			} `json:"x-notifications"`
		} `json:"methods"`
	}
	results       map[string]*jsonschema.Schema
	notifications map[string]*jsonschema.Schema
}

// compileOpenRPC compiles every schema of the document with a JSON Schema
// validator (draft 7, as OpenRPC uses); a schema that is not valid JSON
// Schema fails here.
func compileOpenRPC(t *testing.T, raw []byte) *openRPC {
	t.Helper()
	o := &openRPC{results: map[string]*jsonschema.Schema{}, notifications: map[string]*jsonschema.Schema{}}
	if err := json.Unmarshal(raw, &o.doc); err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	const url = "urn:tcpops:openrpc"
	if err := c.AddResource(url, inst); err != nil {
		t.Fatal(err)
	}
	for i, m := range o.doc.Methods {
		s, err := c.Compile(fmt.Sprintf("%s#/methods/%d/result/schema", url, i))
		if err != nil {
			t.Fatalf("%s: result schema: %v", m.Name, err)
		}
		o.results[m.Name] = s
		for j, n := range m.Notifications {
			s, err := c.Compile(fmt.Sprintf("%s#/methods/%d/x-notifications/%d/params", url, i, j))
			if err != nil {
				t.Fatalf("%s: %s params schema: %v", m.Name, n.Name, err)
			}
			o.notifications[n.Name] = s
		}
	}
	return o
}

// check validates a result or notification (raw JSON) against schema s.
func check(t *testing.T, what string, s *jsonschema.Schema, raw []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("%s does not match its schema: %v\n%s", what, err, raw)
	}
}

// TestResultsMatchSchema calls every method on a live daemon, with
// connections of every kind (relayed, echo, TLS, WebSocket, closed by
// RST), and validates each result, and the notifications of a follower,
// against the schema rpc.discover gives for it.
func TestResultsMatchSchema(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); b := make([]byte, 512); n, _ := c.Read(b); c.Write(b[:n]); c.Read(b) }()
		}
	}()
	cert, err := testcert.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t,
		"--listen", "tcp://127.0.0.1:0?backend="+backend.Addr().String(),
		"--listen", "tls://127.0.0.1:0?backend=echo&cert="+cert.CertFile+"&key="+cert.KeyFile,
		"--listen", "ws://127.0.0.1:0/sip?backend=echo&subprotocol=sip",
		"--listen", "tcp://127.0.0.1:0?backend=echo")
	c := d.Client(t)
	ctx := t.Context()

	// What rpc.discover answers is the document, whole.
	var discovered json.RawMessage
	if err := c.Call(ctx, rpc.MethodDiscover, nil, &discovered); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	json.Compact(&want, control.OpenRPC())
	if !bytes.Equal(discovered, want.Bytes()) {
		t.Fatal("rpc.discover does not answer control.OpenRPC()")
	}
	o := compileOpenRPC(t, discovered)

	// A follower, to see the notifications.
	follower, err := net.Dial("unix", d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	fr := bufio.NewReader(follower)
	fmt.Fprintln(follower, `{"jsonrpc":"2.0","id":1,"method":"tcpops.events","params":{"follow":true}}`)
	if _, err := fr.ReadBytes('\n'); err != nil {
		t.Fatal(err)
	}

	relayed, in := d.Dial(t, 0)
	relayed.Write([]byte("hello"))
	relayed.Read(make([]byte, 5))
	tc, err := tls.Dial("tcp", d.Addr(1), cert.Client)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.Write([]byte("x"))
	tc.Read(make([]byte, 1))
	ws, _, err := websocket.Dial(ctx, "ws://"+d.Addr(2)+"/sip", &websocket.DialOptions{Subprotocols: []string{"sip"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.Write(ctx, websocket.MessageText, []byte("x"))
	ws.Read(ctx)
	_, echoed := d.Dial(t, 3)
	_, reset := d.Dial(t, 3)
	_, rated1 := d.Dial(t, 3)
	_, rated2 := d.Dial(t, 3)

	all := list(t, c)
	if len(all) != 8 { // relayed in and out, tls, ws, four echo
		t.Fatalf("%d connections, want 8", len(all))
	}
	called := map[string]bool{}
	call := func(method string, params any) []byte {
		t.Helper()
		var raw json.RawMessage
		if err := c.Call(ctx, method, params, &raw); err != nil {
			t.Fatalf("%s %v: %v", method, params, err)
		}
		called[method] = true
		check(t, fmt.Sprintf("%s %v", method, params), o.results[method], raw)
		return raw
	}
	id := func(n uint64) map[string]any { return map[string]any{"conid": n} }
	var infos []byte
	for _, cn := range all {
		infos = append(infos, call(rpc.MethodInfo, id(cn))...)
		call(rpc.MethodAlive, id(cn))
		call(rpc.MethodState, id(cn))
	}
	for _, part := range []string{`"tls":{"version":"TLS 1.3"`, `"ws":{"path":"/sip","subprotocol":"sip"`, `"tcp_info":{`, `"peer":`} {
		if !bytes.Contains(infos, []byte(part)) {
			t.Errorf("no info result has %s: the schema of that part went unchecked", part)
		}
	}
	call(rpc.MethodAlive, id(999))
	// With selectors: bulk results, a dry run listing connections, and
	// overrides that a ttl leaves on a connection (seen in info below).
	call(rpc.MethodKeepalive, map[string]any{"select": map[string]any{"conids": []uint64{in, 999}}, "dry_run": true, "idle": 60, "count": 5, "interval": 5})
	call(rpc.MethodLifetime, map[string]any{"select": map[string]any{"proto": "ws"}, "lifetime": 300, "ttl": 60})
	call(rpc.MethodClosedEvent, map[string]any{"select": map[string]any{"all": true}, "enable": true, "max": 100})
	call(rpc.MethodKeepalive, map[string]any{"conid": in, "idle": 30, "count": 3, "interval": 3, "ttl": 60})
	for _, cn := range all {
		infos = append(infos, call(rpc.MethodInfo, id(cn))...)
	}
	if !bytes.Contains(infos, []byte(`"overrides":[{"what":`)) {
		t.Error("no info result has overrides: their schema went unchecked")
	}
	rated := rawConn(t, d.Socket)
	rated.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tcpops.close","params":{"select":{"conids":[%d,%d]},"rate":4}}`, rated1, rated2))
	for progress := 0; ; {
		line, err := rated.r.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result json.RawMessage `json:"result"`
		}
		json.Unmarshal(line, &r)
		if r.Method == rpc.NotifyProgress {
			check(t, r.Method, o.notifications[r.Method], r.Params)
			progress++
			continue
		}
		check(t, "tcpops.close with select and rate", o.results[rpc.MethodClose], r.Result)
		if progress == 0 || !bytes.Contains(r.Result, []byte(`"matched":2`)) {
			t.Errorf("rated close: %d progress notes, result %s", progress, r.Result)
		}
		break
	}
	call(rpc.MethodKeepalive, map[string]any{"conid": in, "idle": 60, "count": 5, "interval": 5, "user_timeout_ms": 9000})
	call(rpc.MethodKeepalive, map[string]any{"conid": in, "enable": false})
	call(rpc.MethodLifetime, map[string]any{"conid": in, "lifetime": 600})
	call(rpc.MethodClosedEvent, map[string]any{"conid": in, "enable": true})
	call(rpc.MethodList, map[string]any{"limit": 1})
	call(rpc.MethodList, map[string]any{"proto": "ws"})
	call(rpc.MethodClose, id(echoed))
	call(rpc.MethodClose, map[string]any{"conid": reset, "reset": true})
	relayed.Close()
	call(rpc.MethodState, id(echoed)) // closed: with its reason
	daemontest.WaitEvents(t, c, rpc.EventsParams{}, 6)
	var evs rpc.EventsResult
	json.Unmarshal(call(rpc.MethodEvents, nil), &evs)
	call(rpc.MethodStats, nil)
	call(rpc.MethodVersion, nil)
	call(rpc.MethodListMethods, nil)
	call(rpc.MethodHelp, map[string]any{"method": rpc.MethodList})
	call(rpc.MethodDiscover, nil)

	// The follower got every closed event (two rated, echo, reset, relayed
	// in and out) as notifications. tcpops.events_lost is sent only when a
	// follower falls a whole ring behind: its schema is checked on a value
	// of its wire type.
	follower.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range len(evs.Events) {
		line, err := fr.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var n struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(line, &n); err != nil || o.notifications[n.Method] == nil {
			t.Fatalf("notification %s: %v", line, err)
		}
		check(t, n.Method, o.notifications[n.Method], n.Params)
	}
	lost, _ := json.Marshal(rpc.EventsLost{FromSeq: 1, ToSeq: 9})
	check(t, rpc.NotifyEventsLost, o.notifications[rpc.NotifyEventsLost], lost)

	// The schemas are strict: a field missing or unknown fails.
	for _, bad := range []string{`{"conid":1,"alive":true}`, `{"conid":1,"alive":true,"code":1,"extra":2}`, `{"conid":-1,"alive":true,"code":1}`} {
		v, _ := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if o.results[rpc.MethodAlive].Validate(v) == nil {
			t.Errorf("the tcpops.alive schema takes %s", bad)
		}
	}
	// A real upgrade needs a daemon of its own, as a process: its result
	// is checked in test.TestUpgradeResultMatchesSchema.
	called[rpc.MethodUpgrade] = true
	for _, m := range o.doc.Methods {
		if !called[m.Name] {
			t.Errorf("%s is not called here: add a call whose result shows its schema holds", m.Name)
		}
	}
}

func list(t *testing.T, c interface {
	List(context.Context, rpc.ListParams) (rpc.ListResult, error)
}) []uint64 {
	t.Helper()
	r, err := c.List(t.Context(), rpc.ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, cn := range r.Connections {
		ids = append(ids, cn.ConnID)
	}
	return ids
}

// TestOpenRPCDocument: the document has what OpenRPC 1.x requires and
// only what it allows (x- extensions aside), every method of the handler
// table with its params and result, and every error code named.
func TestOpenRPCDocument(t *testing.T) {
	var doc map[string]any
	if err := json.Unmarshal(control.OpenRPC(), &doc); err != nil {
		t.Fatal(err)
	}
	keys := func(where string, m map[string]any, required, allowed []string) {
		t.Helper()
		for _, k := range required {
			if _, ok := m[k]; !ok {
				t.Errorf("%s lacks %s", where, k)
			}
		}
		for k := range m {
			if !slices.Contains(allowed, k) && !slices.Contains(required, k) && !strings.HasPrefix(k, "x-") {
				t.Errorf("%s has %s, which OpenRPC does not define", where, k)
			}
		}
	}
	keys("document", doc, []string{"openrpc", "info", "methods"}, []string{"servers", "components", "externalDocs", "$schema"})
	if v, _ := doc["openrpc"].(string); !regexp.MustCompile(`^1\.\d+\.\d+$`).MatchString(v) {
		t.Errorf("openrpc %q: want a 1.x version", v)
	}
	keys("info", doc["info"].(map[string]any), []string{"title", "version"}, []string{"description", "termsOfService", "contact", "license"})
	var names []string
	for _, mv := range doc["methods"].([]any) {
		m := mv.(map[string]any)
		name, _ := m["name"].(string)
		names = append(names, name)
		keys(name, m, []string{"name", "params"}, []string{"description", "summary", "servers", "tags", "paramStructure", "result", "errors", "links", "examples", "deprecated", "externalDocs"})
		cds := m["params"].([]any)
		if r, ok := m["result"]; ok {
			cds = append(cds, r)
		} else {
			t.Errorf("%s has no result", name)
		}
		for _, cd := range cds {
			keys(name+" content descriptor", cd.(map[string]any), []string{"name", "schema"}, []string{"description", "summary", "required", "deprecated"})
		}
	}
	if want := control.MethodNames(); !slices.Equal(names, want) {
		t.Errorf("methods %v, want those of the handler table %v", names, want)
	}
	for name, e := range doc["components"].(map[string]any)["errors"].(map[string]any) {
		keys("error "+name, e.(map[string]any), []string{"code", "message"}, []string{"data"})
	}
}

// TestEveryMethodHasWireTypes: a method in the handler table without its
// params and result types in the wire table would be documented by its
// help alone.
func TestEveryMethodHasWireTypes(t *testing.T) {
	var doc struct {
		Methods []struct {
			Name   string `json:"name"`
			Result struct {
				Schema map[string]any `json:"schema"`
			} `json:"result"`
		} `json:"methods"`
	}
	if err := json.Unmarshal(control.OpenRPC(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, m := range doc.Methods {
		if len(m.Result.Schema) == 0 {
			t.Errorf("%s: no result schema: add its params and result types to wire in daemon/control/openrpc.go", m.Name)
		}
	}
}
