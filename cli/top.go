package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// topSorts are the orders top cycles through with s.
var topSorts = []string{"conid", "idle", "bytes", "rate", "age"}

func newTopCmd(o *Options) *cobra.Command {
	var interval time.Duration
	var once bool
	var sort, filter string
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Watch the connections live, full screen, and act on them by key",
		Long: `Show a live full-screen view of the daemon: counts by state and protocol,
accepts and closes per second with a sparkline of the last minute, closes by
reason, and a table of connections (one screenful, asked of the daemon as a
page, so a refresh costs it little whatever the table holds) with each one's
idle time, age, bytes, rate and the suspect rules it meets (see list --suspect).

Keys:
  Up/Down, PgUp/PgDn, Home   move
  s                          sort by conid, idle, bytes, rate or age (largest first)
  /                          filter by typing: words matched in remote, local,
                             listener, proto, direction or state; Esc clears
  Enter or i                 info of the selected connection (TCP_INFO included)
  p                          go to its partner leg
  c                          close it (asks first; y closes with FIN, r with RST)
  k                          set its keepalive (IDLE COUNT INTERVAL, or off)
  l                          set its idle lifetime (seconds, 0 = none)
  q or Ctrl-C                leave; the terminal is left as it was

c, k and l need an admin caller; a read-only one sees why they are off.
--once prints one frame (two samples --interval apart, for the rates) and
exits, for a capture or a test; its size is the terminal's, else $COLUMNS x
$LINES, else 132x40.`,
		Example: `  tcpopsctl top
  tcpopsctl top --sort idle --filter 10.1.
  tcpopsctl top --once --interval 500ms > top.txt`,
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.NATS != "" {
				return usageErr("top watches the daemon on this machine; over NATS use list and stats")
			}
			if interval < 100*time.Millisecond {
				return usageErr("--interval %s: want 100ms or more", interval)
			}
			if !slices.Contains(topSorts, sort) {
				return usageErr("--sort %q: want one of %s", sort, strings.Join(topSorts, ", "))
			}
			m := newTopModel(cmd.Context(), o, interval)
			m.sort, m.filter = slices.Index(topSorts, sort), filter
			if once {
				return m.once()
			}
			defer m.close()
			p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithContext(cmd.Context()),
				tea.WithOutput(o.Stdout), tea.WithInput(os.Stdin))
			_, err := p.Run()
			if errors.Is(err, tea.ErrProgramKilled) && cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.DurationVar(&interval, "interval", time.Second, "time between refreshes")
	f.BoolVar(&once, "once", false, "print one frame and exit")
	f.StringVar(&sort, "sort", "conid", "order: "+strings.Join(topSorts, ", "))
	f.StringVar(&filter, "filter", "", "show only connections matching these words")
	cmd.RegisterFlagCompletionFunc("sort", fixed(topSorts...))
	return cmd
}

// topMode is what keys do now.
type topMode int

const (
	modeTable topMode = iota
	modeFilter
	modeConfirm
	modeKeepalive
	modeLifetime
	modeInfo
)

// topModel is the state of the view.
type topModel struct {
	ctx      context.Context
	o        *Options
	keep     *keeper // top's own when not in a shell
	own      bool    // keep is top's: close it at the end
	interval time.Duration

	width, height int

	// What the daemon said last.
	stats   rpc.Stats
	have    bool
	conns   []rpc.Conn
	total   int
	info    *rpc.InfoResult
	err     error
	at      time.Time
	prev    *rpc.Stats // the sample before, for rates
	prevAt  time.Time
	accepts []float64 // per second, one per refresh, the last minute
	closes  []float64
	lastBy  map[string]uint64 // closes by reason in the last interval

	// The view.
	sort     int // index in topSorts
	offset   int
	after    uint64 // in conid order: start after this conid (p jumps here)
	filter   string
	selected uint64 // conid of the selected row
	row      int    // its index in the page, kept when it goes away
	focus    uint64 // a conid to select when it shows up (p)
	mode     topMode
	input    string
	target   uint64 // conid an action is about
	status   string
}

