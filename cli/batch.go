package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	"github.com/google/shlex"
	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc/client"
)

// batchLine is what batch -o json prints for one command line.
type batchLine struct {
	Line    int             `json:"line"`
	Command string          `json:"command"`
	Exit    int             `json:"exit"`
	Result  json.RawMessage `json:"result,omitempty"` // the command's JSON; a list when it printed several
	Output  string          `json:"output,omitempty"` // what it printed, when that was not JSON
	Error   string          `json:"error,omitempty"`
}

func newBatchCmd(o *Options) *cobra.Command {
	var stopOnError bool
	cmd := &cobra.Command{
		Use:   "batch [FILE | -]",
		Short: "Run tcpopsctl command lines from a file or stdin over one connection",
		Long: `Run one tcpopsctl command line per input line (from FILE, or stdin when FILE
is - or left out), all over one control connection: for cron loops and
Ansible script tasks, where a process and a connection per command would
cost more than the commands. A line is what would follow 'tcpopsctl' in a
shell, quoted the same way ('...', "...", \); blank lines and lines
starting with # are skipped. Each command prints its usual output; with
-o json each prints one JSON object on one line: {"line", "command",
"exit", "result"} (result is the command's JSON answer; "error" says what
went wrong). The global flags given to batch apply to every line; a line
may set -o or --timeout for itself.

By default every line runs whatever the ones before gave; --stop-on-error
stops at the first line that exits non-zero. The exit code is the highest
of the lines' exit codes (0 when all succeeded). 'events -f' and batch
itself cannot run inside a batch.`,
		Example: `  tcpopsctl batch commands.txt
  printf 'state 42\nclose --remote 10.9.0.0/16\n' | tcpopsctl batch -
  tcpopsctl -o json batch - < checks.txt | jq -c 'select(.exit != 0)'`,
		Args: args(0, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if o.shared != nil {
				return usageErr("batch cannot run inside a batch")
			}
			in := io.Reader(os.Stdin)
			if len(a) == 1 && a[0] != "-" {
				f, err := os.Open(a[0])
				if err != nil {
					return usageErr("batch: %v", err)
				}
				defer f.Close()
				in = f
			} else if cmd.InOrStdin() != os.Stdin {
				in = cmd.InOrStdin()
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.Timeout)
			c, release, err := o.dial(ctx)
			cancel()
			if errors.Is(err, errFanOut) && in == io.Reader(os.Stdin) {
				return usageErr("batch on several hosts reads a FILE, not stdin (each host's run reads it)")
			}
			if err != nil {
				return err
			}
			defer release()
			return o.batch(cmd.Context(), c, in, stopOnError)
		},
	}
	cmd.Flags().BoolVar(&stopOnError, "stop-on-error", false, "stop at the first line that exits non-zero")
	return cmd
}

// window is how many lines of a batch may be in flight at once.
const window = 8

// line is one command line of a batch on its way.
type line struct {
	n    int
	text string
	// sent is closed once the line's request is written (or the line is
	// over without one): the next line's request may go.
	sent     chan struct{}
	sentOnce sync.Once
	stream   bool // prints one JSON object a line, any number (events)
	done     chan struct{}
	out, err bytes.Buffer
	code     int
	errText  string
}

func (l *line) markSent() { l.sentOnce.Do(func() { close(l.sent) }) }

// batch runs the lines of in over the client c. Lines are pipelined: a
// line's request goes out right after the one before it, without waiting
// for its answer, and since the daemon answers one connection's requests
// in order, each line sees what the lines before it did. A wait, a rated
// change, and every line under --stop-on-error run alone: nothing is
// sent after them until they are over.
func (o *Options) batch(ctx context.Context, c *client.Client, in io.Reader, stopOnError bool) error {
	// A batch makes garbage quickly and keeps little: collecting less
	// often is much of what a line costs besides the daemon's answer.
	defer debug.SetGCPercent(debug.SetGCPercent(800))
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	worst, n := 0, 0
	var inflight []*line
	lastSent := make(chan struct{})
	close(lastSent)
	// report prints a finished line in its turn; it says whether to stop.
	report := func(l *line) (stop bool, err error) {
		<-l.done
		if o.Output == "json" {
			bl := batchLine{Line: l.n, Command: l.text, Exit: l.code, Error: l.errText}
			bl.Result, bl.Output = jsonOrText(l.out.Bytes(), l.stream)
			if err := printJSONLine(o.Stdout, bl); err != nil {
				return true, err
			}
		} else if _, err := o.Stdout.Write(l.out.Bytes()); err != nil {
			return true, err
		}
		o.Stderr.Write(l.err.Bytes())
		if l.errText != "" {
			fmt.Fprintf(o.Stderr, "tcpopsctl: line %d: %s\n", l.n, l.errText)
		}
		worst = max(worst, l.code)
		if l.code != 0 && stopOnError {
			fmt.Fprintf(o.Stderr, "tcpopsctl: stopped at line %d (--stop-on-error)\n", l.n)
			return true, nil
		}
		return false, nil
	}
	drain := func() (bool, error) {
		for len(inflight) > 0 {
			l := inflight[0]
			inflight = inflight[1:]
			if stop, err := report(l); stop || err != nil {
				return true, err
			}
		}
		return false, nil
	}
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		l := &line{n: n, text: text, sent: make(chan struct{}), done: make(chan struct{})}
		// Over NATS each line is a request of its own, answered in any
		// order: a line waits for the one before it.
		alone := stopOnError || runsAlone(text) || o.NATS != ""
		if alone {
			if stop, err := drain(); stop || err != nil {
				return o.batchEnd(worst, err)
			}
		}
		go o.batchLine(ctx, c, l, lastSent)
		lastSent = l.sent
		inflight = append(inflight, l)
		if alone || len(inflight) >= window {
			if stop, err := drain(); stop || err != nil {
				return o.batchEnd(worst, err)
			}
		}
	}
	if _, err := drain(); err != nil {
		return o.batchEnd(worst, err)
	}
	if err := sc.Err(); err != nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("batch: reading line %d: %w", n+1, err)}
	}
	return o.batchEnd(worst, nil)
}

