package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/peterh/liner"
	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/rpc/client"
)

func newShellCmd(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "shell",
		Short: "Open a prompt with every command, history and completion, over one connection",
		Long: `Open an interactive prompt, as kamcmd does when run without a command. Every
tcpopsctl command and flag works there as on the command line, without the
word tcpopsctl; Tab completes commands, flags, flag values and conids from the
live daemon. All commands, and Tab, share one connection to the daemon: it is
dialled again when the daemon closed it (its idle timeout, a restart) and
after 'events -f', whose subscription only ends with its connection.
'events -f' and 'top' run until Ctrl-C or q and come back to the prompt.

The prompt names the daemon's socket and whether you may change connections
(admin) or only read them (read-only), as the daemon decides from your uid.
History is kept in $XDG_STATE_HOME/tcpops/history (default
~/.local/state/tcpops/history). Ctrl-C drops the line being typed, Ctrl-D or
'exit' leaves. The shell's own flags (--socket, --output, --timeout) are the
default for every line; a line may give others.

tcpopsctl run without a command opens the shell when its standard input and
output are a terminal; in a script or a pipe it prints the help, as before.`,
		Example: `  tcpopsctl shell
  tcpopsctl -s /run/tcpops/tcpops.sock   # alone on a terminal: the shell
  tcpopsctl -o json shell               # every line prints JSON`,
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.keep != nil {
				return usageErr("already in the shell")
			}
			if o.NATS != "" {
				return usageErr("the shell talks to the daemon on this machine; over NATS run commands one by one, or a batch FILE")
			}
			return runShell(cmd.Context(), o)
		},
	}
}

// shell is one interactive session.
type shell struct {
	o        *Options // the shell's own flags: each line's defaults
	keep     *keeper
	line     *liner.State
	histPath string
	// seen is the connection the prompt's status was read on; status is
	// read again when the kept connection changes.
	seen   *client.Client
	admin  bool
	status string
}

