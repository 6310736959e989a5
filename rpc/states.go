package rpc

// StateNames lists the names of the states a connection in the table can
// have, in the order of SPEC.md: 1 ok, 2 accepting, 3 connecting, -2 eof,
// -3 error, -4 bad. A conid not in the table is -1 not_found. A list filter
// takes a name or its number.
func StateNames() []string {
	return []string{"ok", "accepting", "connecting", "eof", "error", "bad"}
}

// Reasons lists the reasons a connection closes for, in the order of SPEC.md.
func Reasons() []string {
	return []string{"eof", "reset", "timeout", "lifetime", "local", "peer", "shutdown", "error"}
}

// EventName is the Kamailio event route a closed event of the reason names.
func EventName(reason string) string {
	switch reason {
	case "reset":
		return "tcp:reset"
	case "timeout", "lifetime":
		return "tcp:timeout"
	}
	return "tcp:closed"
}
