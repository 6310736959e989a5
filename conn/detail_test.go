package conn

import "testing"

func TestWSInfo(t *testing.T) {
	tb := NewTable(Config{})
	c := addIn(t, tb, &closes{}, "127.0.0.1:40000")
	if in := c.Info(); in.WS != nil {
		t.Fatalf("WS before the upgrade = %+v, want nil", in.WS)
	}
	want := WSInfo{Path: "/sip", Subprotocol: "sip", Origin: "http://127.0.0.1:8080"}
	c.SetWS(want)
	if in := c.Info(); in.WS == nil || *in.WS != want {
		t.Fatalf("WS = %+v, want %+v", in.WS, want)
	}
	infos, _ := tb.List(Filter{})
	if len(infos) != 1 || infos[0].WS == nil || *infos[0].WS != want {
		t.Fatalf("List gives %+v, want WS %+v", infos, want)
	}
}
