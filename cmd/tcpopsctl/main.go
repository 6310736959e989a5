// Command tcpopsctl inspects and steers a tcpops daemon: see tcpopsctl --help.
package main

import (
	"os"

	"github.com/tcpops/tcpops/cli"
)

func main() { os.Exit(cli.Main()) }
