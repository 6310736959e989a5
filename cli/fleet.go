package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// Over NATS (--nats), a command runs on one host (--host H) as it would
// on that host's socket, or on several (--host a --host b, --all-hosts):
// then the command tree runs once per host, in parallel, each run
// printing into a buffer of its own, and the outputs are merged with a
// HOST column (-o json: one object per host, its result or its error).
// Every command works this way without knowing it: a command talks to
// its daemon through o.dial, which in the first run over several hosts
// answers errFanOut, and Run starts the per-host runs.

// errFanOut tells Run to run the command on every host chosen.
var errFanOut = errors.New("the command runs on several hosts")

// fleetState is the NATS connection that the per-host runs share.
type fleetState struct {
	mu   sync.Mutex
	conn *fleet.Conn
}

func (o *Options) natsOptions() fleet.Options {
	return fleet.Options{URL: o.NATS, Creds: o.NATSCreds, CA: o.NATSTLSCA, Name: "tcpopsctl"}
}

// fleetConn connects to NATS once per process.
func (o *Options) fleetConn(ctx context.Context) (*fleet.Conn, error) {
	o.fleet.mu.Lock()
	defer o.fleet.mu.Unlock()
	if o.fleet.conn != nil {
		return o.fleet.conn, nil
	}
	c, err := fleet.Connect(ctx, o.natsOptions())
	if err != nil {
		return nil, err
	}
	o.fleet.conn = c
	return c, nil
}

func (o *Options) closeFleet() {
	if o.fleet == nil {
		return
	}
	o.fleet.mu.Lock()
	defer o.fleet.mu.Unlock()
	if o.fleet.conn != nil {
		o.fleet.conn.Close()
		o.fleet.conn = nil
	}
}

// natsClient is a client of the host this run is for, over NATS (dial
// answers with it when --nats is given).
func (o *Options) natsClient(ctx context.Context) (*client.Client, error) {
	host := o.onHost
	switch {
	case host != "":
	case len(o.Hosts) == 1:
		host = o.Hosts[0]
	default: // --all-hosts, several --host, or none: as SPEC says, all
		return nil, errFanOut
	}
	fc, err := o.fleetConn(ctx)
	if err != nil {
		return nil, err
	}
	return client.New(fc.Transport(host), "host "+host), nil
}

// where names the daemon a run talks to, for messages.
func (o *Options) where() string {
	switch {
	case o.NATS == "":
		return o.socketPath()
	case o.onHost != "":
		return "host " + o.onHost
	case len(o.Hosts) == 1:
		return "host " + o.Hosts[0]
	}
	return "the fleet"
}

// checkFleetFlags is the usage check of the NATS flags.
func (o *Options) checkFleetFlags() error {
	if o.NATS == "" {
		for _, f := range []struct {
			name string
			set  bool
		}{{"--host", len(o.Hosts) > 0}, {"--all-hosts", o.AllHosts}, {"--nats-creds", o.NATSCreds != ""}, {"--nats-tls-ca", o.NATSTLSCA != ""}} {
			if f.set {
				return usageErr("%s: only with --nats URL", f.name)
			}
		}
		return nil
	}
	if o.Socket != "" {
		return usageErr("--socket and --nats: give one (the local daemon, or hosts over NATS)")
	}
	if o.AllHosts && len(o.Hosts) > 0 {
		return usageErr("--host and --all-hosts: give one")
	}
	for _, h := range o.Hosts {
		if err := fleet.CheckHost(h); err != nil {
			return usageErr("--host: %v", err)
		}
	}
	return nil
}

// hostResult is what one host's run printed and returned.
type hostResult struct {
	host string
	out  *hostOutput
	err  error
}

