package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The manual pages are hand-written roff (pages/*.in) into which the parts
// that the command trees already say are generated: synopses, options,
// each command of tcpopsctl with its help and examples. A line
// "@NAME@" in a page is replaced by the part NAME.

//go:embed pages/tcpops.8.in
var tcpopsPage string

//go:embed pages/tcpopsctl.1.in
var tcpopsctlPage string

// fill replaces the @PART@ lines of page.
func fill(page string, parts map[string]string) (string, error) {
	var b strings.Builder
	for line := range strings.Lines(page) {
		name, ok := strings.CutPrefix(strings.TrimSpace(line), "@")
		if ok && strings.HasSuffix(name, "@") {
			part, found := parts[strings.TrimSuffix(name, "@")]
			if !found {
				return "", fmt.Errorf("no part %s", line)
			}
			b.WriteString(part)
			continue
		}
		b.WriteString(line)
	}
	return b.String(), nil
}

// esc makes text safe in roff: backslashes and minus signs escaped (a
// plain - may come out as a hyphen, which a shell would not take), and a
// line that would start with a control character guarded.
func esc(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	var b strings.Builder
	for line := range strings.Lines(s) {
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
			b.WriteString(`\&`)
		}
		b.WriteString(line)
	}
	return b.String()
}

// help renders a help text as roff: paragraphs at blank lines, filled.
// Lines that start with a space are a block of their own: a list of terms
// and what they mean (two columns, a wide gap between them; continuation
// lines indented under the second) becomes a list that groff wraps; any
// other block (commands, a table) is kept as it is.
func help(text string) string {
	var b strings.Builder
	for i, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		var block []string
		flush := func() {
			if len(block) > 0 {
				b.WriteString(preformatted(block))
				block = nil
			}
		}
		for _, line := range strings.Split(para, "\n") {
			line = strings.ReplaceAll(line, "\t", "    ")
			if strings.HasPrefix(line, " ") {
				block = append(block, line)
				continue
			}
			flush()
			b.WriteString(esc(line) + "\n")
		}
		flush()
	}
	return b.String()
}

// termLine is "  term    what it means".
var termLine = regexp.MustCompile(`^( +)(\S(?:.*?\S)?) {2,}(\S.*)$`)

// preformatted renders the indented lines of a help text: as a list of
// terms when every line is a term line or continues the one before,
// else as they are.
func preformatted(lines []string) string {
	type item struct{ term, desc string }
	var items []item
	descCol := 0
	for _, l := range lines {
		trimmed := strings.TrimLeft(l, " ")
		if indent := len(l) - len(trimmed); len(items) > 0 && indent >= descCol-1 {
			items[len(items)-1].desc += " " + trimmed // a continuation
			continue
		}
		m := termLine.FindStringSubmatch(l)
		if m == nil {
			items = nil
			break
		}
		items = append(items, item{m[2], m[3]})
		descCol = len(l) - len(m[3])
	}
	var b strings.Builder
	if len(items) < 2 {
		b.WriteString(".nf\n")
		for _, l := range lines {
			b.WriteString(esc(l) + "\n")
		}
		b.WriteString(".fi\n")
		return b.String()
	}
	// The terms' column: as wide as most terms, so that only a long one
	// puts its meaning on the next line.
	width := 0
	for _, it := range items {
		width = max(width, len(it.term))
	}
	width = min(width+2, 16)
	b.WriteString(".RS 2\n")
	for _, it := range items {
		fmt.Fprintf(&b, ".TP %dn\n%s\n%s\n", width, esc(it.term), esc(it.desc))
	}
	b.WriteString(".RE\n")
	return b.String()
}

// example renders a command's Example: its lines as they are, indented.
func example(text string) string {
	var b strings.Builder
	b.WriteString(".PP\n.RS 2\n.nf\n")
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		b.WriteString(esc(strings.TrimPrefix(line, "  ")) + "\n")
	}
	b.WriteString(".fi\n.RE\n")
	return b.String()
}

// argName is what a flag's value is called in a synopsis.
func argName(f *pflag.Flag) string {
	switch f.Value.Type() {
	case "bool":
		return ""
	case "duration":
		return "DUR"
	case "int", "uint64", "int64", "uint", "float64":
		return "N"
	}
	switch f.Name {
	case "socket", "config", "event-log", "tls-cert", "tls-key", "binary":
		return "PATH"
	case "conids":
		return "LIST"
	case "output", "log-format":
		return "FORMAT"
	}
	return strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
}

// flagTag is a flag as an option list shows it: -s, --socket PATH.
func flagTag(f *pflag.Flag) string {
	tag := `\fB\-\-` + esc(f.Name) + `\fR`
	if f.Shorthand != "" {
		tag = `\fB\-` + f.Shorthand + `\fR, ` + tag
	}
	if a := argName(f); a != "" {
		tag += ` \fI` + esc(a) + `\fR`
	}
	return tag
}

// flagDefault is what a flag's default says, or "".
func flagDefault(f *pflag.Flag) string {
	switch f.DefValue {
	case "", "false", "0", "[]", "0s":
		return ""
	}
	return strings.Trim(f.DefValue, "[]")
}

// options lists flags as .TP entries.
func options(fs *pflag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		usage := f.Usage
		if d := flagDefault(f); d != "" {
			usage += " (default " + d + ")"
		}
		fmt.Fprintf(&b, ".TP\n%s\n%s\n", flagTag(f), esc(usage))
	})
	return b.String()
}

// selectorFlags are the flags a SELECTOR of tcpopsctl(1) stands for in
// a synopsis.
var selectorFlags = []string{"all", "conids", "state", "proto", "direction", "listener", "remote", "idle-min"}

// synopsis is a command's usage with its own flags spelled out, for the
// SYNOPSIS section: a hanging paragraph that may wrap.
func synopsis(c *cobra.Command) string {
	use := strings.Fields(c.Use)
	var b strings.Builder
	b.WriteString(`\fB` + esc(c.CommandPath()) + `\fR`)
	var flags []string
	selects := strings.Contains(c.Use, "SELECTOR")
	c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" || selects && slices.Contains(selectorFlags, f.Name) {
			return
		}
		s := `\fB\-\-` + esc(f.Name) + `\fR`
		if a := argName(f); a != "" {
			s += ` \fI` + esc(a) + `\fR`
		}
		if f.Value.Type() == "stringArray" {
			s += "..."
		}
		flags = append(flags, "["+s+"]")
	})
	for i := 1; i < len(use); i++ {
		w := use[i]
		switch {
		case w == "[flags]" || w == "[filters]":
			continue
		case strings.HasPrefix(w, "--"): // a flag, listed below
			if i+1 < len(use) && use[i+1] == strings.ToUpper(use[i+1]) {
				i++
			}
			continue
		}
		b.WriteString(" " + italicArgs(w))
	}
	for _, f := range flags {
		b.WriteString(" " + f)
	}
	return b.String()
}

// italicArgs sets the argument names of a usage word in italics: CONID,
// [JSON-PARAMS | KEY=VALUE ...].
func italicArgs(w string) string {
	var b strings.Builder
	word := func(s string) {
		if s != "" && s == strings.ToUpper(s) && strings.ContainsAny(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
			b.WriteString(`\fI` + esc(s) + `\fR`)
		} else {
			b.WriteString(esc(s))
		}
	}
	start := 0
	for i, r := range w {
		if strings.ContainsRune("[]()|.", r) {
			word(w[start:i])
			b.WriteRune(r)
			start = i + 1
		}
	}
	word(w[start:])
	return b.String()
}

// commands are the commands of a tree below its root that a reader runs,
// depth first, in name order.
func commands(root *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		subs := slices.Clone(c.Commands())
		slices.SortFunc(subs, func(a, b *cobra.Command) int { return strings.Compare(a.Name(), b.Name()) })
		for _, s := range subs {
			if s.Hidden || s.Name() == "help" || !s.IsAvailableCommand() {
				continue
			}
			out = append(out, s)
			walk(s)
		}
	}
	walk(root)
	return out
}

// ctlPage is tcpopsctl(1).
func ctlPage(root *cobra.Command, date string) ([]byte, error) {
	var syn, cmds strings.Builder
	syn.WriteString(".in +4n\n")
	for _, c := range commands(root) {
		if !c.HasSubCommands() {
			fmt.Fprintf(&syn, ".ti -4n\n%s\n.br\n", synopsis(c))
		}
		name := strings.TrimSuffix(c.UseLine(), " [flags]")
		if len(c.Aliases) > 0 {
			name += " (alias: " + strings.Join(c.Aliases, ", ") + ")"
		}
		fmt.Fprintf(&cmds, ".SS \"%s\"\n", esc(name))
		cmds.WriteString(help(c.Long))
		if opts := options(c.NonInheritedFlags()); opts != "" {
			cmds.WriteString(".PP\nOptions:\n.RS 4\n" + opts + ".RE\n")
		}
		if c.Example != "" {
			cmds.WriteString(".PP\nExamples:\n" + example(c.Example))
		}
	}
	syn.WriteString(".in\n")
	page, err := fill(tcpopsctlPage, map[string]string{
		"DATE":           fmt.Sprintf(".TH TCPOPSCTL 1 %q \"tcpops\" \"tcpops manual\"\n", date),
		"SYNOPSIS":       syn.String(),
		"GLOBAL-OPTIONS": options(root.PersistentFlags()),
		"COMMANDS":       cmds.String(),
	})
	return []byte(page), err
}

// daemonPage is tcpops(8).
func daemonPage(d *cobra.Command, date string) ([]byte, error) {
	var syn bytes.Buffer
	syn.WriteString(".in +4n\n.ti -4n\n" + synopsis(d) + "\n.in\n")
	page, err := fill(tcpopsPage, map[string]string{
		"DATE":     fmt.Sprintf(".TH TCPOPS 8 %q \"tcpops\" \"tcpops manual\"\n", date),
		"SYNOPSIS": syn.String(),
		"OPTIONS":  options(d.Flags()),
		"EXAMPLES": example(d.Example),
	})
	return []byte(page), err
}
