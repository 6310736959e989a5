package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// Statuses of a doctor check.
const (
	statusOK   = "ok"
	statusWarn = "warn"
	statusFail = "fail"
)

// check is one finding of doctor: what was checked, how it stands, what
// was seen and what to do about it.
type check struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Hint   string `json:"hint,omitempty"`
}

// doctorReport is what doctor -o json prints.
type doctorReport struct {
	Socket string  `json:"socket"`
	Checks []check `json:"checks"`
	// OK is false when a check failed (exit 1).
	OK bool `json:"ok"`
}

// fdReserve is what the daemon needs besides its connections: listeners,
// control clients, the event log, the poller.
const fdReserve = 64

// nearLifetime is the share of its lifetime left under which a connection
// counts as about to be closed for idleness.
const nearLifetime = 0.1

func newDoctorCmd(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check the daemon and this caller's setup, and say what to do",
		Long: `Check what makes tcpopsctl and the daemon work well together, each as OK,
WARN or FAIL with what was seen and what to do:

  socket       which path and which rule chose it (--socket, $TCPOPS_SOCKET, the
               default for root, $XDG_RUNTIME_DIR, /tmp), and that it answers
  rights       admin or read-only, and the rule the daemon applied to your uid
  version      tcpopsctl's and the daemon's versions
  open-files   the daemon's open-files limit against --max-conns (each relayed
               connection holds two descriptors)
  capacity     connections now against --max-conns, refusals by a limit
  keepalive    the daemon's keepalive against the kernel's net.ipv4.tcp_keepalive_*
               sysctls (read in tcpopsctl's network namespace)
  listeners    listeners bound
  events       the closed-event ring's use and events lost by slow followers
  lifetime     connections that the idle lifetime closes soon
  suspects     connections that look half-open or stuck (see list --suspect)

Exit 0 when nothing failed (warnings included), 1 when a check failed.`,
		Example: "  tcpopsctl doctor\n  tcpopsctl -o json doctor | jq '.checks[] | select(.status != \"ok\")'",
		Args:    args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.NATS != "" {
				return usageErr("doctor checks the daemon on this machine through its socket; run it there without --nats (its nats line shows the link)")
			}
			r := o.doctor(cmd.Context())
			if o.Output == "json" {
				if err := printJSON(o.Stdout, r); err != nil {
					return err
				}
			} else {
				printChecks(o, r.Checks)
			}
			if !r.OK {
				return negative
			}
			return nil
		},
	}
}

func printChecks(o *Options, cs []check) {
	for _, c := range cs {
		fmt.Fprintf(o.Stdout, "%-4s  %-10s  %s\n", strings.ToUpper(c.Status), c.Check, c.Detail)
		if c.Hint != "" {
			fmt.Fprintf(o.Stdout, "%-4s  %-10s  -> %s\n", "", "", c.Hint)
		}
	}
}

// doctor runs the checks.
func (o *Options) doctor(parent context.Context) doctorReport {
	path := o.socketPath()
	r := doctorReport{Socket: path, OK: true}
	add := func(c check) {
		r.Checks = append(r.Checks, c)
		if c.Status == statusFail {
			r.OK = false
		}
	}
	ctx, cancel := context.WithTimeout(parent, o.Timeout)
	defer cancel()
	sc, c, release := o.socketCheck(ctx, path)
	add(sc)
	if c == nil {
		return r
	}
	defer release()
	st, err := c.Stats(ctx)
	if err != nil {
		add(check{Check: "daemon", Status: statusFail, Detail: "tcpops.stats failed: " + err.Error(),
			Hint: "see the daemon's log (journalctl -u tcpops)"})
		return r
	}
	add(rightsCheck(st.Caller))
	add(versionCheck(ctx, c))
	add(openFilesCheck(st.Limits))
	add(capacityCheck(st))
	add(keepaliveCheck(st))
	add(listenersCheck(st.Listeners))
	add(eventsCheck(st))
	if st.NATS != nil {
		add(natsCheck(st))
	}
	lc, err := lifetimeCheck(ctx, c)
	if err != nil {
		lc = check{Check: "lifetime", Status: statusFail, Detail: "tcpops.list failed: " + err.Error()}
	}
	add(lc)
	add(suspectsCheck(ctx, c))
	return r
}

// socketRule says which rule chose the socket path, as sock.DefaultSocketPath
// applies them.
func (o *Options) socketRule() string {
	switch {
	case o.Socket != "":
		return "--socket"
	case os.Getenv("TCPOPS_SOCKET") != "":
		return "$TCPOPS_SOCKET"
	case os.Geteuid() == 0:
		return "the default for root"
	case os.Getenv("XDG_RUNTIME_DIR") != "":
		return "$XDG_RUNTIME_DIR"
	}
	return "the default without $XDG_RUNTIME_DIR"
}

