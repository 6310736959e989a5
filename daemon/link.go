package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// link is the old and the new process's end of an upgrade: a Unix
// SOCK_SEQPACKET socket pair, so that each message arrives whole and the
// descriptors sent with a message arrive with it. A message is one kind
// byte and its payload: 'J' a JSON object with a "type", 'F' descriptors
// (SCM_RIGHTS, at most maxFDsPerMsg), 'D' a chunk of the state document.
type link struct {
	c  *net.UnixConn
	mu sync.Mutex // keeps messages of concurrent senders whole
}

const (
	maxFDsPerMsg = 253 // SCM_MAX_FD
	chunkSize    = 60 << 10
)

// newLinkPair makes both ends; the second goes to the new process.
func newLinkPair() (*link, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	l, err := linkFromFD(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return l, os.NewFile(uintptr(fds[1]), "upgrade-link"), nil
}

// linkFromFD makes a link of an inherited descriptor.
func linkFromFD(fd int) (*link, error) {
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "upgrade-link")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("upgrade link: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("upgrade link: not a Unix socket")
	}
	return &link{c: uc}, nil
}

func (l *link) Close() error { return l.c.Close() }

// send writes one message; fds go with it.
func (l *link) send(kind byte, payload []byte, fds []int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	msg := append([]byte{kind}, payload...)
	l.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for tries := 0; ; tries++ {
		_, _, err := l.c.WriteMsgUnix(msg, oob, nil)
		// ETOOMANYREFS: too many descriptors in flight for an unprivileged
		// user; the reader takes them soon.
		if errors.Is(err, unix.ETOOMANYREFS) && tries < 1000 {
			time.Sleep(time.Millisecond)
			continue
		}
		return err
	}
}

// sendJSON sends a 'J' message.
func (l *link) sendJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return l.send('J', b, nil)
}

// sendFDs sends descriptors in messages of at most maxFDsPerMsg.
func (l *link) sendFDs(fds []int) error {
	for len(fds) > 0 {
		n := min(len(fds), maxFDsPerMsg)
		if err := l.send('F', nil, fds[:n]); err != nil {
			return fmt.Errorf("sending descriptors: %w", err)
		}
		fds = fds[n:]
	}
	return nil
}

// sendDoc sends a document in chunks.
func (l *link) sendDoc(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), chunkSize)
		if err := l.send('D', b[:n], nil); err != nil {
			return fmt.Errorf("sending the state: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// msg is a message read.
type msg struct {
	kind    byte
	payload []byte
	fds     []int
	typ     string // of a 'J' message
}

// recv reads one message, waiting until deadline (zero: no limit).
// Descriptors received are close-on-exec.
func (l *link) recv(deadline time.Time) (msg, error) {
	buf := make([]byte, chunkSize+1024)
	oob := make([]byte, unix.CmsgSpace(maxFDsPerMsg*4))
	l.c.SetReadDeadline(deadline)
	n, oobn, flags, _, err := l.c.ReadMsgUnix(buf, oob)
	var m msg
	if oobn > 0 {
		cms, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr == nil {
			for _, cm := range cms {
				if fds, err := unix.ParseUnixRights(&cm); err == nil {
					for _, fd := range fds {
						unix.CloseOnExec(fd)
					}
					m.fds = append(m.fds, fds...)
				}
			}
		}
	}
	if err != nil {
		closeAll(m.fds)
		return msg{}, err
	}
	if n == 0 {
		closeAll(m.fds)
		return msg{}, errors.New("upgrade link closed by the other process")
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll(m.fds)
		return msg{}, errors.New("upgrade link: message cut short")
	}
	m.kind, m.payload = buf[0], buf[1:n]
	if m.kind == 'J' {
		var t struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(m.payload, &t); err != nil {
			return msg{}, fmt.Errorf("upgrade link: bad message: %w", err)
		}
		m.typ = t.Type
	}
	return m, nil
}

// expect reads the next message, which must be a 'J' of type typ (or
// "refuse", whose error is returned).
func (l *link) expect(deadline time.Time, typ string, v any) error {
	m, err := l.recv(deadline)
	if err != nil {
		return err
	}
	if m.kind != 'J' {
		closeAll(m.fds)
		return fmt.Errorf("upgrade link: got a %q message, want %s", m.kind, typ)
	}
	if m.typ == "refuse" && typ != "refuse" {
		var r struct {
			Error string `json:"error"`
		}
		json.Unmarshal(m.payload, &r)
		return &refusedError{r.Error}
	}
	if m.typ != typ {
		return fmt.Errorf("upgrade link: got %q, want %s", m.typ, typ)
	}
	if v != nil {
		return json.Unmarshal(m.payload, v)
	}
	return nil
}

// refusedError is the new process's reason for refusing a handover.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return "the new process refused the handover: " + e.msg }

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
