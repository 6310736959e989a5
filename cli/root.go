// Package cli is tcpopsctl, the command line of tcpops: one cobra command
// per kamcmd-style verb, all talking to the daemon through rpc/client.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
	"github.com/tcpops/tcpops/sock"
)

// Exit codes of tcpopsctl.
const (
	ExitOK          = 0
	ExitNegative    = 1 // not alive, state < 0, conid not found
	ExitUsage       = 2 // bad flag, argument or value (also the daemon's -32602)
	ExitUnreachable = 3 // no socket, refused, timed out, daemon went away
	ExitFailed      = 4 // the daemon refused or failed
)

// Options are the global flags.
type Options struct {
	Socket  string
	Output  string
	Pretty  bool
	Timeout time.Duration

	// Over NATS: the servers, and the hosts to run on.
	NATS      string
	NATSCreds string
	NATSTLSCA string
	Hosts     []string
	AllHosts  bool
	// onHost is the host of one run of a command over several hosts;
	// fleet is the NATS connection all runs share. (args, below, is the
	// command line each host's run runs again.)
	onHost string
	fleet  *fleetState

	Stdout io.Writer
	Stderr io.Writer

	// ready is set once flags and arguments were accepted; an error
	// before that is a usage error whatever cobra called it.
	ready bool
	// shared, when set, is the one control connection of a batch: every
	// command uses it instead of dialling its own.
	shared *client.Client
	// only, when set, is the one command a batch line runs: the tree is
	// built with just that one (the others cost time for nothing).
	only string
	// keep, in a shell, is the connection every command shares.
	keep *keeper
	// args are the command line's arguments, for messages about them.
	args []string
}

// builder makes a top-level command; names are its name and aliases.
type builder struct {
	names string
	build func(*Options) *cobra.Command
}

// exitError carries an exit code; a message of "" prints nothing.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, a...)}
}

// negative is a negative answer that was already printed.
var negative = &exitError{code: ExitNegative}

// ExitCode maps an error of a command to the exit code of SPEC.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var de *client.DialError
	var fe *fleet.DialError
	if errors.As(err, &de) || errors.As(err, &fe) || errors.Is(err, client.ErrDisconnected) {
		return ExitUnreachable
	}
	var na *fleet.NoAnswerError
	var nd *fleet.DeniedError
	if errors.As(err, &na) || errors.As(err, &nd) {
		return ExitFailed
	}
	var je *rpc.Error
	if errors.As(err, &je) {
		switch je.Code {
		case rpc.CodeNotFound:
			return ExitNegative
		case rpc.CodeInvalidParams, rpc.CodeMethodNotFound, rpc.CodeInvalidRequest, rpc.CodeParseError:
			return ExitUsage
		}
		return ExitFailed
	}
	return ExitFailed
}

