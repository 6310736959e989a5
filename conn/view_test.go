package conn

import (
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tcpops/tcpops/sock"
)

func ids(infos []Info) []uint64 {
	out := make([]uint64, len(infos))
	for i, in := range infos {
		out[i] = in.ID
	}
	return out
}

func TestListView(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := NewTable(Config{})
		cl := &closes{}
		a := addIn(t, tb, cl, "10.0.0.1:1000")
		time.Sleep(time.Second)
		b := addIn(t, tb, cl, "10.0.0.2:2000")
		time.Sleep(time.Second)
		c := addIn(t, tb, cl, "192.168.1.9:3000")
		time.Sleep(time.Second)
		a.Touch(100, 0)
		time.Sleep(time.Second)
		b.Touch(10, 5000) // idle now: a 1s, b 0s, c 2s
		tests := []struct {
			name  string
			v     View
			limit int
			want  []uint64
			total int
			next  uint64
		}{
			{"conid", View{Sort: SortConid}, 0, []uint64{1, 2, 3}, 3, 0},
			{"conid page", View{Sort: SortConid}, 2, []uint64{1, 2}, 3, 2},
			{"idle", View{Sort: SortIdle}, 0, []uint64{3, 1, 2}, 3, 0},
			{"bytes", View{Sort: SortBytes}, 0, []uint64{2, 1, 3}, 3, 0},
			{"age", View{Sort: SortAge}, 0, []uint64{1, 2, 3}, 3, 0},
			{"offset", View{Sort: SortBytes, Offset: 1}, 1, []uint64{1}, 3, 0},
			{"offset past the end", View{Offset: 9}, 0, []uint64{}, 3, 0},
			{"match", View{Match: "10.0.0."}, 0, []uint64{1, 2}, 2, 0},
			{"match terms", View{Match: "tcp 2000"}, 0, []uint64{2}, 1, 0},
			{"match nothing", View{Match: "udp"}, 0, []uint64{}, 0, 0},
		}
		for _, tt := range tests { // no t.Run inside a synctest bubble
			got, next, total := tb.ListView(Filter{View: tt.v, Limit: tt.limit})
			if !slices.Equal(ids(got), tt.want) || total != tt.total || next != tt.next {
				t.Errorf("%s: got %v total %d next %d, want %v total %d next %d", tt.name, ids(got), total, next, tt.want, tt.total, tt.next)
			}
		}
		// Rates: the first sample is the average so far, later ones what
		// moved since the sample before.
		got, _, _ := tb.ListView(Filter{View: View{Sort: SortRate}})
		if got[0].ID != b.ID || !got[0].Rated || got[0].Rate != 5010.0/3 {
			t.Fatalf("first rates: %+v, want conid %d first at 1670 B/s", got[0], b.ID)
		}
		time.Sleep(2 * time.Second)
		c.Touch(0, 4000)
		got, _, _ = tb.ListView(Filter{View: View{Rates: true, Sort: SortRate}})
		if got[0].ID != c.ID || got[0].Rate != 2000 || got[1].Rate != 0 {
			t.Fatalf("rates after 2 s: %v first at %v, then %v; want conid %d at 2000, then 0", got[0].ID, got[0].Rate, got[1].Rate, c.ID)
		}
		for _, x := range []*Conn{a, b, c} {
			x.Close(ReasonLocal, nil)
		}
	})
}

func TestSuspectsOf(t *testing.T) {
	ms := func(d time.Duration) uint32 { return uint32(d.Milliseconds()) }
	tests := []struct {
		name  string
		state State
		age   time.Duration
		ti    *sock.TCPInfo
		want  []Suspect
	}{
		{"healthy idle", StateOK, time.Hour, &sock.TCPInfo{LastDataSentMs: ms(time.Hour), LastDataRecvMs: ms(time.Hour)}, nil},
		{"bulk transfer", StateOK, time.Minute, &sock.TCPInfo{Unacked: 10, SendQ: 100000, LastDataSentMs: 0}, nil},
		{"sent, never acked", StateOK, time.Minute, &sock.TCPInfo{Unacked: 2, Retransmits: 1, SendQ: 20, LastAckRecvMs: ms(StallAfter)}, []Suspect{SuspectSendStalled}},
		{"sent after a quiet hour", StateOK, time.Hour, &sock.TCPInfo{Unacked: 2, SendQ: 20, LastAckRecvMs: ms(time.Hour)}, nil},
		{"retransmitting", StateOK, time.Minute, &sock.TCPInfo{Unacked: 2, Retransmits: RetransmitsMin, LastAckRecvMs: ms(time.Second)}, []Suspect{SuspectRetransmitting}},
		{"one retransmit is not yet", StateOK, time.Minute, &sock.TCPInfo{Unacked: 2, Retransmits: 1}, nil},
		{"keepalive probes", StateOK, time.Minute, &sock.TCPInfo{Probes: 1}, []Suspect{SuspectKeepaliveProbes}},
		{"window probes are not keepalive", StateOK, time.Minute, &sock.TCPInfo{Probes: 1, SendQ: 10}, nil},
		{"connecting long", StateConnecting, ConnectingAfter, nil, []Suspect{SuspectConnecting}},
		{"connecting now", StateConnecting, time.Second, nil, nil},
		{"unread", StateOK, time.Minute, &sock.TCPInfo{RecvQ: 5, LastDataRecvMs: ms(StallAfter)}, []Suspect{SuspectRecvQueue}},
		{"just arrived", StateOK, time.Minute, &sock.TCPInfo{RecvQ: 5, LastDataRecvMs: 10}, nil},
		{"peer not reading", StateOK, time.Minute, &sock.TCPInfo{SendQ: 4096, LastDataSentMs: ms(StallAfter)}, []Suspect{SuspectPeerNotReading}},
		{"no socket", StateOK, time.Minute, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SuspectsOf(tt.state, tt.age, tt.ti); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
