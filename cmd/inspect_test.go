package cmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/image"
)

// TestInspectColour: colour only on a terminal, and never with NO_COLOR,
// --no-color or --json.
func TestInspectColour(t *testing.T) {
	data, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "p", Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	fw := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(fw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		tty     bool
		noColor bool
		args    []string
		want    bool
	}{
		{"terminal", true, false, nil, true},
		{"pipe", false, false, nil, false},
		{"NO_COLOR", true, true, nil, false},
		{"--no-color", true, false, []string{"--no-color"}, false},
		{"--json", true, false, []string{"--json"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			streams, out, _ := TestStreams()
			streams.OutTTY, streams.NoColorEnv = c.tty, c.noColor
			t.Setenv("XDG_CONFIG_HOME", t.TempDir())
			args := append([]string{"inspect", fw}, c.args...)
			if code := Execute(context.Background(), args, streams); code != ExitOK {
				t.Fatalf("exit %d", code)
			}
			if got := strings.Contains(out.String(), "\x1b["); got != c.want {
				t.Errorf("colour %v, want %v:\n%s", got, c.want, out)
			}
		})
	}
}

// TestExitCodes maps errors to exit codes in one place.
func TestExitCodes(t *testing.T) {
	cases := []struct {
		args []string
		want int
	}{
		{[]string{"version"}, ExitOK},
		{[]string{"nosuch"}, ExitUsage},
		{[]string{"inspect", "--bogus", "x"}, ExitUsage},
		{[]string{"inspect"}, ExitUsage},
		{[]string{"inspect", "--chip", "esp99", "x"}, ExitUsage},
		{[]string{"inspect", filepath.Join(t.TempDir(), "missing.bin")}, ExitFailed},
		{[]string{"sim", "--devices", "0"}, ExitUsage},
	}
	for _, c := range cases {
		streams, _, errOut := TestStreams()
		t.Setenv("XDG_CONFIG_HOME", t.TempDir())
		if got := Execute(context.Background(), c.args, streams); got != c.want {
			t.Errorf("%v: exit %d, want %d (%s)", c.args, got, c.want, errOut)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := exitCode(ctx.Err()); got != ExitCancelled {
		t.Errorf("cancelled: %d", got)
	}
}