// socketCheck finds the socket and dials it; c is nil when it failed.
func (o *Options) socketCheck(ctx context.Context, path string) (check, *client.Client, func()) {
	ck := check{Check: "socket"}
	where := fmt.Sprintf("%s (chosen by %s)", path, o.socketRule())
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		ck.Status, ck.Detail = statusFail, "no socket at "+where
		ck.Hint = "start the daemon (systemctl start tcpops), or point --socket or TCPOPS_SOCKET at its --socket"
		return ck, nil, nil
	case errors.Is(err, fs.ErrPermission):
		ck.Status, ck.Detail = statusFail, "cannot look at "+where+": permission denied on "+filepath.Dir(path)
		ck.Hint = "ask for access to the socket's directory, or run as its owner"
		return ck, nil, nil
	case err != nil:
		ck.Status, ck.Detail = statusFail, where+": "+err.Error()
		return ck, nil, nil
	case fi.Mode()&fs.ModeSocket == 0:
		ck.Status, ck.Detail = statusFail, where+" is not a socket but a "+fi.Mode().Type().String()+" file"
		ck.Hint = "point --socket at the daemon's control socket"
		return ck, nil, nil
	}
	c, release, err := o.dial(ctx)
	if err != nil {
		ck.Status = statusFail
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			ck.Detail = where + " is left over: no daemon answers there"
			ck.Hint = "start the daemon; it replaces a stale socket by itself"
		case errors.Is(err, syscall.EACCES):
			ck.Detail = where + " refuses you: permission denied" + ownerOf(fi)
			ck.Hint = "run as the socket's owner or a member of its group (the daemon's --socket-mode and --admin-group)"
		default:
			ck.Detail = where + ": " + err.Error()
		}
		return ck, nil, nil
	}
	ck.Status, ck.Detail = statusOK, where+" answers"
	return ck, c, release
}

func ownerOf(fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf(" (mode %s, uid %d, gid %d)", fi.Mode().Perm(), st.Uid, st.Gid)
	}
	return ""
}

func rightsCheck(c *rpc.Caller) check {
	ck := check{Check: "rights"}
	switch {
	case c == nil:
		ck.Status, ck.Detail = statusWarn, "the daemon does not say what this caller may do (an older tcpops)"
	case c.Admin:
		ck.Status, ck.Detail = statusOK, fmt.Sprintf("admin: %s; every command works", c.Why)
	default:
		ck.Status = statusWarn
		ck.Detail = fmt.Sprintf("read-only: %s; list, info, events and stats work, keepalive, lifetime, closed-event and close are refused", c.Why)
		ck.Hint = "to change connections run as root or the daemon's user, or join the group the daemon names in --admin-group"
	}
	return ck
}

func versionCheck(ctx context.Context, c *client.Client) check {
	ck := check{Check: "version"}
	v, err := c.Version(ctx)
	if err != nil {
		ck.Status, ck.Detail = statusWarn, "core.version failed: "+err.Error()
		return ck
	}
	mine := rpc.Build().Version
	if v.Version != mine {
		ck.Status = statusWarn
		ck.Detail = fmt.Sprintf("tcpopsctl %s, tcpops %s (%s)", mine, v.Version, v.Go)
		ck.Hint = "install the same version of both; fields the other side does not know are shown empty"
		return ck
	}
	ck.Status, ck.Detail = statusOK, fmt.Sprintf("tcpopsctl and tcpops %s (%s, daemon %s)", mine, runtime.Version(), v.Go)
	return ck
}

func openFilesCheck(l rpc.Limits) check {
	ck := check{Check: "open-files"}
	if l.OpenFiles == 0 {
		ck.Status, ck.Detail = statusWarn, "the daemon does not report its open-files limit (an older tcpops)"
		return ck
	}
	limit := int(min(l.OpenFiles, 1<<31))
	if l.MaxConns == 0 {
		ck.Status = statusWarn
		ck.Detail = fmt.Sprintf("open-files limit %d and no --max-conns: past about %d relayed connections accept fails (EMFILE) instead of refusing clearly",
			limit, max(limit-fdReserve, 0)/2)
		ck.Hint = fmt.Sprintf("set --max-conns %d or lower (each relayed connection holds two descriptors)", max(limit-fdReserve, 0)/2)
		return ck
	}
	need := 2*l.MaxConns + fdReserve
	if limit < need {
		ck.Status = statusFail
		ck.Detail = fmt.Sprintf("open-files limit %d is below what --max-conns %d needs: %d (two per relayed connection, %d more for listeners and control clients)",
			limit, l.MaxConns, need, fdReserve)
		ck.Hint = fmt.Sprintf("raise LimitNOFILE= in the unit (or ulimit -n) to %d or more", need)
		if fits := (limit - fdReserve) / 2; fits > 0 {
			ck.Hint += fmt.Sprintf(", or lower --max-conns to %d", fits)
		}
		return ck
	}
	ck.Status = statusOK
	ck.Detail = fmt.Sprintf("open-files limit %d covers --max-conns %d (needs %d)", limit, l.MaxConns, need)
	return ck
}

