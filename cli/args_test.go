package cli_test

import (
	"strings"
	"testing"
)

// TestBadArguments: a negative number is an argument, not a flag, and
// the message says what the argument accepts; a bad flag value says what
// the flag takes.
func TestBadArguments(t *testing.T) {
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"lifetime", "1", "-5"}, "tcpopsctl: SECONDS -5: the lifetime must be >= 0 seconds (0 = no idle limit)\n"},
		{[]string{"lifetime", "1", "--", "-5"}, "tcpopsctl: SECONDS -5: the lifetime must be >= 0 seconds (0 = no idle limit)\n"},
		{[]string{"lifetime", "1", "-0.5"}, "tcpopsctl: SECONDS -0.5: the lifetime must be >= 0 seconds (0 = no idle limit)\n"},
		{[]string{"lifetime", "--all", "-5"}, "tcpopsctl: SECONDS -5: the lifetime must be >= 0 seconds (0 = no idle limit)\n"},
		{[]string{"lifetime", "--all", "--", "-5"}, "tcpopsctl: SECONDS -5: the lifetime must be >= 0 seconds (0 = no idle limit)\n"},
		{[]string{"lifetime", "-5", "--remote", "10.0.0.0/8"}, "tcpopsctl: SECONDS -5: the lifetime must be >= 0 seconds (0 = no idle limit)\n"},
		{[]string{"keepalive", "enable", "--all", "60", "-5", "5"}, "tcpopsctl: COUNT -5: must be 1..127 probes\n"},
		{[]string{"closed-event", "-2"}, "tcpopsctl: CONID -2: a conid is a positive integer (see 'tcpopsctl list')\n"},
		{[]string{"-o", "json", "lifetime", "-7", "5"}, "tcpopsctl: CONID -7: a conid is a positive integer (see 'tcpopsctl list')\n"},
		{[]string{"state", "-1"}, "tcpopsctl: CONID -1: a conid is a positive integer (see 'tcpopsctl list')\n"},
		{[]string{"state", "0"}, "tcpopsctl: CONID 0: a conid is a positive integer (see 'tcpopsctl list')\n"},
		{[]string{"close", "-3", "--reset"}, "tcpopsctl: CONID -3: a conid is a positive integer (see 'tcpopsctl list')\n"},
		{[]string{"--timeout", "1s", "wait", "closed", "-2"}, "tcpopsctl: CONID -2: a conid is a positive integer (see 'tcpopsctl list')\n"},
		{[]string{"-s", "x", "keepalive", "enable", "1", "-60", "5", "5"}, "tcpopsctl: IDLE -60: must be 1..32767 seconds\n"},
		{[]string{"keepalive", "enable", "1", "60", "-5", "5"}, "tcpopsctl: COUNT -5: must be 1..127 probes\n"},
		{[]string{"keepalive", "enable", "1", "60", "5", "-5"}, "tcpopsctl: INTERVAL -5: must be 1..32767 seconds\n"},
		{[]string{"ls", "-1"}, "tcpopsctl: -1: a negative number is not an argument of tcpopsctl list (usage: tcpopsctl list [flags])\n"},
		{[]string{"events", "--since", "-1"}, "tcpopsctl: --since -1: want a whole number >= 0 (see 'tcpopsctl events --help')\n"},
		{[]string{"list", "--idle-min", "soon"}, "tcpopsctl: --idle-min soon: want a duration such as 500ms, 30s or 10m (see 'tcpopsctl list --help')\n"},
		{[]string{"list", "--limit", "x"}, "tcpopsctl: --limit x: want a whole number (see 'tcpopsctl list --help')\n"},
		{[]string{"state", "-x"}, "tcpopsctl: unknown shorthand flag: 'x' in -x (see 'tcpopsctl state --help')\n"},
	}
	for _, tt := range tests {
		code, out, errOut := run(t, tt.args...)
		if code != 2 || out != "" || errOut != tt.stderr {
			t.Errorf("tcpopsctl %q: exit %d, stdout %q, stderr %q; want 2, nothing, %q", tt.args, code, out, errOut, tt.stderr)
		}
	}
}

// TestMistypedCommands: a mistyped command gets the hint on its first line
// and the commands that come close after it, at every level.
func TestMistypedCommands(t *testing.T) {
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"lsit"}, "tcpopsctl: unknown command \"lsit\" for \"tcpopsctl\" (see 'tcpopsctl --help')\nDid you mean this?\n\tlist\n\twait\n"},
		{[]string{"keepalive", "enabel", "1"}, "tcpopsctl: unknown command \"enabel\" for \"tcpopsctl keepalive\" (see 'tcpopsctl keepalive --help')\nDid you mean this?\n\tenable\n"},
		{[]string{"wait", "redy"}, "tcpopsctl: unknown command \"redy\" for \"tcpopsctl wait\" (see 'tcpopsctl wait --help')\nDid you mean this?\n\tready\n"},
		{[]string{"wait", "zzz"}, "tcpopsctl: unknown command \"zzz\" for \"tcpopsctl wait\" (see 'tcpopsctl wait --help')\n"},
	}
	for _, tt := range tests {
		code, out, errOut := run(t, tt.args...)
		if code != 2 || out != "" || errOut != tt.stderr {
			t.Errorf("tcpopsctl %q: exit %d, stdout %q, stderr %q; want 2, nothing, %q", tt.args, code, out, errOut, tt.stderr)
		}
	}
}

// TestCompletionHelp: completion and each shell's command have examples.
func TestCompletionHelp(t *testing.T) {
	for _, sh := range []string{"", "bash", "zsh", "fish", "powershell"} {
		args := []string{"completion", "--help"}
		if sh != "" {
			args = []string{"completion", sh, "--help"}
		}
		code, out, _ := run(t, args...)
		if code != 0 || !strings.Contains(out, "Examples:\n  ") || !strings.Contains(out, "tcpopsctl completion "+sh) {
			t.Errorf("tcpopsctl %q: exit %d, %q; want examples", args, code, out)
		}
	}
}