// NewRootCmd builds the whole command tree, or, when o.only names one of
// its commands, the root with just that one: building every command's
// flags costs more than a call to the daemon.
func NewRootCmd(o *Options) *cobra.Command {
	if o.fleet == nil {
		o.fleet = &fleetState{}
	}
	root := &cobra.Command{
		Use:   "tcpopsctl",
		Short: "Inspect and steer the live connections of a tcpops daemon",
		Long: `tcpopsctl talks to a running tcpops daemon over its control socket (JSON-RPC 2.0)
to inspect and steer its connections one by one, as Kamailio's tcpops module
does from a routing script: check a connection (alive, state), turn kernel
keepalive on or off, set its idle lifetime, ask for its closed event, close it,
and follow the closed events live.

Output is a table or lines for people; with -o json each result, event or
other object is one line of compact JSON, the same for every command (the
field names are those of the daemon's JSON-RPC results, see rpc.discover);
--pretty indents it. Errors always go to stderr as text.

Exit codes, for shells, cron and Ansible:
  0  done; for alive and state: the connection is usable (state >= 1)
  1  negative answer: not alive, state < 0, conid not found
  2  usage error: bad flag, argument or value
  3  daemon unreachable: no socket, refused, timed out, went away
  4  the daemon refused or failed: permission, socket operation, internal;
     a bulk change refused by --max, or failed on some connections

The socket is --socket, else $TCPOPS_SOCKET, else the system daemon's
/run/tcpops/tcpops.sock (for root; for other users when it exists), else the
user's own $XDG_RUNTIME_DIR/tcpops.sock, else /tmp/tcpops-UID.sock. When the
daemon cannot be reached, the message names every socket tried and why.

Fleet: with --nats URL a command goes over NATS to daemons run with --nats:
to one host (--host H, the output as from its socket) or to several
(--host a --host b; without --host, or with --all-hosts: every host whose
tcpops micro service answers or that is registered in the TCPOPS_HOSTS
stream), in parallel, each
within --timeout; the outputs merge with a HOST column, and with -o json each
host is one line {"host", "result"} or {"host", "error"}. A host that does
not answer is named on stderr and makes the exit code 4. events reads the
TCPOPS_EVENTS stream in JetStream instead (every host, or --host).`,
		Example: `  tcpopsctl list --state ok --remote 10.0.0.0/8
  tcpopsctl keepalive enable 42 60 5 5
  tcpopsctl lifetime 42 3600
  tcpopsctl close --remote 203.0.113.0/24 --direction in --dry-run
  if tcpopsctl alive 42; then echo usable; fi
  tcpopsctl -o json events -f --reason reset
  tcpopsctl --nats nats://nats1:4222 --all-hosts list --remote 203.0.113.0/24
  tcpopsctl --nats nats://nats1:4222 --host web1 close 42`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		DisableAutoGenTag: true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&o.Socket, "socket", "s", "", "control socket of the daemon (default $TCPOPS_SOCKET, else /run/tcpops/tcpops.sock if it exists, else the user's own)")
	pf.StringVarP(&o.Output, "output", "o", "table", "output format: table or json (one compact JSON object a line)")
	pf.BoolVar(&o.Pretty, "pretty", false, "JSON indented for people (implies -o json)")
	pf.DurationVar(&o.Timeout, "timeout", 5*time.Second, "time allowed to reach the daemon and get an answer")
	pf.StringVar(&o.NATS, "nats", "", "run on hosts over NATS instead of the local socket: server URL(s), comma-separated")
	pf.StringVar(&o.NATSCreds, "nats-creds", "", "NATS credentials file (.creds)")
	pf.StringVar(&o.NATSTLSCA, "nats-tls-ca", "", "PEM file of the CAs of tls:// NATS servers")
	pf.StringSliceVar(&o.Hosts, "host", nil, "with --nats: the host to run on (repeatable, or comma-separated: several merge with a HOST column)")
	pf.BoolVar(&o.AllHosts, "all-hosts", false, "with --nats: run on every host of the fleet (the default without --host; says so explicitly)")
	root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if o.Output != "table" && o.Output != "json" {
			return usageErr("--output %q: want table or json", o.Output)
		}
		if o.Pretty {
			if cmd.Flags().Changed("output") && o.Output != "json" {
				return usageErr("--pretty indents JSON: it goes with -o json, not -o %s", o.Output)
			}
			o.Output = "json"
			o.Stdout = &prettyWriter{w: o.Stdout}
		}
		if o.Timeout <= 0 {
			return usageErr("--timeout %s: must be > 0", o.Timeout)
		}
		if err := o.checkFleetFlags(); err != nil {
			return err
		}
		o.ready = true
		return nil
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		args := o.args
		if args == nil {
			args = os.Args[1:]
		}
		if nerr := negativeArg(cmd, args, err); nerr != nil {
			return nerr
		}
		if verr := flagValueErr(cmd, err); verr != nil {
			return verr
		}
		return usageErr("%v (see '%s --help')", err, cmd.CommandPath())
	})
	groups := []struct {
		id, title string
		cmds      []builder
	}{
		{"conn", "Connections:", []builder{{"list ls", newListCmd}, {"info", newInfoCmd}, {"alive", newAliveCmd}, {"state", newStateCmd},
			{"keepalive", newKeepaliveCmd}, {"lifetime", newLifetimeCmd}, {"closed-event", newClosedEventCmd},
			{"close", newCloseCmd}, {"events", newEventsCmd}}},
		{"daemon", "Daemon:", []builder{{"stats", newStatsCmd}, {"wait", newWaitCmd}, {"call", newCallCmd}, {"methods", newMethodsCmd},
			{"version", newVersionCmd}, {"batch", newBatchCmd}, {"upgrade", newUpgradeCmd}}},
		{"interactive", "Interactive:", []builder{{"shell", newShellCmd}, {"top", newTopCmd}, {"doctor", newDoctorCmd}}},
	}
	only := ""
	for _, g := range groups {
		for _, b := range g.cmds {
			if o.only != "" && slices.Contains(strings.Fields(b.names), o.only) {
				only = o.only // a name of ours: build just that one
			}
		}
	}
	for _, g := range groups {
		root.AddGroup(&cobra.Group{ID: g.id, Title: g.title})
		for _, b := range g.cmds {
			if only != "" && !slices.Contains(strings.Fields(b.names), only) {
				continue
			}
			c := b.build(o)
			c.GroupID = g.id
			root.AddCommand(c)
		}
	}
	if only == "" { // --version is the root's own flag
		root.Version = rpc.Build().String()
		root.SetVersionTemplate("tcpopsctl {{.Version}}\n")
	}
	root.SetOut(o.Stdout)
	root.SetErr(o.Stderr)
	if only == "" {
		addCompletionCmd(root)
	} else {
		root.CompletionOptions.DisableDefaultCmd = true // and cobra's, added when it runs
	}
	return root
}