func newTopModel(ctx context.Context, o *Options, interval time.Duration) *topModel {
	m := &topModel{ctx: ctx, o: o, keep: o.keep, interval: interval, width: 132, height: 40}
	if m.keep == nil {
		m.keep, m.own = &keeper{}, true
	}
	if w, h, ok := termSize(); ok {
		m.width, m.height = w, h
	} else {
		if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 20 {
			m.width = n
		}
		if n, err := strconv.Atoi(os.Getenv("LINES")); err == nil && n > 10 {
			m.height = n
		}
	}
	return m
}

func (m *topModel) close() {
	if m.own {
		m.keep.close()
	}
}

func termSize() (w, h int, ok bool) {
	ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 || ws.Row == 0 {
		return 0, 0, false
	}
	return int(ws.Col), int(ws.Row), true
}

// once prints one frame: two samples an interval apart, so that rates mean
// something.
func (m *topModel) once() error {
	defer m.close()
	for i := range 2 {
		d := m.fetch()
		if d.err != nil {
			return d.err
		}
		if i == 1 {
			m.selected, m.row = 0, 0 // the frame shows the first row selected
		}
		m.apply(d)
		if i == 0 {
			select {
			case <-time.After(m.interval):
			case <-m.ctx.Done():
				return m.ctx.Err()
			}
		}
	}
	_, err := fmt.Fprintln(m.o.Stdout, m.View())
	return err
}

// Messages of the program.
type (
	tickMsg struct{}
	dataMsg struct {
		stats rpc.Stats
		list  rpc.ListResult
		info  *rpc.InfoResult
		err   error
		at    time.Time
		tick  bool // from the refresh loop (which then goes on)
	}
	actionMsg struct {
		text string
		err  error
	}
)

func (m *topModel) Init() tea.Cmd { return m.fetchCmd(true) }

// rows is how many connections fit.
func (m *topModel) rows() int { return max(m.height-10, 1) }

// query is the page to ask for.
func (m *topModel) query() rpc.ListParams {
	p := rpc.ListParams{Sort: topSorts[m.sort], Offset: m.offset, Limit: m.rows(), Match: m.filter, Rates: true, TCPInfo: true}
	if p.Sort == "conid" {
		p.After = m.after
	}
	return p
}

// fetch asks the daemon for one refresh: stats, the page shown and, in
// info mode, the connection shown. It uses one connection for the whole
// session.
func (m *topModel) fetch() dataMsg {
	ctx, cancel := context.WithTimeout(m.ctx, m.o.Timeout)
	defer cancel()
	d := dataMsg{at: time.Now()}
	var c *client.Client
	c, d.err = m.keep.get(ctx, m.o.socketPath())
	if d.err != nil {
		return d
	}
	if d.stats, d.err = c.Stats(ctx); d.err != nil {
		return d
	}
	if d.list, d.err = c.List(ctx, m.query()); d.err != nil {
		return d
	}
	if m.mode == modeInfo && m.target != 0 {
		if r, err := c.Info(ctx, m.target); err == nil {
			d.info = &r
		} else {
			d.err = err
		}
	}
	return d
}

func (m *topModel) fetchCmd(tick bool) tea.Cmd {
	return func() tea.Msg {
		d := m.fetch()
		d.tick = tick
		return d
	}
}

// apply takes in a refresh.
func (m *topModel) apply(d dataMsg) {
	m.err = d.err
	if d.err != nil {
		return
	}
	if m.have {
		prev := m.stats
		m.prev, m.prevAt = &prev, m.at
	}
	m.stats, m.have, m.at = d.stats, true, d.at
	m.conns = d.list.Connections
	if d.list.Total != nil {
		m.total = *d.list.Total
	}
	m.info = d.info
	if m.prev != nil {
		dt := m.at.Sub(m.prevAt).Seconds()
		if dt > 0 {
			keep := max(int(time.Minute/m.interval), 2)
			m.accepts = appendWindow(m.accepts, float64(m.stats.Accepted-m.prev.Accepted)/dt, keep)
			m.closes = appendWindow(m.closes, float64(m.stats.Closed-m.prev.Closed)/dt, keep)
		}
		m.lastBy = map[string]uint64{}
		for r, n := range m.stats.ClosedBy {
			if n > m.prev.ClosedBy[r] {
				m.lastBy[r] = n - m.prev.ClosedBy[r]
			}
		}
	}
	// Keep the selection on its conid, else on its row.
	if m.focus != 0 && slices.ContainsFunc(m.conns, func(c rpc.Conn) bool { return c.ConnID == m.focus }) {
		m.selected, m.focus = m.focus, 0
	}
	if i := slices.IndexFunc(m.conns, func(c rpc.Conn) bool { return c.ConnID == m.selected }); i >= 0 {
		m.row = i
	} else if len(m.conns) > 0 {
		m.row = min(m.row, len(m.conns)-1)
		m.selected = m.conns[m.row].ConnID
	} else {
		m.selected, m.row = 0, 0
	}
}

