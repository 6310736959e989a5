package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/tcpops/tcpops/daemon"
)

// render formats a committed man page as man-db shows it on an 80-column
// terminal, with groff's warnings on, and fails on any warning.
func render(t *testing.T, page string) string {
	t.Helper()
	man, err := exec.LookPath("man")
	if err != nil {
		t.Fatal("man is missing: install the Debian package man-db (./test.sh does)")
	}
	cmd := exec.Command(man, "--warnings", "-l", filepath.Join("..", "..", page))
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat", "LC_ALL=C.UTF-8")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("man --warnings -l %s: %v\n%s", page, err, stderr.String())
	}
	for i, line := range strings.Split(out.String(), "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Errorf("%s line %d is %d columns wide:\n%s", page, i+1, n, line)
		}
	}
	return out.String()
}

// sections are the section headings of a rendered page.
func sections(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if line != "" && line[0] >= 'A' && line[0] <= 'Z' && line == strings.ToUpper(line) {
			out = append(out, line)
		}
	}
	return out
}

func hasAll(t *testing.T, page string, have, want []string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			t.Errorf("%s has no %s section (it has %q)", page, w, have)
		}
	}
}

// TestManPages: both pages render at 80 columns with no groff warning and
// have the sections a reader looks for; tcpopsctl(1) has every command
// with its synopsis and options, tcpops(8) every option.
func TestManPages(t *testing.T) {
	ctl := render(t, "man/tcpopsctl.1")
	hasAll(t, "tcpopsctl(1)", sections(ctl), []string{"NAME", "SYNOPSIS", "DESCRIPTION", "GLOBAL OPTIONS", "COMMANDS",
		"OUTPUT", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"})
	flat := strings.Join(strings.Fields(ctl), " ")
	for _, c := range commands(ctlCommand()) {
		if use := strings.TrimSuffix(c.UseLine(), " [flags]"); !strings.Contains(flat, use) {
			t.Errorf("tcpopsctl(1) lacks %q", use)
		}
		c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && !strings.Contains(flat, "--"+f.Name) {
				t.Errorf("tcpopsctl(1) lacks %s --%s", c.CommandPath(), f.Name)
			}
		})
	}
	for _, s := range []string{"tcpops(8)", "TCPOPS_SOCKET", "/run/tcpops/tcpops.sock", "3 the daemon cannot be reached"} {
		if !strings.Contains(flat, s) {
			t.Errorf("tcpopsctl(1) lacks %q", s)
		}
	}

	d := render(t, "man/tcpops.8")
	hasAll(t, "tcpops(8)", sections(d), []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "LISTENER OPTIONS",
		"CONFIGURATION", "SIGNALS", "STATES", "CLOSE REASONS", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"})
	flat = strings.Join(strings.Fields(d), " ")
	cmd := daemon.NewCommand()
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(flat, "--"+f.Name) {
			t.Errorf("tcpops(8) lacks --%s", f.Name)
		}
	})
	for _, s := range []string{"tcpopsctl(1)", "SIGHUP", "SIGUSR1", "not_found", "tcp:timeout", "subprotocol_required=true",
		"frame=binary|text|sip", "-4 bad", "CAP_NET_BIND_SERVICE"} {
		if !strings.Contains(flat, s) {
			t.Errorf("tcpops(8) lacks %q", s)
		}
	}
}
