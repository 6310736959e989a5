// Command gendocs writes the man pages (man/) and shell completion scripts
// (completions/) from the real command trees of tcpopsctl and tcpops, and
// the OpenRPC document of the control socket (docs/openrpc.json) from the
// daemon's method table.
//
//go:generate go run . -root ../..
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpops/tcpops/cli"
	"github.com/tcpops/tcpops/daemon"
	"github.com/tcpops/tcpops/daemon/control"
)

// date is fixed so that regenerating changes nothing unless the commands do.
var date = time.Date(2026, time.November, 26, 0, 0, 0, 0, time.UTC)

func main() {
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	files, err := generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
	for _, dir := range []string{"man", "completions"} {
		os.RemoveAll(filepath.Join(*root, dir))
	}
	for name, b := range files {
		p := filepath.Join(*root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "gendocs:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gendocs:", err)
			os.Exit(1)
		}
	}
}

// ctlCommand is the tcpopsctl tree with its completion command added, as
// Execute would.
func ctlCommand() *cobra.Command {
	root := cli.NewRootCmd(&cli.Options{Stdout: io.Discard, Stderr: io.Discard})
	root.InitDefaultCompletionCmd()
	return root
}

// generate returns every generated file by its path from the repo root.
func generate() (map[string][]byte, error) {
	files := map[string][]byte{}
	ctl := ctlCommand()
	d := daemon.NewCommand()
	d.InitDefaultVersionFlag()
	day := date.Format("2006-01-02")
	for name, page := range map[string]func() ([]byte, error){
		"man/tcpopsctl.1": func() ([]byte, error) { return ctlPage(ctl, day) },
		"man/tcpops.8":    func() ([]byte, error) { return daemonPage(d, day) },
	} {
		b, err := page()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		files[name] = b
	}
	files["docs/openrpc.json"] = control.OpenRPC()
	for name, gen := range map[string]func(io.Writer) error{
		"completions/tcpopsctl.bash": func(w io.Writer) error { return ctl.GenBashCompletionV2(w, true) },
		"completions/tcpopsctl.zsh":  ctl.GenZshCompletion,
		"completions/tcpopsctl.fish": func(w io.Writer) error { return ctl.GenFishCompletion(w, true) },
		"completions/tcpopsctl.ps1":  ctl.GenPowerShellCompletionWithDesc,
	} {
		var b bytes.Buffer
		if err := gen(&b); err != nil {
			return nil, err
		}
		files[name] = b.Bytes()
	}
	return files, nil
}