func appendWindow(w []float64, v float64, n int) []float64 {
	w = append(w, v)
	if len(w) > n {
		w = w[len(w)-n:]
	}
	return w
}

func (m *topModel) admin() (bool, string) {
	if c := m.stats.Caller; c != nil {
		return c.Admin, c.Why
	}
	return false, "the daemon does not say"
}

func (m *topModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, nil
	case tickMsg:
		return m, m.fetchCmd(true)
	case dataMsg:
		m.apply(msg)
		if msg.tick {
			return m, tea.Tick(m.interval, func(time.Time) tea.Msg { return tickMsg{} })
		}
		return m, nil
	case actionMsg:
		if msg.err != nil {
			m.status = "failed: " + msg.err.Error()
		} else {
			m.status = msg.text
		}
		return m, m.fetchCmd(false)
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

// key handles a key in the current mode.
func (m *topModel) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if k.Type == tea.KeyCtrlC {
		return m, tea.Quit
	}
	if k.Type == tea.KeyRunes && len(k.Runes) > 1 {
		// Keys typed faster than the screen reads them come as one
		// message: each is a key of its own (k then 30 3 10).
		var cmds []tea.Cmd
		for _, r := range k.Runes {
			_, c := m.key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
			cmds = append(cmds, c)
		}
		return m, tea.Batch(cmds...)
	}
	switch m.mode {
	case modeFilter:
		switch k.Type {
		case tea.KeyEnter:
			m.mode = modeTable
		case tea.KeyEsc:
			m.mode, m.filter = modeTable, ""
		case tea.KeyBackspace:
			if r := []rune(m.filter); len(r) > 0 {
				m.filter = string(r[:len(r)-1])
			}
		case tea.KeyRunes:
			m.filter += string(k.Runes)
		case tea.KeySpace:
			m.filter += " "
		default:
			return m, nil
		}
		m.offset, m.after = 0, 0
		return m, m.fetchCmd(false)
	case modeConfirm:
		m.mode = modeTable
		switch k.String() {
		case "y", "Y":
			return m, m.closeCmd(m.target, false)
		case "r", "R":
			return m, m.closeCmd(m.target, true)
		}
		m.status = "not closed"
		return m, nil
	case modeKeepalive, modeLifetime:
		switch k.Type {
		case tea.KeyEnter:
			mode, in := m.mode, strings.TrimSpace(m.input)
			m.mode, m.input = modeTable, ""
			if mode == modeKeepalive {
				return m, m.keepaliveCmd(m.target, in)
			}
			return m, m.lifetimeCmd(m.target, in)
		case tea.KeyEsc:
			m.mode, m.input, m.status = modeTable, "", "cancelled"
		case tea.KeyBackspace:
			if r := []rune(m.input); len(r) > 0 {
				m.input = string(r[:len(r)-1])
			}
		case tea.KeyRunes:
			m.input += string(k.Runes)
		case tea.KeySpace:
			m.input += " "
		}
		return m, nil
	case modeInfo:
		switch k.String() {
		case "q":
			return m, tea.Quit
		case "esc", "enter", "i":
			m.mode, m.info = modeTable, nil
		}
		return m, nil
	}
	switch k.String() {
	case "q":
		return m, tea.Quit
	case "up":
		m.move(-1)
	case "down":
		m.move(1)
	case "pgup":
		m.page(-1)
		return m, m.fetchCmd(false)
	case "pgdown":
		m.page(1)
		return m, m.fetchCmd(false)
	case "home":
		m.offset, m.after, m.row = 0, 0, 0
		m.selected = 0
		return m, m.fetchCmd(false)
	case "s":
		m.sort = (m.sort + 1) % len(topSorts)
		m.offset, m.after = 0, 0
		return m, m.fetchCmd(false)
	case "/":
		m.mode = modeFilter
	case "esc":
		if m.filter != "" {
			m.filter, m.offset, m.after = "", 0, 0
			return m, m.fetchCmd(false)
		}
	case "enter", "i":
		if m.selected != 0 {
			m.mode, m.target = modeInfo, m.selected
			return m, m.fetchCmd(false)
		}
	case "p":
		c := m.current()
		if c == nil || c.Peer == 0 {
			m.status = "no partner leg"
			return m, nil
		}
		// Both legs at the top of the conid order, the partner selected.
		m.sort, m.filter, m.offset = 0, "", 0
		m.after = min(c.ConnID, c.Peer) - 1
		m.focus, m.status = c.Peer, fmt.Sprintf("conid %d, the partner of %d", c.Peer, c.ConnID)
		return m, m.fetchCmd(false)
	case "c", "k", "l":
		if ok, why := m.admin(); !ok {
			m.status = "read-only: " + why
			return m, nil
		}
		c := m.current()
		if c == nil {
			return m, nil
		}
		m.target = c.ConnID
		switch k.String() {
		case "c":
			m.mode = modeConfirm
		case "k":
			m.mode, m.input = modeKeepalive, ""
		case "l":
			m.mode, m.input = modeLifetime, ""
		}
	}
	return m, nil
}

