package cli_test

import (
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
