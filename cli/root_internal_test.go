package cli

import (
	"bytes"
	"io"
	"slices"
	"testing"

	"github.com/spf13/pflag"
)

// TestGlobalValueFlags: commandName skips the value of every global flag
// that takes one, so that it finds the command to build.
func TestGlobalValueFlags(t *testing.T) {
	root := NewRootCmd(&Options{Stdout: io.Discard, Stderr: io.Discard})
	var want []string
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if f.NoOptDefVal != "" { // a bool
			return
		}
		want = append(want, "--"+f.Name)
		if f.Shorthand != "" {
			want = append(want, "-"+f.Shorthand)
		}
	})
	for _, f := range want {
		if !slices.Contains(globalValueFlags, f) {
			t.Errorf("global flag %s takes a value but is not in globalValueFlags", f)
		}
	}
	for _, f := range globalValueFlags {
		if !slices.Contains(want, f) {
			t.Errorf("globalValueFlags has %s, which is no global flag taking a value", f)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"state", "1"}, "state"},
		{[]string{"-s", "/x.sock", "-o", "json", "--timeout", "1s", "state", "1"}, "state"},
		{[]string{"--socket=/x.sock", "--pretty", "alive", "1"}, "alive"},
		{[]string{"--nats", "nats://n:4222", "--host", "h1", "--nats-creds", "c", "--nats-tls-ca", "ca", "list"}, "list"},
		{[]string{"-s", "/x.sock"}, ""},
		{[]string{"--help", "state"}, ""},
		{[]string{"--", "state"}, ""},
		{nil, ""},
	} {
		if got := commandName(tt.args); got != tt.want {
			t.Errorf("commandName(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

// TestOnlyTreeHelp: a command's help is the same from the tree built
// for it alone as from the whole tree.
func TestOnlyTreeHelp(t *testing.T) {
	full := NewRootCmd(&Options{Stdout: io.Discard, Stderr: io.Discard})
	for _, c := range full.Commands() {
		if c.Hidden || c.Name() == "completion" || c.Name() == "help" {
			continue
		}
		for _, args := range [][]string{{c.Name(), "--help"}, {"-o", "json", c.Name(), "-h"}} {
			var a, b bytes.Buffer
			whole := NewRootCmd(&Options{Stdout: &a, Stderr: &a})
			whole.SetArgs(args)
			if err := whole.Execute(); err != nil {
				t.Fatalf("%q on the whole tree: %v", args, err)
			}
			alone := NewRootCmd(&Options{Stdout: &b, Stderr: &b, only: commandName(args)})
			if n := len(alone.Commands()); n != 1 {
				t.Fatalf("%q: %d commands built, want 1", args, n)
			}
			alone.SetArgs(args)
			if err := alone.Execute(); err != nil {
				t.Fatalf("%q on its own tree: %v", args, err)
			}
			if a.String() != b.String() {
				t.Errorf("%q: help differs:\nwhole tree:\n%s\nalone:\n%s", args, a.String(), b.String())
			}
		}
	}
}