func (o *Options) batchEnd(worst int, err error) error {
	if err != nil {
		return err
	}
	if worst != 0 {
		return &exitError{code: worst}
	}
	return nil
}

// runsAlone says whether a line must run with nothing in flight before
// or after it: a wait polls the daemon again and again, and a rated
// change keeps it busy for long.
func runsAlone(text string) bool {
	args, _ := splitLine(text)
	return commandName(args) == "wait" || strings.Contains(text, "rate")
}

// batchLine runs one line on a command tree of its own, so that no flag
// or argument of one line leaks into the next; its output is kept in the
// line until its turn to be printed. Its request goes out once before
// is closed.
func (o *Options) batchLine(ctx context.Context, c *client.Client, l *line, before <-chan struct{}) {
	defer close(l.done)
	defer l.markSent()
	args, err := splitLine(l.text)
	if err != nil {
		err = usageErr("%q: %v", l.text, err)
		l.code, l.errText = ExitCode(err), errorText(err)
		return
	}
	// Only the command the line runs is built: the whole tree would cost
	// more than the daemon's answer.
	lo := &Options{only: commandName(args)}
	l.stream = lo.only == "events"
	root := NewRootCmd(lo)
	// The batch's global flags are each line's defaults.
	lo.Socket, lo.Output, lo.Timeout, lo.shared = o.Socket, o.Output, o.Timeout, c
	lo.Stdout, lo.Stderr = &l.out, &l.err
	root.SetOut(lo.Stdout)
	root.SetErr(lo.Stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	err = execute(client.WithOrder(ctx, before, l.markSent), lo, root, args)
	l.code, l.errText = ExitCode(err), errorText(err)
}

// splitLine splits a line into words as a shell would (quotes,
// backslashes, # comments); a line without any of those is split on
// blanks, which is most lines and much quicker.
func splitLine(text string) ([]string, error) {
	if !strings.ContainsAny(text, "'\"\\#") {
		return strings.Fields(text), nil
	}
	return shlex.Split(text)
}

// globalValueFlags are the global flags that take a value as the next
// word (TestGlobalValueFlags keeps the list whole).
var globalValueFlags = []string{"-s", "--socket", "-o", "--output", "--timeout", "--nats", "--nats-creds", "--nats-tls-ca", "--host"}

// commandName finds the command of a command line: its first word that
// is neither a global flag nor a global flag's value ("" when there is
// none, or when -h, --help or -- comes first).
func commandName(args []string) string {
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--", a == "-h", a == "--help":
			return ""
		case slices.Contains(globalValueFlags, a):
			i++
		case strings.HasPrefix(a, "-"):
		default:
			return a
		}
	}
	return ""
}

// jsonOrText returns what a command printed as JSON (one value, or for a
// stream, the list of the values it printed one a line), or as text when
// it is not JSON.
func jsonOrText(b []byte, stream bool) (json.RawMessage, string) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		if stream {
			return json.RawMessage("[]"), ""
		}
		return nil, ""
	}
	var compact bytes.Buffer
	if !stream && json.Compact(&compact, b) == nil {
		return compact.Bytes(), ""
	}
	vals, err := jsonList(b)
	if err != nil {
		return nil, string(b)
	}
	if vals == nil {
		vals = []json.RawMessage{}
	}
	list, _ := json.Marshal(vals)
	return list, ""
}