func (m *topModel) current() *rpc.Conn {
	if m.row < len(m.conns) && m.conns[m.row].ConnID == m.selected {
		return &m.conns[m.row]
	}
	return nil
}

func (m *topModel) move(d int) {
	if len(m.conns) == 0 {
		return
	}
	m.row = min(max(m.row+d, 0), len(m.conns)-1)
	m.selected = m.conns[m.row].ConnID
}

func (m *topModel) page(d int) {
	n := m.rows()
	m.offset = max(m.offset+d*n, 0)
	if m.total > 0 {
		m.offset = min(m.offset, max(m.total-1, 0)/n*n)
	}
	m.row, m.selected = 0, 0
}

// action runs one changing call on top's connection.
func (m *topModel) action(fn func(ctx context.Context, c *client.Client) (string, error)) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(m.ctx, m.o.Timeout)
		defer cancel()
		c, err := m.keep.get(ctx, m.o.socketPath())
		if err != nil {
			return actionMsg{err: err}
		}
		text, err := fn(ctx, c)
		return actionMsg{text: text, err: err}
	}
}

func (m *topModel) closeCmd(id uint64, reset bool) tea.Cmd {
	return m.action(func(ctx context.Context, c *client.Client) (string, error) {
		if _, err := c.CloseConn(ctx, id, reset); err != nil {
			return "", err
		}
		how := "FIN"
		if reset {
			how = "RST"
		}
		return fmt.Sprintf("conid %d closed (%s)", id, how), nil
	})
}

func (m *topModel) keepaliveCmd(id uint64, in string) tea.Cmd {
	return m.action(func(ctx context.Context, c *client.Client) (string, error) {
		p := rpc.KeepaliveParams{ConnID: &id}
		if in == "off" {
			p.Enable = new(false)
		} else {
			f := strings.Fields(in)
			if len(f) != 3 {
				return "", fmt.Errorf("keepalive %q: want IDLE COUNT INTERVAL (seconds) or off", in)
			}
			var v [3]int
			for i, s := range f {
				n, err := strconv.Atoi(s)
				if err != nil {
					return "", fmt.Errorf("keepalive %q: %q is not a whole number", in, s)
				}
				v[i] = n
			}
			p.Enable, p.Idle, p.Count, p.Interval = new(true), &v[0], &v[1], &v[2]
		}
		r, err := c.Keepalive(ctx, p)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("conid %d: keepalive %s (read back from the kernel)", id, keepaliveH(&r.Keepalive, true)), nil
	})
}

func (m *topModel) lifetimeCmd(id uint64, in string) tea.Cmd {
	return m.action(func(ctx context.Context, c *client.Client) (string, error) {
		d, err := rpc.ParseSeconds(in)
		if err != nil {
			return "", fmt.Errorf("lifetime %v", err)
		}
		r, err := c.Lifetime(ctx, id, d)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("conid %d: lifetime %s, closes in %s unless there is traffic", id, lifetimeH(r.LifetimeS), expiresH(r.LifetimeS, r.ExpiresInS)), nil
	})
}

