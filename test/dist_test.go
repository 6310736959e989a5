package test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tcpops/tcpops/cli"
)

// TestAnsibleExample checks that every tcpopsctl command in the example
// playbook is a valid command line: run without a daemon, each says the
// daemon is unreachable (exit 3), not that it was misused (exit 2).
func TestAnsibleExample(t *testing.T) {
	b, err := os.ReadFile("../dist/ansible/tcpops-ops.yml")
	if err != nil {
		t.Fatal(err)
	}
	var plays []struct {
		Vars  map[string]string `yaml:"vars"`
		Tasks []struct {
			Name    string `yaml:"name"`
			Command string `yaml:"ansible.builtin.command"`
		} `yaml:"tasks"`
	}
	if err := yaml.Unmarshal(b, &plays); err != nil {
		t.Fatalf("playbook is not YAML: %v", err)
	}
	vars := map[string]string{"item.conid": "42"}
	for k, v := range plays[0].Vars {
		vars[k] = v
	}
	none := filepath.Join(t.TempDir(), "none")
	n := 0
	for _, task := range plays[0].Tasks {
		line := task.Command
		for k, v := range vars {
			line = strings.ReplaceAll(line, "{{ "+k+" }}", v)
		}
		// Waits end at once here: no daemon is coming.
		line = strings.ReplaceAll(line, "--timeout 30s", "--timeout 100ms")
		if strings.Contains(line, "{{") {
			t.Fatalf("task %q: unknown variable in %q", task.Name, line)
		}
		args := strings.Fields(line)
		if args[0] != vars["tcpopsctl"] {
			t.Fatalf("task %q runs %q", task.Name, args[0])
		}
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), append([]string{"-s", none}, args[1:]...), &out, &errb)
		if code != cli.ExitUnreachable && !(strings.Contains(line, "wait ready") && code == cli.ExitNegative) {
			t.Errorf("task %q: %q exits %d: %s", task.Name, line, code, errb.String())
		}
		n++
	}
	if n < 5 {
		t.Fatalf("only %d commands found", n)
	}
}
