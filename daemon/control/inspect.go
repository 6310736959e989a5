package control

import (
	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/sock"
)

// listView reads the params of tcpops.list that shape a live view and
// pick suspects.
func listView(p *rpc.ListParams, v *conn.View) error {
	if p.Sort != "" {
		s, err := conn.ParseSort(p.Sort)
		if err != nil {
			return badParam("param %v", err)
		}
		v.Sort = s
	}
	if p.Offset < 0 {
		return badParam("param offset %d: want >= 0", p.Offset)
	}
	v.Offset, v.Match, v.Rates, v.TCPInfo, v.Suspect = p.Offset, p.Match, p.Rates, p.TCPInfo, p.Suspect
	return nil
}

// relayKeepalive is a relay that tells its default keepalive.
type relayKeepalive interface {
	KeepaliveDefault() string
}

// addSetup adds to tcpops.stats what tcpopsctl doctor checks: the caller's
// rights and why, the listeners, the default keepalive and the daemon's
// open-files limit.
func (s *Server) addSetup(out *rpc.Stats, cred sock.Cred) {
	admin, why := s.adminWhy(cred)
	out.Caller = &rpc.Caller{UID: cred.UID, GID: cred.GID, PID: cred.PID, Admin: admin, Why: why}
	if s.cfg.Listeners != nil {
		out.Listeners = s.cfg.Listeners()
	}
	if r, ok := s.cfg.Relay.(relayKeepalive); ok {
		out.Limits.Keepalive = r.KeepaliveDefault()
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		out.Limits.OpenFiles = lim.Cur
	}
}
