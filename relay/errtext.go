package relay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// socketError is what a closed event says of an error a socket call
// returned: the kernel's text ("connection reset by peer"), not which
// call saw it (splice, read, write) nor the addresses, which the event
// has. An error with more to say (a dial, a handshake) is left as it is.
func socketError(err error) error {
	var errno syscall.Errno
	switch err.(type) {
	case *os.SyscallError, *net.OpError:
		if errors.As(err, &errno) {
			return errno
		}
	}
	return err
}

// privilegedPortHint says how to listen on a port below 1024 without root,
// when binding addr was refused for want of the right to: "" otherwise.
func privilegedPortHint(addr string, err error) string {
	if !errors.Is(err, syscall.EACCES) {
		return ""
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	start := 1024
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			start = n
		}
	}
	if port <= 0 || port >= start {
		return ""
	}
	return fmt.Sprintf(" (ports below %d need root or CAP_NET_BIND_SERVICE: AmbientCapabilities=CAP_NET_BIND_SERVICE in the systemd unit, or setcap cap_net_bind_service=+ep on the tcpops binary)", start)
}