// Styles: bold headings, the selected row in reverse video. Without a
// colour terminal (--once into a file) they print as plain text.
var (
	styleHead     = lipgloss.NewStyle().Bold(true)
	styleSelected = lipgloss.NewStyle().Reverse(true)
	styleSuspect  = lipgloss.NewStyle().Bold(true)
)

// View draws the screen.
func (m *topModel) View() string {
	var b strings.Builder
	line := func(s string) {
		b.WriteString(ansi.Truncate(s, m.width, ""))
		b.WriteByte('\n')
	}
	st := m.stats
	admin, why := m.admin()
	who := "read-only"
	if admin {
		who = "admin"
	}
	line(styleHead.Render(fmt.Sprintf("tcpops top  %s  %s (%s)  up %s  every %s  %s",
		m.o.socketPath(), who, why, secs(st.UptimeS), m.interval, m.at.Format("15:04:05"))))
	if m.err != nil {
		line("daemon: " + m.err.Error())
	} else {
		line("")
	}
	line(fmt.Sprintf("conns %-6d state %s   proto %s", st.Connections, countsH(st.ByState), countsH(st.ByProto)))
	line(fmt.Sprintf("accepts/s %7.1f %s  total %d", last(m.accepts), sparkline(m.accepts), st.Accepted))
	line(fmt.Sprintf("closes/s  %7.1f %s  total %d", last(m.closes), sparkline(m.closes), st.Closed))
	line(fmt.Sprintf("closed by reason %s   last %s: %s", countsH(st.ClosedBy), m.interval, countsH(m.lastBy)))
	if m.mode == modeInfo {
		return m.infoView()
	}
	shown := "none"
	if len(m.conns) > 0 {
		shown = fmt.Sprintf("%d-%d of %d", m.offset+1, m.offset+len(m.conns), m.total)
	}
	if m.after != 0 {
		shown += fmt.Sprintf(" after conid %d", m.after)
	}
	filter := m.filter
	if m.mode == modeFilter {
		filter += "_"
	}
	line(fmt.Sprintf("sort %s   filter %q   showing %s", topSorts[m.sort], filter, shown))
	header := []string{" ", "CONID", "PEER", "PROTO", "DIR", "STATE", "REMOTE", "LISTENER", "IDLE", "AGE", "IN", "OUT", "RATE", "KEEPALIVE", "EXPIRES", "SUSPECT"}
	rows := make([][]string, len(m.conns))
	for i, c := range m.conns {
		mark := " "
		if c.ConnID == m.selected {
			mark = ">"
		}
		rate := "-"
		if c.BytesPerS != nil {
			rate = bytesH(uint64(*c.BytesPerS)) + "/s"
		}
		rows[i] = []string{mark, strconv.FormatUint(c.ConnID, 10), orDash(c.Peer), c.Proto, c.Direction, c.StateName,
			orDashS(c.Remote), c.Listener, secs(c.IdleS), secs(m.at.Sub(c.Created).Seconds()), bytesH(c.BytesIn), bytesH(c.BytesOut),
			rate, keepaliveH(c.Keepalive, false), expiresH(c.LifetimeS, c.ExpiresInS), strings.Join(c.Suspect, ",")}
	}
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
		for _, r := range rows {
			widths[i] = min(max(widths[i], len(r[i])), 40)
		}
	}
	format := func(r []string) string {
		var sb strings.Builder
		for i, c := range r {
			if i > 0 {
				sb.WriteString(" ")
			}
			if i == len(r)-1 {
				sb.WriteString(c)
			} else {
				sb.WriteString(ansi.Truncate(c, widths[i], "~"))
				sb.WriteString(strings.Repeat(" ", max(widths[i]-len(c), 0)))
			}
		}
		return sb.String()
	}
	line(styleHead.Render(strings.TrimRight(format(header), " ")))
	colour := lipgloss.ColorProfile() != termenv.Ascii
	for i, r := range rows {
		s := strings.TrimRight(format(r), " ")
		switch {
		case m.conns[i].ConnID == m.selected && colour:
			// The bar spans the screen where it can be seen.
			s = styleSelected.Render(ansi.Truncate(s, m.width, "") + strings.Repeat(" ", max(m.width-ansi.StringWidth(s), 0)))
		case len(m.conns[i].Suspect) > 0:
			s = styleSuspect.Render(s)
		}
		line(s)
	}
	for range m.rows() - len(rows) {
		line("")
	}
	line(m.statusLine())
	b.WriteString(ansi.Truncate(m.keysLine(admin, why), m.width, ""))
	return b.String()
}

