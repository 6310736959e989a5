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
  tcpopsctl completion bash > /etc/bash_completion.d/tcpopsctl
  tcpopsctl completion zsh > "${fpath[1]}/_tcpopsctl"
  tcpopsctl completion fish > ~/.config/fish/completions/tcpopsctl.fish
  tcpopsctl completion powershell | Out-String | Invoke-Expression`
	long := map[string]string{
		"bash": `Print the bash completion script. It needs the bash-completion package.
Load it in the current shell with source, or install it once as
/etc/bash_completion.d/tcpopsctl (or in ~/.local/share/bash-completion/completions/).`,
		"zsh": `Print the zsh completion script. Completion must be on in zsh
(autoload -U compinit; compinit in ~/.zshrc). Load it in the current shell with
source, or install it once as _tcpopsctl in a directory of $fpath.`,
		"fish": `Print the fish completion script. Load it in the current shell, or install
it once in ~/.config/fish/completions/.`,
		"powershell": `Print the PowerShell completion script. Load it in the current shell, or
add the line that loads it to your PowerShell profile.`,
	}
	examples := map[string]string{
		"bash": `  source <(tcpopsctl completion bash)
  tcpopsctl completion bash > /etc/bash_completion.d/tcpopsctl`,
		"zsh": `  source <(tcpopsctl completion zsh)
  tcpopsctl completion zsh > "${fpath[1]}/_tcpopsctl"`,
		"fish": `  tcpopsctl completion fish | source
  tcpopsctl completion fish > ~/.config/fish/completions/tcpopsctl.fish`,
		"powershell": `  tcpopsctl completion powershell | Out-String | Invoke-Expression
  tcpopsctl completion powershell >> $PROFILE`,
	}
	for _, c := range comp.Commands() {
		if l, ok := long[c.Name()]; ok {
			c.Long = l
		}
		if ex, ok := examples[c.Name()]; ok {
			c.Example = ex
		} else {
			c.Example = fmt.Sprintf("  tcpopsctl completion %s", c.Name())
		}
	}
}
