package rpc

// BuildVersion and BuildCommit are set at build time with -ldflags -X, for
// both binaries; the daemon's core.version falls back to the VCS revision
// Go records when BuildCommit is empty.
var (
	BuildVersion = "0.1.0-dev"
	BuildCommit  = ""
)
