package sock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Kernel limits of the keepalive options (net/ipv4/tcp.c).
const (
	MaxKeepIdle     = 32767
	MaxKeepCount    = 127
	MaxKeepInterval = 32767
)

// Keepalive is the keepalive state of one socket. Idle and Interval are in
// seconds. UserTimeoutMs is TCP_USER_TIMEOUT (0: the kernel's default).
type Keepalive struct {
	Enabled       bool `json:"enabled"`
	Idle          int  `json:"idle"`
	Count         int  `json:"count"`
	Interval      int  `json:"interval"`
	UserTimeoutMs int  `json:"user_timeout_ms"`
}

// KeepaliveConfig says what to do with keepalive on a socket.
// With Enable false keepalive is switched off (SO_KEEPALIVE 0). With Enable
// true and Idle, Count and Interval zero, only SO_KEEPALIVE is set and the
// kernel's sysctl defaults apply. UserTimeoutMs < 0 leaves TCP_USER_TIMEOUT
// as it is.
type KeepaliveConfig struct {
	Enable        bool
	Idle          int
	Count         int
	Interval      int
	UserTimeoutMs int
}

// ParamError names a keepalive parameter that is out of range.
type ParamError struct {
	Param string
	Value int
	Range string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("%s %d out of range (want %s)", e.Param, e.Value, e.Range)
}

// Validate checks the values against the kernel's ranges.
func (k KeepaliveConfig) Validate() error {
	if !k.Enable {
		return nil
	}
	if k.Idle == 0 && k.Count == 0 && k.Interval == 0 {
		return nil
	}
	for _, p := range []struct {
		name string
		v    int
		max  int
	}{{"idle", k.Idle, MaxKeepIdle}, {"count", k.Count, MaxKeepCount}, {"interval", k.Interval, MaxKeepInterval}} {
		if p.v < 1 || p.v > p.max {
			return &ParamError{Param: p.name, Value: p.v, Range: fmt.Sprintf("1..%d", p.max)}
		}
	}
	if k.UserTimeoutMs > 0x7fffffff {
		return &ParamError{Param: "user_timeout_ms", Value: k.UserTimeoutMs, Range: "0..2147483647"}
	}
	return nil
}

// ParseKeepalive parses the --keepalive flag: off, on, or IDLE,COUNT,INTERVAL.
func ParseKeepalive(s string) (KeepaliveConfig, error) {
	switch strings.TrimSpace(s) {
	case "off":
		return KeepaliveConfig{UserTimeoutMs: -1}, nil
	case "on":
		return KeepaliveConfig{Enable: true, UserTimeoutMs: -1}, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return KeepaliveConfig{}, fmt.Errorf("keepalive %q: want off, on or IDLE,COUNT,INTERVAL (seconds, e.g. 60,5,5)", s)
	}
	var v [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return KeepaliveConfig{}, fmt.Errorf("keepalive %q: %q is not a whole number: want IDLE,COUNT,INTERVAL", s, p)
		}
		v[i] = n
	}
	k := KeepaliveConfig{Enable: true, Idle: v[0], Count: v[1], Interval: v[2], UserTimeoutMs: -1}
	if err := k.Validate(); err != nil {
		return KeepaliveConfig{}, fmt.Errorf("keepalive %q: %w", s, err)
	}
	return k, nil
}

// String gives the flag form of k.
func (k KeepaliveConfig) String() string {
	switch {
	case !k.Enable:
		return "off"
	case k.Idle == 0:
		return "on"
	}
	return fmt.Sprintf("%d,%d,%d", k.Idle, k.Count, k.Interval)
}

// OpError is a failed socket option call; it keeps the errno.
type OpError struct {
	Op  string
	Err error
}

