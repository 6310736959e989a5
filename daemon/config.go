package daemon

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/tcpops/tcpops/relay"
)

// A configuration file says in YAML what the flags say: each setting is a
// flag's long name. listen is a list whose items are listener URLs, or
// mappings of url and the URL's query options, easier to template (one
// listener may be given alone, as a list of one):
//
//	listen:
//	  - tcp://0.0.0.0:5060?backend=10.0.0.5:5060
//	  - url: wss://0.0.0.0:8443/sip
//	    backend: 10.0.0.5:5060
//	    frame: text
//	lifetime: 10m
//	keepalive: 60,5,5
//
// A flag given on the command line wins over the file.

// fileOnly are flags a file cannot set.
var fileOnly = []string{"config", "check-config", "help"}

// applyFile sets, from the file at path, every flag the command line did
// not set. lines records where each setting stands, for error messages.
func applyFile(fs *pflag.FlagSet, path string, lines map[string]int) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(root.Content) == 0 {
		return nil // empty file
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: want settings, such as 'lifetime: 10m' (see tcpops --help)", path, doc.Line)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		name := k.Value
		f := fs.Lookup(name)
		if f == nil || slices.Contains(fileOnly, name) {
			return fmt.Errorf("%s:%d: unknown setting %q (settings are the long flag names of tcpops --help)", path, k.Line, name)
		}
		if seen[name] {
			return fmt.Errorf("%s:%d: %s given twice", path, k.Line, name)
		}
		seen[name] = true
		lines[name] = k.Line
		if fs.Changed(name) {
			continue // the command line wins
		}
		if name == "listen" {
			if err := applyListeners(fs, path, v); err != nil {
				return err
			}
			continue
		}
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s:%d: %s: want a single value", path, v.Line, name)
		}
		if err := fs.Set(name, v.Value); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", path, v.Line, name, err)
		}
	}
	return nil
}

// applyListeners sets --listen from a list of URLs or url mappings, each
// checked where it stands.
func applyListeners(fs *pflag.FlagSet, path string, v *yaml.Node) error {
	items := v.Content
	switch v.Kind {
	case yaml.SequenceNode:
	case yaml.ScalarNode, yaml.MappingNode: // one listener: a list of one
		items = []*yaml.Node{v}
	default:
		return fmt.Errorf("%s:%d: listen: want a list of listeners", path, v.Line)
	}
	for _, item := range items {
		raw, err := listenerURL(item)
		if err == nil {
			// The syntax here; the backend, which may come from --backend
			// later, when all is parsed.
			_, err = relay.ParseListener(raw, "127.0.0.1:1")
		}
		if err != nil {
			return fmt.Errorf("%s:%d: listen: %v", path, item.Line, err)
		}
		if err := fs.Set("listen", raw); err != nil {
			return fmt.Errorf("%s:%d: listen: %v", path, item.Line, err)
		}
	}
	return nil
}

// listenerURL turns a list item into a listener URL.
func listenerURL(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value, nil
	case yaml.MappingNode:
	default:
		return "", errors.New("want a URL, or url: and options")
	}
	var base string
	q := url.Values{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return "", fmt.Errorf("%s: want a single value", k)
		}
		if k == "url" {
			base = v.Value
		} else {
			q.Set(k, v.Value)
		}
	}
	if base == "" {
		return "", errors.New("url is missing")
	}
	if len(q) == 0 {
		return base, nil
	}
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + q.Encode(), nil
}

var flagInError = regexp.MustCompile(`^--([a-z-]+)`)

// withLine prefixes an error about a flag with where the file set it.
func withLine(err error, path string, lines map[string]int) error {
	m := flagInError.FindStringSubmatch(err.Error())
	if m == nil || lines[m[1]] == 0 {
		return err
	}
	return fmt.Errorf("%s:%d: %w", path, lines[m[1]], err)
}
