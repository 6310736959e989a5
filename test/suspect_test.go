package test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tcpops/tcpops/internal/testutil"
)

// inNetns re-runs the calling test inside a private network namespace
// (unshare -n) and reports whether this process is that child, where the
// test runs; the parent only waits for it. Inside, `ip link set lo down`
// cuts every connection without closing any socket.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv("TCPOPS_TEST_NETNS") == t.Name() {
		ip := tool(t, "ip", "iproute2", "/usr/sbin/ip")
		if out, err := exec.Command(ip, "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v: %s", err, out)
		}
		return true
	}
	unshare := tool(t, "unshare", "util-linux")
	cmd := exec.Command(unshare, "-n", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), "TCPOPS_TEST_NETNS="+t.Name(), "TCPOPS_TEST_BINDIR="+binDir)
	out, err := cmd.CombinedOutput()
	t.Logf("in a network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("test in a network namespace failed: %v", err)
	}
	return false
}

// cutLink takes the namespace's loopback down: every packet is lost from
// now on, and no socket hears of it.
func cutLink(t *testing.T) {
	t.Helper()
	ip := tool(t, "ip", "iproute2", "/usr/sbin/ip")
	if out, err := exec.Command(ip, "link", "set", "lo", "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo down: %v: %s", err, out)
	}
}

// suspectConn is what the tests read of `tcpopsctl -o json list --suspect`.
type suspectConn struct {
	ConnID    uint64   `json:"conid"`
	Peer      uint64   `json:"peer"`
	Direction string   `json:"direction"`
	StateName string   `json:"state_name"`
	Suspect   []string `json:"suspect"`
	TCPInfo   *struct {
		Unacked        uint32 `json:"unacked"`
		Retransmits    uint8  `json:"retransmits"`
		Probes         uint8  `json:"probes"`
		LastDataSentMs uint32 `json:"last_data_sent_ms"`
		LastDataRecvMs uint32 `json:"last_data_recv_ms"`
		LastAckRecvMs  uint32 `json:"last_ack_recv_ms"`
		RecvQ          int    `json:"recv_q"`
		SendQ          int    `json:"send_q"`
		SndWnd         uint32 `json:"snd_wnd"`
	} `json:"tcp_info"`
}

// waitSuspect runs `tcpopsctl list --suspect` until every conid in want
// carries its rule, and returns the last listing.
func waitSuspect(t *testing.T, socket string, want map[uint64]string) map[uint64]suspectConn {
	t.Helper()
	var got map[uint64]suspectConn
	var listed []suspectConn
	var missing string
	if !testutil.Until(func() bool {
		var r struct {
			Connections []suspectConn `json:"connections"`
		}
		if err := json.Unmarshal(ctl(t, socket, "-o", "json", "list", "--suspect"), &r); err != nil {
			t.Fatal(err)
		}
		listed = r.Connections
		got = map[uint64]suspectConn{}
		for _, c := range r.Connections {
			got[c.ConnID] = c
		}
		missing = ""
		for id, rule := range want {
			if !slices.Contains(got[id].Suspect, rule) {
				missing += " " + strconv.FormatUint(id, 10) + ":" + rule
			}
		}
		return missing == ""
	}) {
		t.Fatalf("after %v, not suspect:%s; listing: %+v", testutil.Timeout, missing, listed)
	}
	return got
}

// conidOf finds the inbound leg whose remote is the client's address.
func conidOf(t *testing.T, socket string, c net.Conn) (in, out uint64) {
	t.Helper()
	testutil.WaitFor(t, "a relayed inbound leg from "+c.LocalAddr().String(), func() bool {
		var r struct {
			Connections []struct {
				ConnID    uint64 `json:"conid"`
				Peer      uint64 `json:"peer"`
				Local     string `json:"local"`
				Remote    string `json:"remote"`
				StateName string `json:"state_name"`
			} `json:"connections"`
		}
		json.Unmarshal(ctl(t, socket, "-o", "json", "list", "--direction", "in"), &r)
		for _, x := range r.Connections {
			// Both addresses: a client port may be in use towards another
			// listener at the same time.
			if x.Remote == c.LocalAddr().String() && x.Local == c.RemoteAddr().String() && x.Peer != 0 {
				in, out = x.ConnID, x.Peer
				return true
			}
		}
		return false
	})
	return in, out
}

