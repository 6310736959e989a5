package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// TestGeneratedFilesFresh fails when man/, completions/ or
// docs/openrpc.json differ from what the command trees and the method
// table generate now: run go generate ./... and commit.
func TestGeneratedFilesFresh(t *testing.T) {
	want, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("..", "..")
	var have []string
	for _, dir := range []string{"man", "completions"} {
		ents, _ := os.ReadDir(filepath.Join(root, dir))
		for _, e := range ents {
			have = append(have, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(have)
	for _, name := range have {
		if _, ok := want[name]; !ok {
			t.Errorf("%s is committed but no longer generated (run go generate ./...)", name)
		}
	}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Errorf("%s missing: run go generate ./... and commit", name)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s is stale: run go generate ./... and commit", name)
		}
	}
	for _, page := range []string{"man/tcpopsctl.1", "man/tcpops.8", "docs/openrpc.json"} {
		if _, ok := want[page]; !ok {
			t.Errorf("no %s generated", page)
		}
	}
	if !bytes.Contains(want["man/tcpops.8"], []byte("SIGTERM")) || !bytes.Contains(want["man/tcpops.8"], []byte(`max\-conns\-per\-ip`)) {
		t.Error("tcpops(8) lacks the signals or the flags")
	}
}
