package conn

import (
	"time"

	"github.com/tcpops/tcpops/sock"
)

// Suspect is the name of a rule that makes a connection look half-open or
// stuck. The README defines each with the TCP_INFO fields it reads.
type Suspect string

// The suspect rules.
const (
	// SuspectSendStalled: data is unacknowledged, was sent again at least
	// once, and no ACK came for StallAfter (unacked > 0, retransmits > 0,
	// last_ack_recv >= StallAfter). The retransmission tells it from data
	// just sent after a long quiet spell.
	SuspectSendStalled Suspect = "send_stalled"
	// SuspectRetransmitting: the same data went out RetransmitsMin times in
	// a row without an ACK (retransmits >= RetransmitsMin; an ACK resets it).
	SuspectRetransmitting Suspect = "retransmitting"
	// SuspectKeepaliveProbes: keepalive probes sent and not answered
	// (probes > 0 with nothing to send: unacked = 0, send_q = 0).
	SuspectKeepaliveProbes Suspect = "keepalive_probes"
	// SuspectConnecting: an outbound leg still dialling after ConnectingAfter.
	SuspectConnecting Suspect = "connecting"
	// SuspectRecvQueue: bytes wait unread in the receive queue and the last
	// data arrived StallAfter ago (recv_q > 0, last_data_recv >= StallAfter):
	// the daemon does not read them, because the other leg takes nothing.
	SuspectRecvQueue Suspect = "recv_queue"
	// SuspectPeerNotReading: bytes wait to be sent, none is in flight and
	// nothing went out for StallAfter (send_q > 0, unacked = 0,
	// last_data_sent >= StallAfter): the peer's receive window is shut.
	SuspectPeerNotReading Suspect = "peer_not_reading"
)

// Suspects lists every rule in a fixed order.
var Suspects = []Suspect{SuspectSendStalled, SuspectRetransmitting, SuspectKeepaliveProbes, SuspectConnecting, SuspectRecvQueue, SuspectPeerNotReading}

// The thresholds of the rules.
const (
	StallAfter      = 5 * time.Second
	ConnectingAfter = 3 * time.Second
	RetransmitsMin  = 3
)

// SuspectsOf applies the rules to a snapshot and, for a connection with a
// socket, its TCP_INFO (nil while dialling). age is how long it has existed.
func SuspectsOf(state State, age time.Duration, ti *sock.TCPInfo) []Suspect {
	var out []Suspect
	if state == StateConnecting {
		if age >= ConnectingAfter {
			out = append(out, SuspectConnecting)
		}
		return out
	}
	if ti == nil {
		return nil
	}
	stall := uint32(StallAfter.Milliseconds())
	if ti.Unacked > 0 && ti.Retransmits > 0 && ti.LastAckRecvMs >= stall {
		out = append(out, SuspectSendStalled)
	}
	if ti.Retransmits >= RetransmitsMin {
		out = append(out, SuspectRetransmitting)
	}
	if ti.Probes > 0 && ti.Unacked == 0 && ti.SendQ == 0 {
		out = append(out, SuspectKeepaliveProbes)
	}
	if ti.RecvQ > 0 && ti.LastDataRecvMs >= stall {
		out = append(out, SuspectRecvQueue)
	}
	if ti.SendQ > 0 && ti.Unacked == 0 && ti.LastDataSentMs >= stall {
		out = append(out, SuspectPeerNotReading)
	}
	return out
}

// inspect reads the kernel's TCP_INFO into in and applies the rules.
func (c *Conn) inspect(in *Info, now time.Time) {
	if s, err := c.syscallConn(); err == nil {
		if ti, err := sock.GetTCPInfo(s); err == nil {
			in.TCPInfo = &ti
		}
	}
	in.Suspect = SuspectsOf(in.State, now.Sub(in.Created), in.TCPInfo)
}