func capacityCheck(st rpc.Stats) check {
	ck := check{Check: "capacity", Status: statusOK}
	m := st.Limits.MaxConns
	inbound := st.Connections
	if m > 0 {
		ck.Detail = fmt.Sprintf("%d connections in the table, --max-conns %d inbound", inbound, m)
	} else {
		ck.Detail = fmt.Sprintf("%d connections in the table, no --max-conns", inbound)
	}
	if st.Rejected > 0 {
		ck.Status = statusWarn
		ck.Detail += fmt.Sprintf("; %d refused by a limit since start", st.Rejected)
		ck.Hint = "see which limit in the daemon's log; raise --max-conns or --max-conns-per-ip if the load is legitimate"
	}
	return ck
}

// kernelKeepalive reads net.ipv4.tcp_keepalive_{time,probes,intvl}.
func kernelKeepalive() (idle, count, interval int, err error) {
	read := func(name string) (int, error) {
		b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_keepalive_" + name)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if idle, err = read("time"); err != nil {
		return
	}
	if count, err = read("probes"); err != nil {
		return
	}
	interval, err = read("intvl")
	return
}

// keepaliveWithin is how long after the last data a vanished peer is found.
func keepaliveWithin(idle, count, interval int) time.Duration {
	return time.Duration(idle+count*interval) * time.Second
}

// slowKeepalive is a keepalive too slow to be of use to a proxy.
const slowKeepalive = 10 * time.Minute

func keepaliveCheck(st rpc.Stats) check {
	ck := check{Check: "keepalive"}
	spec := st.Limits.Keepalive
	for _, l := range st.Listeners {
		if l.Keepalive != spec {
			spec += fmt.Sprintf(" (listener %s: %s)", l.Name, l.Keepalive)
		}
	}
	ki, kc, kv, kerr := kernelKeepalive()
	kernel := fmt.Sprintf("kernel %d,%d,%d", ki, kc, kv)
	if kerr != nil {
		kernel = "kernel sysctls unreadable: " + kerr.Error()
	}
	switch def := st.Limits.Keepalive; {
	case def == "":
		ck.Status, ck.Detail = statusWarn, "the daemon does not report its keepalive (an older tcpops); "+kernel
	case def == "off":
		ck.Status = statusWarn
		ck.Detail = fmt.Sprintf("keepalive %s: a peer that vanishes is noticed only by the idle lifetime (%s) or never", spec, lifetimeH(st.Limits.LifetimeS))
		ck.Hint = "run the daemon with --keepalive 60,5,5 (a vanished peer found within 85s)"
	case def == "on" && kerr == nil && keepaliveWithin(ki, kc, kv) > slowKeepalive:
		ck.Status = statusWarn
		ck.Detail = fmt.Sprintf("keepalive %s uses the %s (net.ipv4.tcp_keepalive_time,probes,intvl): a vanished peer is found %s after its last data",
			spec, kernel, secs(keepaliveWithin(ki, kc, kv).Seconds()))
		ck.Hint = "run the daemon with --keepalive 60,5,5 (within 85s), or lower the sysctls"
	case def == "on":
		ck.Status = statusOK
		ck.Detail = fmt.Sprintf("keepalive %s uses the %s", spec, kernel)
	default:
		var i, c, v int
		fmt.Sscanf(def, "%d,%d,%d", &i, &c, &v)
		ck.Status = statusOK
		ck.Detail = fmt.Sprintf("keepalive %s set on every socket: a vanished peer is found within %s (%s, not used)", spec, secs(keepaliveWithin(i, c, v).Seconds()), kernel)
	}
	return ck
}

func listenersCheck(ls []rpc.Listener) check {
	ck := check{Check: "listeners"}
	if len(ls) == 0 {
		ck.Status, ck.Detail = statusFail, "no listener is serving"
		ck.Hint = "check --listen (or the config file) and the daemon's log for a listener that failed to bind"
		return ck
	}
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.Name + " on " + l.Addr
		if l.Name == l.URL {
			parts[i] = l.URL + " on " + l.Addr
		}
	}
	ck.Status, ck.Detail = statusOK, fmt.Sprintf("%d serving: %s", len(ls), strings.Join(parts, ", "))
	return ck
}

