package control_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tcpops/tcpops/daemon/control"
	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/rpc"
)

func TestDo(t *testing.T) {
	d := daemontest.Start(t)
	_, id := d.Dial(t, 0)
	reader := control.Caller{Via: "nats", Attrs: []any{"nats_user", "ops"}, DenyHint: "changing methods are served on tcpops.admin.h"}
	admin := control.Caller{Via: "nats", Attrs: []any{"nats_user", "root"}, Admin: true}
	p := func(s string) json.RawMessage { return json.RawMessage(s) }
	conid := p(`{"conid":` + jsonNum(id) + `}`)
	tests := []struct {
		name   string
		method string
		params json.RawMessage
		caller control.Caller
		result string // substring
		code   int64
		msg    string // substring of the error
	}{
		{name: "read", method: rpc.MethodState, params: conid, caller: reader, result: `"state_name":"accepting"`},
		{name: "no params", method: rpc.MethodStats, caller: reader, result: `"connections":1`},
		{name: "null params", method: rpc.MethodListMethods, params: p("null"), caller: reader, result: `"tcpops.close"`},
		{name: "list, raw", method: rpc.MethodList, params: p(`{}`), caller: reader, result: `{"connections":[{"conid":`},
		{name: "change, reader", method: rpc.MethodClose, params: conid, caller: reader, code: rpc.CodeDenied, msg: "served on tcpops.admin.h"},
		{name: "bad param", method: rpc.MethodLifetime, params: p(`{"conid":1,"lifetime":-1}`), caller: admin, code: rpc.CodeInvalidParams, msg: "lifetime"},
		{name: "unknown", method: "tcpops.nope", caller: admin, code: rpc.CodeMethodNotFound, msg: "tcpops.nope"},
		{name: "follow", method: rpc.MethodEvents, params: p(`{"follow":true}`), caller: reader, code: rpc.CodeInvalidParams, msg: "JetStream"},
		{name: "change, admin", method: rpc.MethodClose, params: conid, caller: admin, result: `"closed":true`},
		{name: "gone", method: rpc.MethodClose, params: conid, caller: admin, code: rpc.CodeNotFound, msg: "conid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := d.RPC.Do(tt.method, tt.params, tt.caller)
			if tt.code != 0 {
				if err == nil || err.Code != tt.code || !strings.Contains(err.Message, tt.msg) {
					t.Fatalf("got %s, %v; want code %d with %q", res, err, tt.code, tt.msg)
				}
				return
			}
			if err != nil || !strings.Contains(string(res), tt.result) || !json.Valid(res) {
				t.Fatalf("got %s, %v; want JSON with %s", res, err, tt.result)
			}
		})
	}
	if logs := d.Logs(); !strings.Contains(logs, "msg=rpc via=nats nats_user=root method=tcpops.close") {
		t.Errorf("no audit line for the admin's close:\n%s", logs)
	}
}

func jsonNum(n uint64) string { b, _ := json.Marshal(n); return string(b) }
