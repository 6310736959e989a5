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

// SystemSocket is the control socket of a daemon run as root or by
// systemd; SystemSocketDir is its directory, the one directory Listen
// creates when it is missing.
const (
	SystemSocket    = "/run/tcpops/tcpops.sock"
	SystemSocketDir = "/run/tcpops"
)

// DefaultSocketPath is where the daemon listens when no --socket is given:
// $TCPOPS_SOCKET, else SystemSocket for root, else
// $XDG_RUNTIME_DIR/tcpops.sock, else /tmp/tcpops-UID.sock.
func DefaultSocketPath() string {
	if p := os.Getenv("TCPOPS_SOCKET"); p != "" {
		return p
	}
	if os.Geteuid() == 0 {
		return SystemSocket
	}
	return userSocketPath()
}

// userSocketPath is the socket of a daemon run by a user other than root.
func userSocketPath() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "tcpops.sock")
	}
	return "/tmp/tcpops-" + strconv.Itoa(os.Geteuid()) + ".sock"
}

// ClientSocketPaths are the sockets a client tries, in order, when no
// --socket is given: $TCPOPS_SOCKET alone when set; SystemSocket for root;
// for anyone else SystemSocket when it exists or may (its directory is
// closed to the user), since a system daemon is the one an operator means,
// then the user's own default.
func ClientSocketPaths() []string {
	if p := os.Getenv("TCPOPS_SOCKET"); p != "" {
		return []string{p}
	}
	if os.Geteuid() == 0 {
		return []string{SystemSocket}
	}
	var paths []string
	// A directory the user may not enter (RuntimeDirectoryMode=0750) hides
	// the socket: tried all the same, so that the message says why.
	if _, err := os.Lstat(SystemSocket); err == nil || errors.Is(err, fs.ErrPermission) {
		paths = append(paths, SystemSocket)
	}
	return append(paths, userSocketPath())
}

// ErrInUse is returned by Listen when a live daemon answers on the path.
var ErrInUse = errors.New("a live daemon is serving this socket")

// Listen creates the control socket at path with the given file mode. Its
// directory must exist, except SystemSocketDir, which is created (mode
// 0755, as systemd's RuntimeDirectory= makes it). A stale socket file
// (nobody answering) is replaced; a live one is never taken over, and a
// path that is not a socket is left alone.
func Listen(path string, mode fs.FileMode) (*net.UnixListener, error) {
	if err := socketDir(path); err != nil {
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

// socketDir checks that the directory of path exists, creating only
// SystemSocketDir: a mistyped --socket must not leave directories behind.
func socketDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case err == nil:
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return err
	case filepath.Clean(dir) != SystemSocketDir:
		return fmt.Errorf("directory %s does not exist (create it, or choose another --socket)", dir)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return os.Chmod(dir, 0o755) // whatever the umask
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
