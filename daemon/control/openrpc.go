package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tcpops/tcpops/rpc"
)

// The OpenRPC document (https://spec.open-rpc.org) that rpc.discover
// answers is made here, never written by hand: its methods are those of
// the handler table, in its order, with the table's help; their params
// and results are the wire types of package rpc, read by reflection. A
// method or a field added there is in the document at once.

// openRPCVersion is the version of the OpenRPC specification followed.
const openRPCVersion = "1.3.2"

// wire names the params and result types of each method, by a value of
// each (nil: no params). A method missing here is described by its help
// alone; TestEveryMethodHasWireTypes asks for it.
var wire = map[string]struct{ params, result any }{
	rpc.MethodAlive:       {rpc.ConnParams{}, rpc.AliveResult{}},
	rpc.MethodState:       {rpc.ConnParams{}, rpc.StateResult{}},
	rpc.MethodKeepalive:   {rpc.KeepaliveParams{}, rpc.KeepaliveResult{}},
	rpc.MethodLifetime:    {rpc.LifetimeParams{}, rpc.LifetimeResult{}},
	rpc.MethodClosedEvent: {rpc.ClosedEventParams{}, rpc.ClosedEventResult{}},
	rpc.MethodClose:       {rpc.CloseParams{}, rpc.CloseResult{}},
	rpc.MethodList:        {rpc.ListParams{}, rpc.ListResult{}},
	rpc.MethodInfo:        {rpc.ConnParams{}, rpc.InfoResult{}},
	rpc.MethodEvents:      {rpc.EventsParams{}, rpc.EventsResult{}},
	rpc.MethodStats:       {nil, rpc.Stats{}},
	rpc.MethodVersion:     {nil, rpc.Version{}},
	rpc.MethodListMethods: {nil, []string{}},
	rpc.MethodHelp:        {rpc.HelpParams{}, ""},
	rpc.MethodDiscover:    {nil, discoverResult{}},
	rpc.MethodUpgrade:     {rpc.UpgradeParams{}, rpc.UpgradeResult{}},
}

// notification is one the server sends unasked.
type notification struct {
	name   string
	params any
	help   string
}

// progressNotification goes to the caller of a method with a selector.
var progressNotification = notification{rpc.NotifyProgress, rpc.Progress{},
	"with select and rate: how far the change is, at least once a second while it runs"}

// notifications are what the server sends unasked, by the method whose
// call starts them (x-notifications in the document).
var notifications = map[string][]notification{
	rpc.MethodEvents: {
		{rpc.NotifyEvent, rpc.Event{}, "with follow: each later closed event, in seq order"},
		{rpc.NotifyEventsLost, rpc.EventsLost{}, "with follow: the follower fell more than the ring behind and missed these seqs"},
	},
}

// discoverResult stands for the document itself in the wire table.
type discoverResult struct{}

// schemaFor gives types whose JSON is not what reflection sees.
var schemaFor = map[reflect.Type]func() *obj{
	reflect.TypeFor[time.Time](): func() *obj {
		return newObj("type", "string", "format", "date-time")
	},
	reflect.TypeFor[rpc.StateFilter](): func() *obj {
		return newObj("description", "a state name (ok) or number (1)", "type", []string{"string", "integer"})
	},
	reflect.TypeFor[discoverResult](): func() *obj {
		return newObj("description", "an OpenRPC document (https://spec.open-rpc.org)", "type", "object",
			"required", []string{"openrpc", "info", "methods"})
	},
}

// errors of the control socket, by code, as components/errors names them.
var errorNames = []struct {
	name string
	code int
	msg  string
}{
	{"InvalidParams", rpc.CodeInvalidParams, "missing, unknown or bad param (the message names it and says what is accepted)"},
	{"NotFound", rpc.CodeNotFound, "conid not found"},
	{"Socket", rpc.CodeSocket, "the socket operation failed (the errno text in the message)"},
	{"Denied", rpc.CodeDenied, "permission denied for the caller"},
	{"Refused", rpc.CodeRefused, "more connections matched the selector than max: nothing was changed (data: {matched, max})"},
}