// socketPaths are the sockets to try, in order: --socket, else those of
// sock.ClientSocketPaths.
func (o *Options) socketPaths() []string {
	if o.Socket != "" {
		return []string{o.Socket}
	}
	return sock.ClientSocketPaths()
}

// socketPath is the socket a message names: the first of socketPaths that
// exists, else the last (the user's own default).
func (o *Options) socketPath() string {
	paths := o.socketPaths()
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return p
		}
	}
	return paths[len(paths)-1]
}

// client dials the daemon within the timeout; ctx bounds the calls.
func (o *Options) client(cmd *cobra.Command) (*client.Client, context.Context, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), o.Timeout)
	c, release, err := o.dial(ctx)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return c, ctx, func() { release(); cancel() }, nil
}

// call dials, makes one call and closes.
func (o *Options) call(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	c, ctx, done, err := o.client(cmd)
	if err != nil {
		return err
	}
	defer done()
	return fn(ctx, c)
}

// Run runs tcpopsctl with args and returns its exit code. Only the
// command args name is built (help and completion get the whole tree).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := &Options{Stdout: stdout, Stderr: stderr, args: args, only: commandName(args)}
	root := NewRootCmd(o)
	root.SetArgs(args)
	return o.execute(ctx, root)
}

// execute runs one command line on root, built over o.
func execute(ctx context.Context, o *Options, root *cobra.Command, args []string) error {
	o.args = args
	root.SetArgs(args)
	return o.usage(root.ExecuteContext(ctx))
}

// usage makes an error that came before the command ran (a flag, an
// argument, an unknown command) a usage error with a hint. cobra's
// "unknown command" goes on with "Did you mean this?" lines: the hint
// belongs on the first line.
func (o *Options) usage(err error) error {
	var ee *exitError
	if err == nil || o.ready || errors.As(err, &ee) {
		return err
	}
	first, rest, _ := strings.Cut(strings.TrimRight(err.Error(), "\n"), "\n")
	if rest != "" {
		rest = "\n" + strings.TrimLeft(rest, "\n")
	}
	return usageErr("%s (see 'tcpopsctl --help')%s", first, rest)
}

// execute runs the command tree built over o, prints its error and
// returns the exit code.
func (o *Options) execute(ctx context.Context, root *cobra.Command) int {
	err := root.ExecuteContext(ctx)
	if errors.Is(err, errFanOut) {
		err = o.fanOut(ctx, o.args)
	}
	o.closeFleet()
	err = o.usage(err)
	if msg := errorText(err); msg != "" {
		fmt.Fprintln(o.Stderr, "tcpopsctl:", msg)
	}
	return ExitCode(err)
}

// errorText is what tcpopsctl says about err ("" for nothing).
func errorText(err error) string {
	var je *rpc.Error
	switch {
	case errors.As(err, &je):
		return fmt.Sprintf("tcpops says: %s (code %d)", je.Message, je.Code)
	case err != nil:
		return err.Error()
	}
	return ""
}

// noCommand reports whether args name no command, only global flags
// (tcpopsctl -s PATH).
func noCommand(args []string) bool {
	if slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "--help" || a == "--version" }) {
		return false
	}
	root := NewRootCmd(&Options{Stdout: io.Discard, Stderr: io.Discard})
	c, rest, err := root.Find(args)
	if err != nil || c != root || c.ParseFlags(rest) != nil {
		return false
	}
	return len(c.Flags().Args()) == 0
}

// Main is tcpopsctl's main. Alone on a terminal it opens the shell;
// scripts and pipes get the help, as before.
func Main() int {
	args := os.Args[1:]
	if commandName(args) == "" && isTerminal(os.Stdin) && isTerminal(os.Stdout) && noCommand(args) {
		args = append(args, "shell")
	}
	return Run(context.Background(), args, os.Stdout, os.Stderr)
}
