package rpc

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// BuildVersion and BuildCommit, when set at build time, win over what Go
// recorded in the binary:
//
//	go build -ldflags "-X github.com/tcpops/tcpops/rpc.BuildVersion=v1.2.0 -X github.com/tcpops/tcpops/rpc.BuildCommit=$(git rev-parse HEAD)" ./cmd/...
var (
	BuildVersion = ""
	BuildCommit  = ""
)

// Build is the version of this binary: BuildVersion, else the main
// module's version as Go recorded it (a tag such as v1.2.0, or a
// pseudo-version of the commit, +dirty when built from modified files),
// else "devel"; the commit and whether the tree was modified from the VCS
// stamp Go adds to builds from a clone (vcs.revision, vcs.modified).
func Build() Version {
	v := Version{Version: BuildVersion, Commit: BuildCommit, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if v.Version == "" {
			v.Version = "devel"
		}
		return v
	}
	if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	if v.Commit == "" {
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				v.Commit = kv.Value
			case "vcs.modified":
				v.Modified = kv.Value == "true"
			}
		}
	}
	return v
}

// String is the version for people: "v1.2.0 (commit 0123456789ab,
// modified, go1.26.8)".
func (v Version) String() string {
	s := v.Version + " ("
	if v.Commit != "" {
		c := v.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += "commit " + c + ", "
		if v.Modified {
			s += "modified, "
		}
	}
	return fmt.Sprintf("%s%s)", s, v.Go)
}
