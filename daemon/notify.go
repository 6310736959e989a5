package daemon

import (
	"net"
	"os"
)

// notify sends a state to the service manager (sd_notify(3)): READY=1
// once listening, STOPPING=1 when shutting down. Without NOTIFY_SOCKET
// (not started by systemd with Type=notify) it does nothing.
func notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