var (
	openRPCOnce sync.Once
	openRPCDoc  []byte
)

// OpenRPC returns the OpenRPC document of every method the server
// answers, as rpc.discover gives it (and docs/openrpc.json holds it).
func OpenRPC() []byte {
	openRPCOnce.Do(func() { openRPCDoc = buildOpenRPC() })
	return openRPCDoc
}

func buildOpenRPC() []byte {
	g := &schemaGen{defs: map[string]*obj{}}
	var methods []any
	for _, m := range (&Server{}).table() {
		methods = append(methods, g.method(m))
	}
	errs := newObj()
	for _, e := range errorNames {
		errs.set(e.name, newObj("code", e.code, "message", e.msg))
	}
	names := make([]string, 0, len(g.defs))
	for n := range g.defs {
		names = append(names, n)
	}
	slices.Sort(names)
	schemas := newObj()
	for _, n := range names {
		schemas.set(n, g.defs[n])
	}
	doc := newObj(
		"openrpc", openRPCVersion,
		"info", newObj(
			"title", "tcpops control socket",
			"version", rpc.APIVersion,
			"description", "JSON-RPC 2.0 on the Unix socket of the tcpops daemon: newline-delimited JSON objects, "+
				"named params. Read-only methods may be called by anyone who can open the socket; the others "+
				"(x-access: changes) by root, the daemon's user and members of its --admin-group.",
		),
		"methods", methods,
		"components", newObj("schemas", schemas, "errors", errs),
	)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		panic(err) // only types of this package
	}
	return b.Bytes()
}

// method describes one entry of the handler table.
func (g *schemaGen) method(m *method) *obj {
	w, typed := wire[m.name]
	access := "read-only"
	if !m.readOnly {
		access = "changes"
	}
	o := newObj("name", m.name, "summary", m.help)
	if m.params != "" {
		o.set("description", "Params: "+m.params+".")
	}
	o.set("paramStructure", "by-name")
	params := []any{}
	if typed && w.params != nil {
		notes := paramNotes(m.params)
		for _, f := range jsonFields(reflect.TypeOf(w.params)) {
			p := newObj("name", f.name)
			if n := notes[f.name]; n != "" {
				p.set("description", n)
			}
			p.set("schema", g.schema(f.typ, f.omitempty))
			params = append(params, p)
		}
	}
	o.set("params", params)
	// A method that takes a selector answers a bulk result when called
	// with one.
	takesSelect := false
	if typed && w.params != nil {
		for _, f := range jsonFields(reflect.TypeOf(w.params)) {
			takesSelect = takesSelect || f.name == "select"
		}
	}
	result := newObj()
	if typed {
		result = g.schema(reflect.TypeOf(w.result), false)
	}
	if takesSelect {
		result = newObj("description", "with conid, the first; with select, a bulk result",
			"oneOf", []any{result, g.schema(reflect.TypeFor[rpc.BulkResult](), false)})
	}
	o.set("result", newObj("name", m.name+".result", "schema", result))
	// The errors: a bad param wherever there are params; a conid not
	// found where one is changed or inspected (tcpops.alive and
	// tcpops.state answer it as a result); a socket error where one is
	// changed; a refusal wherever anything is.
	var errs []any
	takesConid := false
	if typed && w.params != nil {
		errs = append(errs, errorRef("InvalidParams"))
		for _, f := range jsonFields(reflect.TypeOf(w.params)) {
			takesConid = takesConid || f.name == "conid"
		}
	}
	if takesConid && (!m.readOnly || m.name == rpc.MethodInfo) {
		errs = append(errs, errorRef("NotFound"))
	}
	if takesConid && !m.readOnly {
		errs = append(errs, errorRef("Socket"))
	}
	if !m.readOnly {
		errs = append(errs, errorRef("Denied"))
	}
	if takesSelect {
		errs = append(errs, errorRef("Refused"))
	}
	if len(errs) > 0 {
		o.set("errors", errs)
	}
	o.set("x-access", access)
	ns := slices.Clone(notifications[m.name])
	if takesSelect {
		ns = append(ns, progressNotification)
	}
	if len(ns) > 0 {
		var list []any
		for _, n := range ns {
			list = append(list, newObj("name", n.name, "summary", n.help, "params", g.schema(reflect.TypeOf(n.params), false)))
		}
		o.set("x-notifications", list)
	}
	return o
}

