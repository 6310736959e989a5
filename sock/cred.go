package sock

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Cred is the identity of the process at the other end of a Unix socket,
// as the kernel recorded it at connect time (SO_PEERCRED).
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}

// PeerCred returns the credentials of the peer of c.
func PeerCred(c *net.UnixConn) (Cred, error) {
	var cr Cred
	err := control(c, func(fd int) error {
		u, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return &OpError{Op: "getsockopt SO_PEERCRED", Err: os.NewSyscallError("getsockopt", err)}
		}
		cr = Cred{PID: u.Pid, UID: u.Uid, GID: u.Gid}
		return nil
	})
	return cr, err
}