// TestSuspectCutLink cuts the link under two relayed connections: one in
// the middle of a transfer (its unacknowledged data stops moving and is
// sent again and again), one idle with keepalive on (its probes go
// unanswered). The daemon and tcpopsctl are the real binaries.
func TestSuspectCutLink(t *testing.T) {
	if !inNetns(t) {
		return
	}
	// The backend streams to whoever says "stream" and stays quiet for
	// anyone else.
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	go func() {
		for {
			c, err := be.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				l, _ := bufio.NewReader(c).ReadString('\n')
				if l != "stream\n" {
					io.Copy(io.Discard, c)
					return
				}
				buf := make([]byte, 16<<10)
				for range 1 << 16 { // at most 1 GiB, or until the deadline
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	dir := t.TempDir()
	socket := filepath.Join(dir, "s")
	d := startServing(t, socket, "--backend", be.Addr().String(), "--log-level", "error")

	busy, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busy.Write([]byte("stream\n"))
	go io.Copy(io.Discard, busy) // reads until the test closes it
	idle, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write([]byte("idle\n"))
	busyIn, _ := conidOf(t, socket, busy)
	idleIn, _ := conidOf(t, socket, idle)
	ctl(t, socket, "keepalive", "enable", strconv.FormatUint(idleIn, 10), "1", "20", "1")
	// Data flows to the busy client before the cut, and some is in
	// flight: with the client's window shut at that moment (its reader
	// starved of CPU), nothing would be sent again, only window probes,
	// and the leg would be peer_not_reading instead.
	testutil.WaitFor(t, "data in flight to the busy client", func() bool {
		var r struct {
			BytesOut uint64 `json:"bytes_out"`
			TCPInfo  struct {
				Unacked uint32 `json:"unacked"`
			} `json:"tcp_info"`
		}
		json.Unmarshal(ctl(t, socket, "-o", "json", "info", strconv.FormatUint(busyIn, 10)), &r)
		return r.BytesOut > 1<<20 && r.TCPInfo.Unacked > 0
	})
	cut := time.Now()
	cutLink(t)
	got := waitSuspect(t, socket, map[uint64]string{
		busyIn: "retransmitting",
		idleIn: "keepalive_probes",
	})
	t.Logf("after %v: busy %+v %+v; idle %+v %+v", time.Since(cut).Round(time.Millisecond), got[busyIn].Suspect, *got[busyIn].TCPInfo, got[idleIn].Suspect, *got[idleIn].TCPInfo)
	got = waitSuspect(t, socket, map[uint64]string{busyIn: "send_stalled"})
	ti := got[busyIn].TCPInfo
	t.Logf("after %v: busy %+v %+v", time.Since(cut).Round(time.Millisecond), got[busyIn].Suspect, *ti)
	if ti.Unacked == 0 || ti.LastAckRecvMs < 5000 {
		t.Errorf("send_stalled with unacked %d, last ACK %d ms ago: want unacked > 0, >= 5000 ms", ti.Unacked, ti.LastAckRecvMs)
	}
	if slices.Contains(got[idleIn].Suspect, "send_stalled") || slices.Contains(got[idleIn].Suspect, "retransmitting") {
		t.Errorf("the idle connection, which sent nothing, is %v", got[idleIn].Suspect)
	}
}

// TestSuspectBackendStopsReading: a backend that accepts and never reads.
// The client's data fills the backend's window, then the daemon's send
// queue to it (peer_not_reading on the outbound leg), then waits unread in
// the inbound leg's receive queue (recv_queue).
func TestSuspectBackendStopsReading(t *testing.T) {
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	held := make(chan net.Conn, 1)
	go func() {
		c, err := be.Accept()
		if err == nil {
			held <- c // kept open, never read
		}
	}()
	defer func() {
		select {
		case c := <-held:
			c.Close()
		default:
		}
	}()
	socket := filepath.Join(t.TempDir(), "s")
	d := startServing(t, socket, "--backend", be.Addr().String(), "--log-level", "error")
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		// Writes until every buffer on the way is full; the deadline ends it.
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 64<<10)
		for range 1 << 14 {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	in, out := conidOf(t, socket, c)
	got := waitSuspect(t, socket, map[uint64]string{in: "recv_queue", out: "peer_not_reading"})
	t.Logf("inbound %+v %+v; outbound %+v %+v", got[in].Suspect, *got[in].TCPInfo, got[out].Suspect, *got[out].TCPInfo)
	if got[in].TCPInfo.RecvQ == 0 || got[out].TCPInfo.SendQ == 0 {
		t.Errorf("recv_q %d on the inbound leg, send_q %d on the outbound: want both > 0", got[in].TCPInfo.RecvQ, got[out].TCPInfo.SendQ)
	}
}

// TestSuspectConnecting: a backend whose accept queue is full answers no
// SYN; the outbound leg stays connecting and is suspect after 3 s.
func TestSuspectConnecting(t *testing.T) {
	be := fullBacklog(t)
	socket := filepath.Join(t.TempDir(), "s")
	d := startServing(t, socket, "--backend", be, "--backend-timeout", "60s", "--log-level", "error")
	c, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out uint64
	testutil.WaitFor(t, "an outbound leg", func() bool {
		var r struct {
			Connections []suspectConn `json:"connections"`
		}
		json.Unmarshal(ctl(t, socket, "-o", "json", "list", "--direction", "out"), &r)
		if len(r.Connections) == 1 {
			out = r.Connections[0].ConnID
		}
		return out != 0
	})
	got := waitSuspect(t, socket, map[uint64]string{out: "connecting"})
	t.Logf("outbound leg %d suspect %v, state %s", out, got[out].Suspect, got[out].StateName)
	if got[out].StateName != "connecting" {
		t.Errorf("state %s, want connecting", got[out].StateName)
	}
}
