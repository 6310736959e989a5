package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/sock"
)

// A restart through systemd keeps the connections in systemd's
// file-descriptor store (FileDescriptorStoreMax= in the unit, --fd-store
// here): on SIGTERM the daemon freezes its plain TCP connections as for an
// upgrade, closes its TLS and WebSocket ones (reason shutdown), writes the
// state document into a memfd and gives systemd that and every socket
// (sd_notify FDSTORE=1 with FDNAME=). The next start gets them back
// through LISTEN_FDS and LISTEN_FDNAMES, finds each socket by its
// addresses (the store does not keep their order), checks them against
// the document as an upgrade does, takes over, and empties the store.

// The names of the descriptors in the store.
const (
	storeState   = "tcpops-state"
	storeSockets = "tcpops-listen"
	storeConns   = "tcpops-conn"
)

// notifyFDs sends a state with descriptors to the service manager.
func notifyFDs(state string, fds []int) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return errors.New("NOTIFY_SOCKET is not set: not started by systemd")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return os.NewSyscallError("sendmsg", unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: path}, 0))
}

// stash keeps every plain TCP connection and listening socket in
// systemd's store for the next start, and stops this process without
// closing them. TLS and WebSocket connections close with reason shutdown
// first (their events are in the stored ring). On error nothing is
// stored and the caller shuts down as usual.
func (d *Daemon) stash(grace time.Duration) error {
	p, err := d.pause()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	fr, err := d.Relay.Freeze(ctx, nil)
	if err != nil {
		d.unpause(p)
		return err
	}
	held := 0
	for _, h := range fr.Handed {
		held += len(h.Conns)
	}
	// What is not held cannot be kept: closed here, with its event.
	d.Table.CloseAll(conn.ReasonShutdown)
	for d.Table.Len() > held && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	nextSeq, kept := d.Table.Events().Seal(func(e conn.Event) {})
	doc, fds := d.buildDoc(p, fr.Handed)
	doc.Table = d.Table.Export()
	doc.Table.NextSeq, doc.Table.Events = nextSeq, kept
	doc.Draining = d.drainingStates(time.Now())
	doc.Counts.Draining = len(doc.Draining)
	b, err := json.Marshal(doc)
	if err == nil {
		err = storeAll(b, fds, len(p.listeners)+1+btoi(p.metrics != nil))
	}
	if err != nil {
		notify("FDSTOREREMOVE=1\nFDNAME=" + storeState)
		notify("FDSTOREREMOVE=1\nFDNAME=" + storeSockets)
		notify("FDSTOREREMOVE=1\nFDNAME=" + storeConns)
		fr.Resume()
		d.Table.Events().Unseal(func() []conn.Event { return nil })
		d.unpause(p)
		return err
	}
	fr.Commit()
	d.commitSockets(p)
	d.Table.Events().Close()
	d.cancel()
	var errs []error
	if !waitGroup(ctx, &d.wg) {
		errs = append(errs, errors.New("stash: event followers still reading"))
	}
	d.RPC.Wait()
	if d.bus != nil {
		if err := d.bus.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	d.Relay.Close()
	d.log.Info("tcpops stopped; connections kept in systemd's file-descriptor store",
		"connections", doc.Counts.Entries, "listeners", len(doc.Listeners), "last_event_seq", nextSeq-1)
	return errors.Join(errs...)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// storeAll gives systemd the state document in a memfd and the
// descriptors: the first nsockets are listening sockets.
func storeAll(doc []byte, fds []int, nsockets int) error {
	mfd, err := unix.MemfdCreate(storeState, unix.MFD_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("memfd_create", err)
	}
	defer unix.Close(mfd)
	f := os.NewFile(uintptr(mfd), storeState)
	if _, err := f.Write(doc); err != nil {
		return fmt.Errorf("writing the state: %w", err)
	}
	if err := notifyFDs("FDSTORE=1\nFDNAME="+storeState, []int{mfd}); err != nil {
		return fmt.Errorf("fd store: %w", err)
	}
	for i := 0; i < len(fds); {
		name, end := storeConns, min(i+maxFDsPerMsg, len(fds))
		if i < nsockets {
			name, end = storeSockets, min(end, nsockets)
		}
		if err := notifyFDs("FDSTORE=1\nFDNAME="+name, fds[i:end]); err != nil {
			return fmt.Errorf("fd store: %w", err)
		}
		i = end
	}
	return nil
}

// inheritStore takes over what a stopped process left in systemd's store
// (LISTEN_FDS, LISTEN_FDNAMES for this pid); nil when there is none.
func inheritStore(cfg *Config) (*inherited, error) {
	pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID"))
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if pid != os.Getpid() || n <= 0 {
		return nil, nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	const first = 3 // SD_LISTEN_FDS_START
	var state = -1
	var rest []int
	for i := range n {
		fd := first + i
		unix.CloseOnExec(fd)
		if i < len(names) && names[i] == storeState {
			state = fd
			continue
		}
		rest = append(rest, fd)
	}
	if state < 0 {
		closeAll(rest)
		return nil, fmt.Errorf("systemd passed %d descriptor(s) but no %s: nothing to take over", n, storeState)
	}
	f := os.NewFile(uintptr(state), storeState)
	raw, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
	f.Close()
	if err != nil {
		closeAll(rest)
		return nil, fmt.Errorf("reading %s: %w", storeState, err)
	}
	doc := &handoverDoc{}
	if err := json.Unmarshal(raw, doc); err != nil {
		closeAll(rest)
		return nil, fmt.Errorf("%s: %w", storeState, err)
	}
	if doc.Format != formatNumber() {
		closeAll(rest)
		return nil, fmt.Errorf("%s: format %d, this build reads format %d", storeState, doc.Format, formatNumber())
	}
	// The store keeps no order: each socket is found by what it is. One
	// that ended meanwhile has no peer address any more; it stands in for
	// any connection of its local address (it is closed either way: the
	// relay finds it so and reports it).
	byKey := map[string][]int{}
	for _, fd := range rest {
		d, err := sock.Describe(fd)
		if err != nil {
			closeAll(rest)
			return nil, err
		}
		k := d.Path
		if k == "" {
			k = d.Local.String() + "|" + d.Remote.String()
			if d.Listening {
				k = d.Local.String()
			}
		}
		byKey[k] = append(byKey[k], fd)
	}
	h := &inherited{doc: doc, store: true, fds: make([]int, doc.Counts.FDs)}
	for i := range h.fds {
		h.fds[i] = -1
	}
	take := func(key string) (int, bool) {
		fds := byKey[key]
		if len(fds) == 0 {
			return -1, false
		}
		byKey[key] = fds[1:]
		return fds[0], true
	}
	place := func(idx int, key string, dead string) error {
		fd, ok := take(key)
		if !ok && dead != "" {
			fd, ok = take(dead)
		}
		if !ok || idx < 0 || idx >= len(h.fds) {
			unix.Close(fd)
			return fmt.Errorf("socket %s is not among those systemd passed", key)
		}
		h.fds[idx] = fd
		return nil
	}
	err = nil
	for _, l := range doc.Listeners {
		err = errors.Join(err, place(l.FD, l.Addr, ""))
	}
	if doc.Control != nil {
		err = errors.Join(err, place(doc.Control.FD, doc.Control.Addr, ""))
	}
	if doc.Metrics != nil {
		err = errors.Join(err, place(doc.Metrics.FD, doc.Metrics.Addr, ""))
	}
	for _, hc := range doc.Conns {
		for i, cs := range hc.Conns {
			if i >= len(hc.FDs) {
				break
			}
			peer := cs.Remote
			if cs.Via.IsValid() {
				peer = cs.Via
			}
			err = errors.Join(err, place(hc.FDs[i], cs.Local.String()+"|"+peer.String(), cs.Local.String()+"|"+netip.AddrPort{}.String()))
		}
	}
	for _, fds := range byKey {
		closeAll(fds)
	}
	if err == nil {
		err = h.checkDoc(cfg)
	}
	if err != nil {
		h.closeRest()
		return nil, fmt.Errorf("%s: %w", storeState, err)
	}
	return h, nil
}

// emptyStore takes this process's descriptors out of systemd's store once
// they are taken over (the store would otherwise hold every connection
// open after this process closed it).
func emptyStore() {
	for _, name := range []string{storeState, storeSockets, storeConns} {
		notify("FDSTOREREMOVE=1\nFDNAME=" + name)
	}
}

// gotSignal reports whether ch has a signal or gets one very soon (the
// signal that ended the context is sent to every channel registered).
func gotSignal(ch <-chan os.Signal) bool {
	select {
	case <-ch:
		return true
	case <-time.After(100 * time.Millisecond):
		return false
	}
}
