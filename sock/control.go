package sock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// DefaultSocketPath is where daemon and CLI meet when no --socket is given:
// $TCPOPS_SOCKET, else /run/tcpops/tcpops.sock for root, else
// $XDG_RUNTIME_DIR/tcpops.sock, else /tmp/tcpops-UID.sock.
func DefaultSocketPath() string {
	if p := os.Getenv("TCPOPS_SOCKET"); p != "" {
		return p
	}
	uid := os.Geteuid()
	if uid == 0 {
		return "/run/tcpops/tcpops.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "tcpops.sock")
	}
	return "/tmp/tcpops-" + strconv.Itoa(uid) + ".sock"
}

// ErrInUse is returned by Listen when a live daemon answers on the path.
var ErrInUse = errors.New("a live daemon is serving this socket")

// Listen creates the control socket at path with the given file mode. The
// parent directory is created if missing. A stale socket file (nobody
// answering) is replaced; a live one is never taken over, and a path that
// is not a socket is left alone.
func Listen(path string, mode fs.FileMode) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket; remove it or choose another --socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: %w (stop it first or choose another --socket)", path, ErrInUse)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("control socket %s: checking for a live daemon: %w", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("control socket %s: removing stale socket: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

// Dial connects to the control socket at path within timeout.
func Dial(path string, timeout time.Duration) (*net.UnixConn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
