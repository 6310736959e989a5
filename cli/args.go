package cli

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"
)

// A negative number among the arguments looks like a flag to the flag
// parser (-5 is "unknown shorthand flag: '5'"). negativeArg turns that
// error into what is wrong with the argument, named as in the command's
// usage line: "SECONDS -5: the lifetime must be >= 0 seconds".

// argRules say what each argument name of a usage line accepts.
var argRules = map[string]string{
	"CONID":    "a conid is a positive integer (see 'tcpopsctl list')",
	"SECONDS":  "the lifetime must be >= 0 seconds (0 = no idle limit)",
	"IDLE":     "must be 1..32767 seconds",
	"COUNT":    "must be 1..127 probes",
	"INTERVAL": "must be 1..32767 seconds",
}

// shorthandErr and badValue are compiled when an error needs them: a
// package-level regexp is compiled at every start of tcpopsctl.
var shorthandErr = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^unknown shorthand flag: '.' in (-\S+)$`)
})

// negativeArg explains err when it is the flag parser refusing a negative
// number given as an argument of cmd; args are the command line's
// arguments. It returns nil for any other error.
func negativeArg(cmd *cobra.Command, args []string, err error) error {
	m := shorthandErr().FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	bad := m[1]
	if _, perr := strconv.ParseFloat(bad, 64); perr != nil {
		return nil
	}
	names := argNames(cmd)
	if len(names) > 0 && names[0] == optionalConid {
		// "(CONID | SELECTOR)": a CONID unless selector flags pick the
		// connections.
		names[0] = "CONID"
		if selectingIn(cmd, args) {
			names = names[1:]
		}
	}
	i := argIndex(cmd, args, bad)
	if i < 0 || i >= len(names) {
		return usageErr("%s: a negative number is not an argument of %s (usage: %s)", bad, cmd.CommandPath(), cmd.UseLine())
	}
	rule, ok := argRules[names[i]]
	if !ok {
		rule = "must not be negative"
	}
	return usageErr("%s %s: %s", names[i], bad, rule)
}

// optionalConid stands for "(CONID | SELECTOR)" in argNames.
const optionalConid = "CONID|SELECTOR"

// argNames are the argument names of cmd's usage line: CONID, SECONDS.
func argNames(cmd *cobra.Command) []string {
	var names []string
	use := strings.Replace(cmd.Use, "(CONID | SELECTOR)", optionalConid, 1)
	for _, f := range strings.Fields(use)[1:] {
		f = strings.Trim(f, "[].")
		if f != "" && f == strings.ToUpper(f) && !strings.HasPrefix(f, "-") {
			names = append(names, f)
		}
	}
	return names
}

// selectingIn reports whether the command line picks connections by
// selector flags rather than a CONID.
func selectingIn(cmd *cobra.Command, args []string) bool {
	if selecting(cmd) {
		return true
	}
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if strings.HasPrefix(a, "--") && slices.Contains(selectorFlags, name) {
			return true
		}
	}
	return false
}

// argIndex is the position of bad among cmd's arguments in args (command
// names and flags with their values skipped), or -1.
func argIndex(cmd *cobra.Command, args []string, bad string) int {
	var path []string
	for c := cmd; c.HasParent(); c = c.Parent() {
		path = append([]string{c.Name()}, path...)
	}
	n := 0
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == bad:
			return n
		case len(path) > 0 && (a == path[0] || slices.Contains(aliases(cmd, path[0]), a)):
			path = path[1:]
		case strings.HasPrefix(a, "-") && len(a) > 1:
			if takesValue(cmd, a) {
				i++
			}
		default:
			n++
		}
	}
	return -1
}

// aliases are the aliases of the command called name on cmd's path.
func aliases(cmd *cobra.Command, name string) []string {
	for c := cmd; c != nil; c = c.Parent() {
		if c.Name() == name {
			return c.Aliases
		}
	}
	return nil
}

// takesValue reports whether the flag a (as typed, without =VALUE) takes
// the next argument as its value.
func takesValue(cmd *cobra.Command, a string) bool {
	if strings.Contains(a, "=") {
		return false
	}
	fs := cmd.Flags()
	if name, ok := strings.CutPrefix(a, "--"); ok {
		f := fs.Lookup(name)
		return f != nil && f.NoOptDefVal == ""
	}
	// -abc: only the last shorthand may take a value.
	f := fs.ShorthandLookup(a[len(a)-1:])
	return f != nil && f.NoOptDefVal == "" && len(a) == 2
}

var badValue = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^invalid argument "(.*)" for "(?:-., )?(--\S+)" flag: (.*)$`)
})

// flagValueErr rewrites pflag's "invalid argument" error to say what the
// flag takes, or returns nil for any other error.
func flagValueErr(cmd *cobra.Command, err error) error {
	m := badValue().FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	val, name, why := m[1], m[2], m[3]
	f := cmd.Flags().Lookup(strings.TrimPrefix(name, "--"))
	if f == nil {
		return nil
	}
	want := ""
	switch f.Value.Type() {
	case "uint64", "uint", "uint32":
		want = "a whole number >= 0"
	case "int", "int64", "int32":
		want = "a whole number"
	case "float64":
		want = "a number"
	case "duration":
		want = "a duration such as 500ms, 30s or 10m"
	case "bool":
		want = "true or false"
	default:
		return usageErr("%s %s: %s (see '%s --help')", name, val, why, cmd.CommandPath())
	}
	return usageErr("%s %s: want %s (see '%s --help')", name, val, want, cmd.CommandPath())
}

// subcommand is the Args of a command that only groups others (keepalive,
// wait): an argument is a mistyped subcommand, answered with the ones
// that come close.
func subcommand(cmd *cobra.Command, a []string) error {
	if len(a) == 0 {
		return nil
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // as cobra has it for the root
	}
	msg := fmt.Sprintf("unknown command %q for %q (see '%s --help')", a[0], cmd.CommandPath(), cmd.CommandPath())
	if s := cmd.SuggestionsFor(a[0]); len(s) > 0 {
		msg += "\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	}
	return usageErr("%s", msg)
}
