package sock

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// TCPInfo is the part of the kernel's struct tcp_info that operators need.
// Times are in microseconds (rtt) or milliseconds ago (last_data_*).
type TCPInfo struct {
	State          uint8  `json:"state"`
	StateName      string `json:"state_name"`
	RttUs          uint32 `json:"rtt_us"`
	RttvarUs       uint32 `json:"rttvar_us"`
	RtoUs          uint32 `json:"rto_us"`
	Retransmits    uint8  `json:"retransmits"`
	TotalRetrans   uint32 `json:"total_retrans"`
	Probes         uint8  `json:"probes"`
	Unacked        uint32 `json:"unacked"`
	LastDataRecvMs uint32 `json:"last_data_recv_ms"`
	LastDataSentMs uint32 `json:"last_data_sent_ms"`
	BytesAcked     uint64 `json:"bytes_acked"`
	BytesReceived  uint64 `json:"bytes_received"`
	LastAckRecvMs  uint32 `json:"last_ack_recv_ms"`
	SndWnd         uint32 `json:"snd_wnd"`
	// RecvQ is what waits in the receive queue, unread (SIOCINQ); SendQ
	// what waits in the send queue, unsent or unacknowledged (SIOCOUTQ).
	RecvQ int `json:"recv_q"`
	SendQ int `json:"send_q"`
}

// tcpStates are the kernel's TCP state names (include/net/tcp_states.h).
var tcpStates = [...]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
	"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"}

// GetTCPInfo reads TCP_INFO of the socket, and the bytes waiting in its
// receive and send queues.
func GetTCPInfo(c syscall.Conn) (TCPInfo, error) {
	var out TCPInfo
	err := control(c, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return &OpError{Op: "getsockopt TCP_INFO", Err: os.NewSyscallError("getsockopt", err)}
		}
		out = TCPInfo{
			State: ti.State, RttUs: ti.Rtt, RttvarUs: ti.Rttvar, RtoUs: ti.Rto,
			Retransmits: ti.Retransmits, TotalRetrans: ti.Total_retrans, Probes: ti.Probes,
			Unacked: ti.Unacked, LastDataRecvMs: ti.Last_data_recv, LastDataSentMs: ti.Last_data_sent,
			BytesAcked: ti.Bytes_acked, BytesReceived: ti.Bytes_received,
			LastAckRecvMs: ti.Last_ack_recv, SndWnd: ti.Snd_wnd,
		}
		// The queues are best effort: TCP_INFO is the answer.
		out.RecvQ, _ = unix.IoctlGetInt(fd, unix.SIOCINQ)
		out.SendQ, _ = unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if int(ti.State) < len(tcpStates) {
			out.StateName = tcpStates[ti.State]
		}
		return nil
	})
	return out, err
}