// fanOut runs the command of args on every host chosen and merges what
// they print.
func (o *Options) fanOut(ctx context.Context, args []string) error {
	hosts := slices.Clone(o.Hosts)
	if o.AllHosts || len(hosts) == 0 {
		dctx, cancel := context.WithTimeout(ctx, o.Timeout)
		fc, err := o.fleetConn(dctx)
		if err != nil {
			cancel()
			return err
		}
		found, err := fc.Hosts(dctx)
		cancel()
		if err != nil {
			fmt.Fprintf(o.Stderr, "tcpopsctl: %v: hosts that are down cannot be told apart from hosts that are not there\n", err)
		}
		for _, h := range found {
			hosts = append(hosts, h.Name)
		}
		if len(hosts) == 0 {
			return &exitError{code: ExitFailed, err: fmt.Errorf("no tcpops host answered on NATS at %s (service %q)", fleet.Redact(o.NATS), fleet.ServiceName)}
		}
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	results := make([]hostResult, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() { results[i] = o.runOn(ctx, h, args) })
	}
	wg.Wait()
	if o.Output == "json" {
		return o.mergeJSON(results)
	}
	return o.mergeText(results)
}

// runOn runs the command tree for one host, into buffers.
func (o *Options) runOn(ctx context.Context, host string, args []string) hostResult {
	out := &hostOutput{}
	ho := &Options{Stdout: out, Stderr: &out.errs, onHost: host, fleet: o.fleet, only: o.only}
	root := NewRootCmd(ho)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return hostResult{host: host, out: out, err: err}
}

// hostOutput is one host's standard output: text, and the tables it
// printed kept as rows so that they merge into one.
type hostOutput struct {
	segs []segment
	errs bytes.Buffer
}

type segment struct {
	text   []byte
	table  bool
	header []string
	rows   [][]string
}

func (h *hostOutput) Write(p []byte) (int, error) {
	if n := len(h.segs); n > 0 && !h.segs[n-1].table {
		h.segs[n-1].text = append(h.segs[n-1].text, p...)
	} else {
		h.segs = append(h.segs, segment{text: append([]byte(nil), p...)})
	}
	return len(p), nil
}

func (h *hostOutput) addTable(header []string, rows [][]string) {
	h.segs = append(h.segs, segment{table: true, header: header, rows: rows})
}

// only returns the one table the host printed, if it printed nothing else.
func (h *hostOutput) onlyTable() (*segment, bool) {
	var t *segment
	for i := range h.segs {
		s := &h.segs[i]
		switch {
		case s.table && t == nil:
			t = s
		case s.table, len(bytes.TrimSpace(s.text)) > 0:
			return nil, false
		}
	}
	return t, t != nil
}

// text renders everything the host printed.
func (h *hostOutput) text() []byte {
	var b bytes.Buffer
	for _, s := range h.segs {
		if s.table {
			table(&b, s.header, s.rows)
		} else {
			b.Write(s.text)
		}
	}
	return b.Bytes()
}

// mergeText prints the hosts' tables as one with a HOST column first,
// and any other output line by line behind the host's name; then each
// host's diagnostics and errors on stderr.
func (o *Options) mergeText(results []hostResult) error {
	ok := func(r hostResult) bool { return r.err == nil || errors.Is(r.err, negative) }
	var header []string
	merge, first := true, true
	for _, r := range results {
		if !ok(r) {
			continue
		}
		t, only := r.out.onlyTable()
		if !only || (!first && !slices.Equal(t.header, header)) {
			merge = false
			break
		}
		header, first = t.header, false
	}
	if merge && !first {
		var rows [][]string
		for _, r := range results {
			if t, only := r.out.onlyTable(); ok(r) && only {
				for _, row := range t.rows {
					rows = append(rows, append([]string{r.host}, row...))
				}
			}
		}
		h := []string{"HOST"}
		if header != nil {
			h = append(h, header...)
		} else if len(rows) > 0 {
			h = append(h, make([]string, len(rows[0])-1)...)
		}
		if err := table(o.Stdout, h, rows); err != nil {
			return err
		}
	} else {
		width := 0
		for _, r := range results {
			width = max(width, len(r.host))
		}
		var b bytes.Buffer
		for _, r := range results {
			for line := range strings.Lines(string(r.out.text())) {
				fmt.Fprintf(&b, "%-*s  %s", width, r.host, line)
				if !strings.HasSuffix(line, "\n") {
					b.WriteByte('\n')
				}
			}
		}
		if _, err := o.Stdout.Write(b.Bytes()); err != nil {
			return err
		}
	}
	return o.reportHosts(results, true)
}