func runShell(ctx context.Context, o *Options) error {
	s := &shell{o: o, keep: &keeper{}, histPath: historyPath()}
	defer s.keep.close()
	// The terminal as it was, for commands (top sets its own mode, events
	// -f needs Ctrl-C to be a signal), and as liner wants it for prompts.
	origMode, origErr := liner.TerminalMode()
	s.line = liner.NewLiner()
	defer s.line.Close()
	lineMode, lineErr := liner.TerminalMode()
	s.line.SetCtrlCAborts(true)
	s.line.SetTabCompletionStyle(liner.TabPrints)
	s.line.SetWordCompleter(s.complete)
	s.readHistory()

	// Ctrl-C while a command runs cancels that command, not the shell.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT)
	defer signal.Stop(sigs)

	s.refreshStatus(ctx)
	fmt.Fprintf(o.Stdout, "tcpopsctl shell: %s\nTab completes commands, flags and conids; 'help' lists the commands; Ctrl-C drops the line, Ctrl-D leaves.\n", s.status)
	for {
		text, err := s.line.Prompt(s.prompt())
		switch {
		case errors.Is(err, liner.ErrPromptAborted):
			continue
		case errors.Is(err, io.EOF):
			fmt.Fprintln(o.Stdout)
			return nil
		case err != nil:
			return err
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		s.line.AppendHistory(text)
		s.writeHistory()
		words, err := splitWords(text)
		if err != nil {
			fmt.Fprintln(o.Stderr, "tcpopsctl:", err)
			continue
		}
		if w := words[0]; w == "exit" || w == "quit" {
			return nil
		}
		if origErr == nil {
			origMode.ApplyMode()
		}
		s.run(ctx, sigs, words)
		if lineErr == nil {
			lineMode.ApplyMode()
		}
		s.refreshStatus(ctx)
	}
}

// lineOptions are the options of one line: the shell's flags as defaults
// and its kept connection.
func (s *shell) lineOptions(stdout, stderr io.Writer) (*Options, *cobra.Command) {
	lo := &Options{Stdout: stdout, Stderr: stderr, keep: s.keep}
	root := NewRootCmd(lo)
	// Set after the flags are defined (which writes their defaults): a
	// line that gives a flag overrides these.
	lo.Socket, lo.Output, lo.Timeout = s.o.Socket, s.o.Output, s.o.Timeout
	return lo, root
}

// run runs one line through a fresh command tree (flags do not carry over
// from one line to the next) and returns its exit code.
func (s *shell) run(ctx context.Context, sigs chan os.Signal, words []string) int {
	for len(sigs) > 0 {
		<-sigs
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	var interrupted atomic.Bool
	go func() {
		select {
		case <-sigs:
			interrupted.Store(true)
			cancel()
		case <-done:
		}
	}()
	lo, root := s.lineOptions(s.o.Stdout, s.o.Stderr)
	root.SetArgs(words)
	lo.args = words
	code := lo.execute(ctx, root)
	close(done)
	if interrupted.Load() {
		fmt.Fprintln(s.o.Stdout) // the prompt starts its own line, after the terminal's ^C
	}
	if code != ExitOK {
		fmt.Fprintf(s.o.Stderr, "(exit %d)\n", code)
	}
	return code
}

// refreshStatus reads, on a new connection, who the daemon takes us for.
func (s *shell) refreshStatus(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	path := s.o.socketPath()
	c, err := s.keep.get(ctx, path)
	if err != nil {
		s.seen, s.status = nil, "unreachable: "+err.Error()
		return
	}
	if c == s.seen {
		return
	}
	st, err := c.Stats(ctx)
	if err != nil {
		s.seen, s.status = nil, "unreachable: "+err.Error()
		return
	}
	v, _ := c.Version(ctx)
	s.seen = c
	s.admin = st.Caller != nil && st.Caller.Admin
	who := "read-only"
	if s.admin {
		who = "admin"
	}
	why := ""
	if st.Caller != nil {
		why = ": " + st.Caller.Why
	}
	s.status = fmt.Sprintf("tcpops %s at %s, %d connections; %s%s", v.Version, path, st.Connections, who, why)
}

// prompt names the daemon and what we may do there.
func (s *shell) prompt() string {
	who := "unreachable"
	switch {
	case s.seen != nil && s.admin:
		who = "admin"
	case s.seen != nil:
		who = "read-only"
	}
	return fmt.Sprintf("tcpops %s (%s)> ", s.o.socketPath(), who)
}

// complete answers Tab with the command tree's own completion: cobra's
// hidden __complete command run in-process, the same code bash, zsh and
// fish call, over the kept connection.
func (s *shell) complete(line string, pos int) (head string, completions []string, tail string) {
	r := []rune(line)
	pos = min(pos, len(r))
	before, tail := string(r[:pos]), string(r[pos:])
	words, partial, start := splitPartial(before)
	var out bytes.Buffer
	_, root := s.lineOptions(&out, io.Discard)
	root.SetErr(io.Discard)
	root.SetArgs(append(append([]string{cobra.ShellCompRequestCmd}, words...), partial))
	ctx, cancel := context.WithTimeout(context.Background(), 2*completionTimeout)
	defer cancel()
	if root.ExecuteContext(ctx) != nil {
		return before, nil, tail
	}
	cands, directive := parseCompletions(out.String())
	space := " "
	if directive&cobra.ShellCompDirectiveNoSpace != 0 {
		space = ""
	}
	for _, c := range cands {
		if strings.HasPrefix(c, partial) {
			completions = append(completions, quoteWord(c)+space)
		}
	}
	return before[:start], completions, tail
}

// parseCompletions reads what __complete printed: one candidate a line
// (a tab then its description) and a last line :DIRECTIVE.
func parseCompletions(out string) ([]string, cobra.ShellCompDirective) {
	var cands []string
	directive := cobra.ShellCompDirectiveDefault
	for l := range strings.Lines(out) {
		l = strings.TrimRight(l, "\n")
		if d, ok := strings.CutPrefix(l, ":"); ok {
			if n, err := strconv.Atoi(d); err == nil {
				directive = cobra.ShellCompDirective(n)
			}
			continue
		}
		if v, _, _ := strings.Cut(l, "\t"); v != "" {
			cands = append(cands, v)
		}
	}
	return cands, directive
}

// splitWords splits a line as a POSIX shell would: blanks separate words,
// single quotes keep everything, double quotes keep all but \" and \\, and
// a backslash outside quotes keeps the next character.
func splitWords(line string) ([]string, error) {
	words, partial, _, open := lex(line)
	if open != 0 {
		return nil, fmt.Errorf("unterminated %c quote", open)
	}
	if partial != nil {
		words = append(words, *partial)
	}
	if len(words) == 0 {
		return nil, errors.New("empty line")
	}
	return words, nil
}

// splitPartial splits the text before the cursor into the finished words
// and the one being typed ("" after a blank), with the byte offset where
// that one starts.
func splitPartial(before string) (words []string, partial string, start int) {
	words, p, start, _ := lex(before)
	if p == nil {
		return words, "", len(before)
	}
	return words, *p, start
}

// lex does the splitting: the finished words, the last word if the line
// does not end with a blank (and where it starts), and the quote left open.
func lex(line string) (words []string, last *string, lastStart int, open rune) {
	var cur strings.Builder
	in := false
	escaped := false
	for i, c := range line {
		switch {
		case escaped:
			cur.WriteRune(c)
			escaped = false
		case open == '\'':
			if c == '\'' {
				open = 0
			} else {
				cur.WriteRune(c)
			}
		case open == '"':
			switch c {
			case '"':
				open = 0
			case '\\':
				escaped = true
			default:
				cur.WriteRune(c)
			}
		case c == ' ' || c == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			if !in {
				in, lastStart = true, i
			}
			switch c {
			case '\'', '"':
				open = c
			case '\\':
				escaped = true
			default:
				cur.WriteRune(c)
			}
		}
	}
	if in {
		w := cur.String()
		return words, &w, lastStart, open
	}
	return words, nil, len(line), open
}

// quoteWord quotes a completion that holds a blank or a quote.
func quoteWord(w string) string {
	if !strings.ContainsAny(w, " \t'\"\\") {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

// historyPath is where the shell keeps its history: the user's state
// directory (XDG), or nowhere when there is no home.
func historyPath() string {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "tcpops", "history")
}

func (s *shell) readHistory() {
	if s.histPath == "" {
		return
	}
	f, err := os.Open(s.histPath)
	if err != nil {
		return
	}
	defer f.Close()
	s.line.ReadHistory(f)
}

// writeHistory saves the history after every line, so that a shell that is
// killed loses nothing.
func (s *shell) writeHistory() {
	if s.histPath == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(s.histPath), 0o700); err != nil {
		return
	}
	tmp := s.histPath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	_, werr := s.line.WriteHistory(f)
	if cerr := f.Close(); werr == nil && cerr == nil {
		os.Rename(tmp, s.histPath)
	}
}