// paramNotes reads the table's params help, "conid, enable (default
// true), idle", into what it says of each param: {"enable": "default
// true"}.
func paramNotes(help string) map[string]string {
	help, _, _ = strings.Cut(help, "; all optional")
	notes := map[string]string{}
	depth, start := 0, 0
	item := func(s string) {
		s = strings.TrimSpace(s)
		name, rest, _ := strings.Cut(s, " ")
		rest = strings.TrimSpace(rest)
		if strings.HasPrefix(rest, "(") && strings.HasSuffix(rest, ")") {
			rest = rest[1 : len(rest)-1]
		}
		notes[name] = rest
	}
	for i, r := range help {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				item(help[start:i])
				start = i + 1
			}
		}
	}
	item(help[start:])
	return notes
}

func errorRef(name string) *obj { return newObj("$ref", "#/components/errors/"+name) }

// schemaGen makes JSON Schemas (draft 7, as OpenRPC uses) of Go types; a
// named struct is defined once in defs and referred to.
type schemaGen struct {
	defs map[string]*obj
}

// schema is the schema of t; omitempty says the field that has this type
// may be left out, so a pointer is never null.
func (g *schemaGen) schema(t reflect.Type, omitempty bool) *obj {
	if f, ok := schemaFor[t]; ok {
		return f()
	}
	switch t.Kind() {
	case reflect.Pointer:
		s := g.schema(t.Elem(), false)
		if omitempty {
			return s
		}
		return newObj("oneOf", []any{s, newObj("type", "null")})
	case reflect.Bool:
		return newObj("type", "boolean")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return newObj("type", "integer")
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return newObj("type", "integer", "minimum", 0)
	case reflect.Float32, reflect.Float64:
		return newObj("type", "number")
	case reflect.String:
		return newObj("type", "string")
	case reflect.Slice, reflect.Array:
		return newObj("type", "array", "items", g.schema(t.Elem(), false))
	case reflect.Map:
		return newObj("type", "object", "additionalProperties", g.schema(t.Elem(), false))
	case reflect.Struct:
		if _, ok := g.defs[t.Name()]; !ok {
			g.defs[t.Name()] = nil // taken: a type that refers to itself stops here
			props, required := newObj(), []string{}
			for _, f := range jsonFields(t) {
				props.set(f.name, g.schema(f.typ, f.omitempty))
				if !f.omitempty {
					required = append(required, f.name)
				}
			}
			g.defs[t.Name()] = newObj("type", "object", "properties", props, "required", required, "additionalProperties", false)
		}
		return newObj("$ref", "#/components/schemas/"+t.Name())
	}
	return newObj() // anything
}

// field is a struct field as encoding/json writes it.
type field struct {
	name      string
	typ       reflect.Type
	omitempty bool
}

// jsonFields are the fields of struct t under their JSON names, those of
// embedded structs in their place, as encoding/json flattens them.
func jsonFields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, field{name: name, typ: f.Type, omitempty: slices.Contains(strings.Split(opts, ","), "omitempty")})
	}
	return out
}

// obj is a JSON object that keeps its keys in the order they were set.
type obj struct {
	keys []string
	vals map[string]any
}

func newObj(kv ...any) *obj {
	o := &obj{vals: map[string]any{}}
	for i := 0; i+1 < len(kv); i += 2 {
		o.set(kv[i].(string), kv[i+1])
	}
	return o
}

func (o *obj) set(k string, v any) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kj, _ := json.Marshal(k)
		b.Write(kj)
		b.WriteByte(':')
		vj, err := marshalNoEscape(o.vals[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		b.Write(vj)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
