// Command tcpops is the tcpops daemon: see tcpops --help.
package main

import (
	"os"

	"github.com/tcpops/tcpops/daemon"
)

func main() { os.Exit(daemon.Main()) }