func (e *OpError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// control runs fn on the socket's descriptor and returns fn's error, or the
// error of reaching the descriptor (a closed socket).
func control(c syscall.Conn, fn func(fd int) error) error {
	if f, ok := c.(*FD); ok { // no RawConn, no closure on the heap
		if err := f.do(fn); err == net.ErrClosed {
			return &OpError{Op: "control", Err: err}
		} else {
			return err
		}
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return &OpError{Op: "syscallconn", Err: err}
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return &OpError{Op: "control", Err: err}
	}
	return ferr
}

func setInt(fd, level, opt int, name string, v int) error {
	if err := rawSetsockoptInt(fd, level, opt, v); err != nil {
		return &OpError{Op: fmt.Sprintf("setsockopt %s=%d", name, v), Err: os.NewSyscallError("setsockopt", err)}
	}
	return nil
}

// SetKeepalive applies k to the socket. Every value is set explicitly, so
// nothing of Go's own default (15 s) survives.
func SetKeepalive(c syscall.Conn, k KeepaliveConfig) error {
	if err := k.Validate(); err != nil {
		return err
	}
	return control(c, func(fd int) error {
		if !k.Enable {
			if err := setInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE", 0); err != nil {
				return err
			}
		} else {
			idle, count, intvl := k.Idle, k.Count, k.Interval
			if idle == 0 {
				idle, count, intvl = kernelKeepalive()
			}
			for _, o := range []struct {
				level, opt int
				name       string
				v          int
			}{
				{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", idle},
				{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, "TCP_KEEPCNT", count},
				{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", intvl},
				{unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE", 1},
			} {
				if err := setInt(fd, o.level, o.opt, o.name, o.v); err != nil {
					return err
				}
			}
		}
		if k.UserTimeoutMs >= 0 {
			return setInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", k.UserTimeoutMs)
		}
		return nil
	})
}

// SetKeepaliveOver applies k to a socket whose keepalive is known to be
// now (read from the kernel for this socket, for the listening socket it
// was accepted from, which it inherits, or for a new socket; a user
// timeout of -1 is not known): only the
// options whose value differs are set, in SetKeepalive's order. With now
// nil it is SetKeepalive. The kernel holds exactly what a setsockopt that
// succeeded gave it, so nothing is read back.
func SetKeepaliveOver(c syscall.Conn, k KeepaliveConfig, now *Keepalive) error {
	if now == nil {
		return SetKeepalive(c, k)
	}
	if err := k.Validate(); err != nil {
		return err
	}
	type opt struct {
		level, opt int
		name       string
		v          int
	}
	var set [5]opt
	n := 0
	if k.Enable {
		idle, count, intvl := k.Idle, k.Count, k.Interval
		if idle == 0 {
			idle, count, intvl = kernelKeepalive()
		}
		if idle != now.Idle {
			set[n] = opt{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", idle}
			n++
		}
		if count != now.Count {
			set[n] = opt{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, "TCP_KEEPCNT", count}
			n++
		}
		if intvl != now.Interval {
			set[n] = opt{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", intvl}
			n++
		}
	}
	if k.Enable != now.Enabled {
		v := 0
		if k.Enable {
			v = 1
		}
		set[n] = opt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE", v}
		n++
	}
	if k.UserTimeoutMs >= 0 && (now.UserTimeoutMs < 0 || k.UserTimeoutMs != now.UserTimeoutMs) {
		set[n] = opt{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", k.UserTimeoutMs}
		n++
	}
	if n == 0 {
		return nil
	}
	if f, ok := c.(*FD); ok { // the relay's sockets: nothing on the heap
		err := f.do(func(fd int) error {
			for _, o := range set[:n] {
				if err := setInt(fd, o.level, o.opt, o.name, o.v); err != nil {
					return err
				}
			}
			return nil
		})
		if err == net.ErrClosed {
			return &OpError{Op: "control", Err: err}
		}
		return err
	}
	opts := append([]opt(nil), set[:n]...) // a copy: set stays on the stack
	return control(c, func(fd int) error {
		for _, o := range opts {
			if err := setInt(fd, o.level, o.opt, o.name, o.v); err != nil {
				return err
			}
		}
		return nil
	})
}

// NewSocketKeepalive is the keepalive a new TCP socket of this process
// starts with (read once from one made for the purpose); false when it
// could not be read.
func NewSocketKeepalive() (Keepalive, bool) { return newSocketKeepalive() }

var newSocketKeepalive = sync.OnceValues(func() (Keepalive, bool) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Keepalive{}, false
	}
	defer unix.Close(fd)
	k, err := getKeepaliveFD(fd)
	return k, err == nil
})

// ApplyKeepalive sets k and returns what the kernel holds afterwards.
func ApplyKeepalive(c syscall.Conn, k KeepaliveConfig) (Keepalive, error) {
	if err := SetKeepalive(c, k); err != nil {
		return Keepalive{}, err
	}
	return GetKeepalive(c)
}

// GetKeepalive reads the keepalive state back from the kernel.
func GetKeepalive(c syscall.Conn) (Keepalive, error) {
	var k Keepalive
	err := control(c, func(fd int) error {
		var err error
		k, err = getKeepaliveFD(fd)
		return err
	})
	return k, err
}

// ListeningKeepalive reads the keepalive of a listening socket: what every
// connection accepted from it starts with. The kernel does not say the
// user timeout of a listening socket (EOPNOTSUPP): UserTimeoutMs is then
// -1, unknown, and SetKeepaliveOver sets any user timeout asked for.
func ListeningKeepalive(c syscall.Conn) (Keepalive, error) {
	var k Keepalive
	err := control(c, func(fd int) error {
		var err error
		k, err = getKeepaliveFD(fd)
		if err != nil && errors.Is(err, unix.EOPNOTSUPP) {
			v, e := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			if e != nil {
				return err
			}
			k = Keepalive{Enabled: v != 0, UserTimeoutMs: -1}
			for _, o := range []struct {
				opt int
				p   *int
			}{{unix.TCP_KEEPIDLE, &k.Idle}, {unix.TCP_KEEPCNT, &k.Count}, {unix.TCP_KEEPINTVL, &k.Interval}} {
				if *o.p, e = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, o.opt); e != nil {
					return err
				}
			}
			err = nil
		}
		return err
	})
	return k, err
}

func getKeepaliveFD(fd int) (Keepalive, error) {
	var vals [5]int
	for i, o := range []struct {
		level, opt int
		name       string
	}{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, "TCP_KEEPCNT"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL"},
		{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"},
	} {
		v, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if err != nil {
			return Keepalive{}, &OpError{Op: "getsockopt " + o.name, Err: os.NewSyscallError("getsockopt", err)}
		}
		vals[i] = v
	}
	return Keepalive{Enabled: vals[0] != 0, Idle: vals[1], Count: vals[2], Interval: vals[3], UserTimeoutMs: vals[4]}, nil
}

// kernelDefaults holds the sysctl keepalive defaults, read once; they are
// what a socket gets when only SO_KEEPALIVE is set.
var kernelDefaults = sync.OnceValues(func() (int, [2]int) {
	i, c, v := readKernelDefaults()
	return i, [2]int{c, v}
})

func kernelKeepalive() (idle, count, interval int) {
	i, cv := kernelDefaults()
	return i, cv[0], cv[1]
}

func readKernelDefaults() (idle, count, interval int) {
	read := func(name string, def int) int {
		b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
		if err != nil {
			return def
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || n < 1 {
			return def
		}
		return n
	}
	return read("tcp_keepalive_time", 7200), read("tcp_keepalive_probes", 9), read("tcp_keepalive_intvl", 75)
}
