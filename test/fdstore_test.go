package test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/daemon/daemontest"
	"github.com/tcpops/tcpops/internal/testutil"
	"github.com/tcpops/tcpops/rpc"
)

// fakeSystemd is the notify socket of a service manager with a
// file-descriptor store: it keeps what FDSTORE=1 sends, with its FDNAME,
// and forgets what FDSTOREREMOVE=1 names, as systemd does. No systemd
// runs as the init of this machine, so the test plays its part: the
// protocol on both sides (sd_notify with SCM_RIGHTS; LISTEN_FDS,
// LISTEN_FDNAMES and LISTEN_PID at the next start) is the real one.
type fakeSystemd struct {
	pc *net.UnixConn

	mu      sync.Mutex
	fds     []int
	names   []string
	removed []string
	states  []string
}

func startFakeSystemd(t *testing.T, path string) *fakeSystemd {
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	pc.SetReadBuffer(4 << 20)
	s := &fakeSystemd{pc: pc}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		oob := make([]byte, unix.CmsgSpace(253*4))
		for {
			n, oobn, _, _, err := pc.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			var fds []int
			if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, cm := range cms {
					if f, err := unix.ParseUnixRights(&cm); err == nil {
						fds = append(fds, f...)
					}
				}
			}
			kv := map[string]string{}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if k, v, ok := strings.Cut(l, "="); ok {
					kv[k] = v
				}
			}
			s.mu.Lock()
			s.states = append(s.states, string(buf[:n]))
			switch {
			case kv["FDSTORE"] == "1":
				for _, fd := range fds {
					s.fds = append(s.fds, fd)
					s.names = append(s.names, kv["FDNAME"])
				}
			case kv["FDSTOREREMOVE"] == "1":
				s.removed = append(s.removed, kv["FDNAME"])
			default:
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
		for _, fd := range s.fds {
			unix.Close(fd)
		}
	})
	return s
}

// TestRestartKeepsConnectionsInTheFDStore: tcpops --fd-store stops on
// SIGTERM with its plain TCP connections in the store; the next start,
// given them back in another order, takes over every stream, conid,
// setting and the event seq.
func TestRestartKeepsConnectionsInTheFDStore(t *testing.T) {
	dir, _ := os.MkdirTemp("", "tcpops")
	defer os.RemoveAll(dir)
	sd := startFakeSystemd(t, filepath.Join(dir, "notify"))
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify"))
	backend := startUpgradeBackend(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	relayAddr := "127.0.0.1:" + port
	socket := filepath.Join(dir, "s")
	args := []string{"--listen", "tcp://" + relayAddr + "?backend=" + backend.ln.Addr().String(), "--fd-store", "--lifetime", "5m"}
	d := startDaemon(t, socket, args...)
	args = append([]string{"--socket", socket, "--listen", "tcp://" + d.addr}, args...)

	// A closed connection: the ring has an event to carry.
	c0, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	c0.Close()
	testutil.WaitFor(t, "the first event", func() bool { return mustStats(t, socket).EventSeq == 1 })

	var streams []*counterStream
	for i := range 3 {
		c, err := net.Dial("tcp", relayAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("e"))
		streams = append(streams, startCounterStream(fmt.Sprintf("relayed %d", i), c))
		e, err := net.Dial("tcp", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, startCounterStream(fmt.Sprintf("echo %d", i), e))
	}
	half := startHalfClosed(t, relayAddr)
	for _, s := range streams {
		s.progress(t, 1000)
	}
	testutil.WaitFor(t, "the half-closed client receiving", func() bool { return half.got.Load() > 100 || half.err != nil })
	var lt rpc.LifetimeResult
	before := listConns(t, socket)
	var some uint64
	for id := range before {
		some = max(some, id)
	}
	callDaemon(t, socket, rpc.MethodLifetime, map[string]any{"conid": some, "lifetime": 444}, &lt)
	before = listConns(t, socket)

	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("tcpops --fd-store after SIGTERM: %v", err)
	}
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("the control socket file is gone after a stop into the fd store: %v", err)
	}
	// Every socket and the state: the two listeners, the control socket, the
	// memfd, both legs of each relayed pair and each echo connection. The
	// datagrams are all sent by now, but the store reads them on its own
	// goroutine.
	const want = 2 + 1 + 1 + 3*2 + 3 + 2
	stored := func() int {
		sd.mu.Lock()
		defer sd.mu.Unlock()
		return len(sd.fds)
	}
	testutil.WaitFor(t, "the fd store to receive every descriptor", func() bool { return stored() >= want })
	sd.mu.Lock()
	fds, names := slices.Clone(sd.fds), slices.Clone(sd.names)
	sd.fds, sd.names = nil, nil
	sd.mu.Unlock()
	if len(fds) != want {
		t.Fatalf("fd store holds %d descriptors (%v), want %d", len(fds), names, want)
	}
	// A stream waits meanwhile; nothing is lost.
	slices.Reverse(fds)
	slices.Reverse(names)
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), names[i])
	}
	sd.mu.Lock()
	sd.fds = nil
	sd.mu.Unlock()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, filepath.Join(binDir, "tcpops"))
	cmd.Args = append(cmd.Args, args...)
	cmd.Env = append(os.Environ(), "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	cmd.ExtraFiles = files
	var logs daemontest.Buffer
	cmd.Stderr = &logs
	restarted := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("restarted daemon log:\n%s", logs.String())
		}
	})
	testutil.WaitFor(t, "the restarted daemon", func() bool {
		sd.mu.Lock()
		defer sd.mu.Unlock()
		return len(sd.removed) == 3
	})
	t.Logf("restarted and serving in %s", time.Since(restarted))
	after := listConns(t, socket)
	for id, b := range before {
		a, ok := after[id]
		if !ok {
			t.Errorf("conid %d missing after the restart", id)
			continue
		}
		if a.Peer != b.Peer || a.Local != b.Local || a.Remote != b.Remote || !a.Created.Equal(b.Created) ||
			a.LifetimeS != b.LifetimeS || fmt.Sprint(a.Keepalive) != fmt.Sprint(b.Keepalive) || a.Draining != nil {
			t.Errorf("conid %d changed:\nbefore %+v\nafter  %+v", id, b, a)
		}
	}
	if len(after) != len(before) {
		t.Errorf("%d connections after the restart, %d before", len(after), len(before))
	}
	for _, s := range streams {
		s.progress(t, 1000)
		s.finish(t)
	}
	close(backend.stopHalf)
	<-half.done
	if half.err != nil || half.got.Load() < 200 {
		t.Errorf("half-closed client: %d counters, %v", half.got.Load(), half.err)
	}
	st := mustStats(t, socket)
	if st.EventSeq < 1 {
		t.Errorf("event seq %d after the restart, want the old one carried on", st.EventSeq)
	}
	var ev rpc.EventsResult
	callDaemon(t, socket, rpc.MethodEvents, nil, &ev)
	for i, e := range ev.Events {
		if e.Seq != uint64(i+1) {
			t.Fatalf("events after the restart: seq %d at %d", e.Seq, i)
		}
	}
	sd.mu.Lock()
	states := strings.Join(sd.states, "|")
	sd.mu.Unlock()
	if !strings.Contains(states, "MAINPID="+strconv.Itoa(cmd.Process.Pid)) || !bytes.Contains([]byte(states), []byte("READY=1")) {
		t.Errorf("notifications %q: want MAINPID of the restarted daemon and READY=1", states)
	}
}
