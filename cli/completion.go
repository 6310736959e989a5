package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// addCompletionCmd adds cobra's completion command now rather than when
// the command runs, with help that says where each script goes.
func addCompletionCmd(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	var comp *cobra.Command
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			comp = c
		}
	}
	if comp == nil {
		return
	}
	comp.Short = "Print the shell completion script for bash, zsh, fish or powershell"
	comp.Long = `Print the script that makes a shell complete tcpopsctl's commands, flags and
their values; CONID arguments complete from the running daemon (half a second
at most), each described by protocol, direction, remote address and state.

Load it for the current shell, or install it once (the packaged scripts are
in completions/ of the source tree). bash needs the bash-completion package.`
	comp.Example = `  source <(tcpopsctl completion bash)          # this bash session
  tcpopsctl completion bash > /usr/share/bash-completion/completions/tcpopsctl
  tcpopsctl completion zsh > "${fpath[1]}/_tcpopsctl"
  tcpopsctl completion fish > ~/.config/fish/completions/tcpopsctl.fish
  tcpopsctl completion powershell | Out-String | Invoke-Expression`
	examples := map[string]string{
		"bash": `  source <(tcpopsctl completion bash)
  tcpopsctl completion bash > /usr/share/bash-completion/completions/tcpopsctl`,
		"zsh": `  source <(tcpopsctl completion zsh)
  tcpopsctl completion zsh > "${fpath[1]}/_tcpopsctl"`,
		"fish": `  tcpopsctl completion fish | source
  tcpopsctl completion fish > ~/.config/fish/completions/tcpopsctl.fish`,
		"powershell": `  tcpopsctl completion powershell | Out-String | Invoke-Expression
  tcpopsctl completion powershell >> $PROFILE`,
	}
	for _, c := range comp.Commands() {
		if ex, ok := examples[c.Name()]; ok {
			c.Example = ex
		} else {
			c.Example = fmt.Sprintf("  tcpopsctl completion %s", c.Name())
		}
	}
}
