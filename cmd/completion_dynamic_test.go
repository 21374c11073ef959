package cmd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/discover"
)

// complete runs a shell's completion request and returns the candidates
// and the directive line.
func complete(t *testing.T, args ...string) ([]string, string) {
	t.Helper()
	streams, out, errOut := TestStreams()
	if code := Execute(context.Background(), append([]string{"__complete"}, args...), streams); code != 0 {
		t.Fatalf("__complete %v: exit %d: %s", args, code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[:len(lines)-1], lines[len(lines)-1]
}

func TestCompletionsDynamic(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	t.Setenv("HOME", dir)
	t.Setenv("LocalAppData", filepath.Join(dir, "cache"))
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("inventory:\n  devices:\n    - {name: kitchen, address: 10.0.0.5}\n    - {name: hall, address: 10.0.0.6}\n  groups:\n    lab: [kitchen, hall]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := discover.SaveCache([]discover.Device{{Instance: "OTS", Service: "_ota._tcp", Host: "ots-fw-main.local", Port: 3232}}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		args      []string
		want      []string
		directive string
	}{
		// FIRMWARE: *.bin files only.
		{[]string{"push", ""}, []string{"bin"}, ":8"},
		// TARGETs: inventory names, groups, the discover cache, all.
		{[]string{"push", "fw.bin", ""}, []string{"kitchen", "hall", "group:lab", "ots-fw-main.local", "all"}, ":4"},
		{[]string{"push", "fw.bin", "kitchen", "g"}, []string{"group:lab"}, ":4"},
		{[]string{"push", "fw.bin", "--group", ""}, []string{"lab"}, ":4"},
		// info has no group: targets.
		{[]string{"info", ""}, []string{"kitchen", "hall", "ots-fw-main.local"}, ":4"},
		{[]string{"espota", "-f", ""}, []string{"bin"}, ":8"},
		{[]string{"espota", "-i", "ots"}, []string{"ots-fw-main.local"}, ":4"},
	} {
		got, dir := complete(t, append([]string{"--config", cfg}, c.args...)...)
		if !slices.Equal(got, c.want) || dir != c.directive {
			t.Errorf("complete %q: %q %s, want %q %s", c.args, got, dir, c.want, c.directive)
		}
	}
}

// TestCompletionsBashSyntax: the shipped bash script parses (bash -n).
func TestCompletionsBashSyntax(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash here")
	}
	out, err := exec.Command(bash, "-n", filepath.Join("..", "completions", "ots-ota.bash")).CombinedOutput()
	if err != nil {
		t.Fatalf("bash -n completions/ots-ota.bash: %v\n%s", err, out)
	}
}
