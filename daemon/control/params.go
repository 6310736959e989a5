package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// ParamError is a missing or bad param; it becomes -32602.
type ParamError struct{ Msg string }

func (e *ParamError) Error() string { return e.Msg }

func badParam(format string, a ...any) error { return &ParamError{Msg: fmt.Sprintf(format, a...)} }

// decodeParams fills dst from the request's named params, refusing unknown
// names and wrong types with a message that names the param.
func decodeParams(m *method, raw *json.RawMessage, dst any) error {
	data := []byte("{}")
	if raw != nil && string(bytes.TrimSpace(*raw)) != "null" {
		data = *raw
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return badParam("param %s of %s: want %s, got %s", te.Field, m.name, kindName(te.Type), te.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		takes := "no params"
		if m.params != "" {
			takes = "params: " + m.params
		}
		return badParam("unknown param %s for %s (it takes %s)", name, m.name, takes)
	}
	return badParam("params of %s: %v", m.name, err)
}

func kindName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Uint64, reflect.Uint, reflect.Uint32:
		return "a non-negative integer"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(kindName(t.Elem()), "a ") + "s"
	}
	return t.String()
}

// conid returns the required conid param.
func conid(m *method, p *uint64) (uint64, error) {
	if p == nil {
		return 0, badParam("missing param conid for %s (a connection id from tcpops.list)", m.name)
	}
	if *p == 0 {
		return 0, badParam("param conid of %s: conids start at 1", m.name)
	}
	return *p, nil
}