func eventsCheck(st rpc.Stats) check {
	ck := check{Check: "events", Status: statusOK}
	size := st.Limits.EventBuffer
	kept := min(st.EventSeq, uint64(max(size, 0)))
	use := 0.0
	if size > 0 {
		use = 100 * float64(kept) / float64(size)
	}
	ck.Detail = fmt.Sprintf("ring of %d holds %d (%.0f%%), newest seq %d, mode %s", size, kept, use, st.EventSeq, st.Limits.ClosedEvent)
	if st.EventsLost > 0 {
		ck.Status = statusWarn
		ck.Detail += fmt.Sprintf("; %d events lost by followers too slow for the ring", st.EventsLost)
		ck.Hint = "raise --event-buffer, or make the follower read faster (events -f | ... should not block)"
	} else {
		ck.Detail += "; none lost"
	}
	return ck
}

// natsCheck looks at the daemon's link to its fleet (--nats): connected,
// and the closed events keeping up with JetStream.
func natsCheck(st rpc.Stats) check {
	n := st.NATS
	ck := check{Check: "nats", Status: statusOK}
	ck.Detail = fmt.Sprintf("host %s, connected to %s; events stored in %s up to seq %d, %d waiting, %d lost",
		n.Host, n.Server, n.Stream, n.PublishedSeq, n.Pending, n.Lost)
	switch size := uint64(max(st.Limits.EventBuffer, 1)); {
	case !n.Connected:
		ck.Status = statusFail
		ck.Detail = fmt.Sprintf("host %s is not connected to NATS (%s); %d closed events wait in the ring of %d", n.Host, orDashS(n.LastError), n.Pending, size)
		ck.Hint = "check the daemon's --nats URL and credentials, and that nats-server runs; events wait in the ring until it is back (more than --event-buffer are lost)"
	case n.Pending > size/2:
		ck.Status = statusWarn
		ck.Hint = "JetStream takes events slower than they come: more than half the ring waits; see nats-server and its stream TCPOPS_EVENTS"
	case n.Lost > 0:
		ck.Status = statusWarn
		ck.Hint = "the ring overwrote events while NATS was away (tcpops.events_lost records stand for them): raise --event-buffer"
	}
	return ck
}

// lifetimeCheck finds connections the idle lifetime is about to close.
func lifetimeCheck(ctx context.Context, c *client.Client) (check, error) {
	ck := check{Check: "lifetime", Status: statusOK}
	type near struct {
		id   uint64
		left float64
	}
	var found []near
	total := 0
	p := rpc.ListParams{Limit: 5000}
	for range 1 << 12 { // 20 million connections at most
		r, err := c.List(ctx, p)
		if err != nil {
			return ck, err
		}
		for _, cn := range r.Connections {
			total++
			if cn.LifetimeS > 0 && cn.ExpiresInS <= nearLifetime*cn.LifetimeS {
				found = append(found, near{cn.ConnID, cn.ExpiresInS})
			}
		}
		if r.Next == 0 {
			break
		}
		p.After = r.Next
	}
	if len(found) == 0 {
		ck.Detail = fmt.Sprintf("none of %d connections is within %.0f%% of its idle lifetime", total, 100*nearLifetime)
		return ck, nil
	}
	slices.SortFunc(found, func(a, b near) int { return int((a.left - b.left) * 1000) })
	var parts []string
	for _, n := range found[:min(len(found), 5)] {
		parts = append(parts, fmt.Sprintf("%d (%s left)", n.id, secs(n.left)))
	}
	if len(found) > 5 {
		parts = append(parts, "...")
	}
	ck.Status = statusWarn
	ck.Detail = fmt.Sprintf("%d of %d connections close for idleness soon: %s", len(found), total, strings.Join(parts, ", "))
	ck.Hint = "if they should stay: tcpopsctl lifetime CONID SECONDS, or keepalive traffic from the peer (SIP: CRLF pings)"
	return ck, nil
}

func suspectsCheck(ctx context.Context, c *client.Client) check {
	ck := check{Check: "suspects", Status: statusOK}
	r, err := c.List(ctx, rpc.ListParams{Suspect: true})
	if err != nil {
		ck.Status, ck.Detail = statusWarn, "list --suspect failed: "+err.Error()
		return ck
	}
	if len(r.Connections) == 0 {
		ck.Detail = "no connection looks half-open or stuck"
		return ck
	}
	byRule := map[string]int{}
	var parts []string
	for _, cn := range r.Connections {
		for _, s := range cn.Suspect {
			byRule[s]++
		}
		if len(parts) < 5 {
			parts = append(parts, fmt.Sprintf("%d %s", cn.ConnID, strings.Join(cn.Suspect, ",")))
		}
	}
	if len(r.Connections) > 5 {
		parts = append(parts, "...")
	}
	ck.Status = statusWarn
	ck.Detail = fmt.Sprintf("%d connections look half-open or stuck (%s): %s", len(r.Connections), countsH(byRule), strings.Join(parts, "; "))
	ck.Hint = "tcpopsctl list --suspect, then info CONID for its TCP_INFO, or close CONID"
	return ck
}