func (m *topModel) statusLine() string {
	switch m.mode {
	case modeConfirm:
		return fmt.Sprintf("close conid %d%s? y: close (FIN), r: reset (RST), any other key: keep it", m.target, m.describe(m.target))
	case modeKeepalive:
		return fmt.Sprintf("keepalive of conid %d: IDLE COUNT INTERVAL (seconds) or off, Enter sets, Esc cancels: %s_", m.target, m.input)
	case modeLifetime:
		return fmt.Sprintf("lifetime of conid %d: seconds (or 10m; 0 = none), Enter sets, Esc cancels: %s_", m.target, m.input)
	case modeFilter:
		return "filter: type words, Enter keeps the filter, Esc clears it"
	}
	return m.status
}

func (m *topModel) describe(id uint64) string {
	for _, c := range m.conns {
		if c.ConnID == id {
			return fmt.Sprintf(" (%s %s %s, %s)", c.Proto, c.Direction, orDashS(c.Remote), c.Listener)
		}
	}
	return ""
}

func (m *topModel) keysLine(admin bool, why string) string {
	keys := "q quit  up/down pgup/pgdn move  s sort  / filter  enter info  p partner"
	if admin {
		return keys + "  c close  k keepalive  l lifetime"
	}
	return keys + "  [c close, k keepalive, l lifetime: off, read-only: " + why + "]"
}

// infoView shows the selected connection as info does, in two columns
// when one does not fit.
func (m *topModel) infoView() string {
	var lines []string
	switch {
	case m.info != nil:
		for _, kv := range infoKV(*m.info) {
			lines = append(lines, fmt.Sprintf("%-16s %s", kv[0], kv[1]))
		}
		if len(m.info.Suspect) > 0 {
			lines = append(lines, fmt.Sprintf("%-16s %s", "suspect", strings.Join(m.info.Suspect, ",")))
		}
	case m.err != nil:
		lines = append(lines, fmt.Sprintf("conid %d: %v", m.target, m.err))
	default:
		lines = append(lines, fmt.Sprintf("conid %d: reading...", m.target))
	}
	var b strings.Builder
	b.WriteString(styleHead.Render(fmt.Sprintf("tcpops top  info of conid %d  %s", m.target, m.at.Format("15:04:05"))))
	b.WriteString("\n\n")
	avail := max(m.height-4, 1)
	if len(lines) > avail && m.width >= 100 {
		half := (len(lines) + 1) / 2
		w := m.width / 2
		for i := range half {
			left := ansi.Truncate(lines[i], w-2, "~")
			left += strings.Repeat(" ", max(w-ansi.StringWidth(left), 0))
			right := ""
			if i+half < len(lines) {
				right = lines[i+half]
			}
			b.WriteString(ansi.Truncate(strings.TrimRight(left+right, " "), m.width, ""))
			b.WriteByte('\n')
		}
	} else {
		for _, l := range lines[:min(len(lines), avail)] {
			b.WriteString(ansi.Truncate(l, m.width, ""))
			b.WriteByte('\n')
		}
	}
	b.WriteString("\nEsc or Enter: back to the table  q: quit")
	return b.String()
}

func last(w []float64) float64 {
	if len(w) == 0 {
		return 0
	}
	return w[len(w)-1]
}

// sparkline draws values as bars, scaled to their largest.
func sparkline(w []float64) string {
	const bars = "▁▂▃▄▅▆▇█"
	if len(w) == 0 {
		return "-"
	}
	top := slices.Max(w)
	var b strings.Builder
	for _, v := range w {
		i := 0
		if top > 0 {
			i = int(math.Round(v / top * 7))
		}
		b.WriteRune([]rune(bars)[min(max(i, 0), 7)])
	}
	return b.String()
}