// reportHosts writes each host's stderr and (with errs) error, and
// returns the exit code of the worst: a host that did not answer counts
// as 4. A negative answer (1: not alive, not found, nothing matched)
// counts only when every host gives one: conids and matches are per
// host, and "closed on one host, nothing to close on the others" is done.
func (o *Options) reportHosts(results []hostResult, errs bool) error {
	code := ExitOK
	negatives := 0
	var silent []string
	for _, r := range results {
		for line := range strings.Lines(r.out.errs.String()) {
			fmt.Fprintf(o.Stderr, "%s: %s", r.host, line)
		}
		c := ExitCode(r.err)
		var na *fleet.NoAnswerError
		if errors.As(r.err, &na) {
			silent = append(silent, r.host)
			c = ExitFailed
		}
		if c == ExitNegative {
			negatives++
		} else {
			code = max(code, c)
		}
		if msg := errorText(r.err); msg != "" && errs {
			fmt.Fprintf(o.Stderr, "tcpopsctl: %s: %s\n", r.host, msg)
		}
	}
	if len(silent) > 0 {
		fmt.Fprintf(o.Stderr, "tcpopsctl: %d of %d hosts did not answer: %s\n", len(silent), len(results), strings.Join(silent, ", "))
	}
	if code == ExitOK && negatives > 0 && negatives == len(results) {
		code = ExitNegative
	}
	if code == ExitOK {
		return nil
	}
	return &exitError{code: code}
}

// hostError is the error of a host's line of -o json over several hosts:
// {"host": ..., "result": ...} or {"host": ..., "error": hostError}.
type hostError struct {
	Code    int64  `json:"code,omitempty"`
	Message string `json:"message"`
	Exit    int    `json:"exit"`
}

// mergeJSON prints one JSON object a line per host: its result as the
// command prints it with -o json (several values: a list), or its error.
func (o *Options) mergeJSON(results []hostResult) error {
	for _, r := range results {
		res, err := jsonValues(r.out.text())
		if err != nil {
			return fmt.Errorf("host %s: %w", r.host, err)
		}
		// Written by hand: the result, megabytes for a list, is compact
		// JSON already, and encoding/json would check it again.
		host, _ := json.Marshal(r.host)
		line := append(append([]byte(`{"host":`), host...), ',')
		if res != nil {
			line = append(append(append(line, `"result":`...), res...), ',')
		}
		if r.err != nil && !errors.Is(r.err, negative) {
			e := &hostError{Message: r.err.Error(), Exit: ExitCode(r.err)}
			var je *rpc.Error
			if errors.As(r.err, &je) {
				e.Code, e.Message = je.Code, je.Message
			}
			var na *fleet.NoAnswerError
			if errors.As(r.err, &na) {
				e.Exit = ExitFailed
			}
			eb, _ := marshalNoEscape(e)
			line = append(append(append(line, `"error":`...), eb...), ',')
		}
		line = append(line[:len(line)-1], "}\n"...)
		if _, err := o.Stdout.Write(line); err != nil {
			return err
		}
	}
	return o.reportHosts(results, false)
}

// marshalNoEscape is json.Marshal without HTML escaping.
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), err
}

// jsonValues reads the JSON values in b, compact: none is nil, one is
// itself, more are a list.
func jsonValues(b []byte) (json.RawMessage, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	var one bytes.Buffer
	one.Grow(len(b))
	if json.Compact(&one, b) == nil {
		return one.Bytes(), nil // the usual case: one value
	}
	vals, err := jsonList(b)
	if err != nil {
		return nil, err
	}
	switch len(vals) {
	case 0:
		return nil, nil
	case 1:
		return vals[0], nil
	}
	return json.Marshal(vals)
}

// jsonList reads the JSON values one after the other in b, each compact.
func jsonList(b []byte) ([]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var vals []json.RawMessage
	for {
		var v json.RawMessage
		if err := dec.Decode(&v); err == io.EOF {
			return vals, nil
		} else if err != nil {
			return nil, err
		}
		var c bytes.Buffer
		if err := json.Compact(&c, v); err != nil {
			return nil, err
		}
		vals = append(vals, c.Bytes())
	}
}
