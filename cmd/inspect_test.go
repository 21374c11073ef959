package cmd

import (
	"context"
	"encoding/json"
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
		{[]string{"inspect", "--partitions", filepath.Join(t.TempDir(), "missing.csv"), "x"}, ExitUsage},
		{[]string{"sim", "--devices", "0"}, ExitUsage},
		{[]string{"sim", "image"}, ExitUsage},
		{[]string{"help", "nothing"}, ExitUsage},
		{[]string{"completion", "tcsh"}, ExitUsage},
		{[]string{"sim", "nosuch"}, ExitUsage},
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
	// An interrupted command exits 130 even when its error wraps the cancellation.
	streams, _, errOut := TestStreams()
	if got := Execute(ctx, []string{"inspect", "x"}, streams); got != ExitCancelled || errOut.String() != "ots-ota: error: interrupted\n" {
		t.Errorf("inspect with a cancelled context: exit %d, %q", got, errOut)
	}
}

// TestInspectJSONFields: every object carries every documented field, for
// every kind of outcome, and the README documents them all.
func TestInspectJSONFields(t *testing.T) {
	dir := t.TempDir()
	app1, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "p", Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"app.bin":   app1,
		"cut.bin":   app1[:100],
		"text.bin":  []byte("hello"),
		"empty.bin": nil,
		"fw.elf":    append([]byte{0x7F, 'E', 'L', 'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x5E, 0}, make([]byte, 64)...),
	}
	args := []string{"inspect", "--json", "--max-size", "2M"}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	args = append(args, filepath.Join(dir, "missing.bin"), dir)
	streams, out, errOut := TestStreams()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	code := Execute(context.Background(), args, streams)
	if code != ExitFailed {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	requireJSONRun(t, out.Bytes(), code)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// A file line per file, then the error line and the summary.
	if len(lines) != len(files)+4 {
		t.Fatalf("%d lines for %d files", len(lines), len(files)+2)
	}
	for _, line := range lines[:len(files)+2] {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		fields := append([]string{"type", "schema"}, inspectJSONFields()...)
		for _, f := range fields {
			if _, ok := m[f]; !ok {
				t.Errorf("%s: no %q field", m["file"], f)
			}
		}
		if len(m) != len(fields) {
			t.Errorf("%s: %d fields, %d documented", m["file"], len(m), len(fields))
		}
		var kind string
		_ = json.Unmarshal(m["kind"], &kind)
		if strings.ToLower(kind) != kind || strings.ContainsAny(kind, "- ") {
			t.Errorf("kind %q is not snake_case", kind)
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range inspectJSONFields() {
		if !strings.Contains(string(readme), "`"+f+"`") {
			t.Errorf("README does not document inspect's %q field", f)
		}
	}
}

// TestColorEnv: no-color.org (a non-empty NO_COLOR) and TERM=dumb.
func TestColorEnv(t *testing.T) {
	cases := []struct {
		env    map[string]string
		forbid bool
	}{
		{map[string]string{}, false},
		{map[string]string{"NO_COLOR": ""}, false},
		{map[string]string{"NO_COLOR": "1"}, true},
		{map[string]string{"TERM": "dumb"}, true},
		{map[string]string{"TERM": "xterm-256color"}, false},
	}
	for _, c := range cases {
		if got := envForbidsColor(func(k string) string { return c.env[k] }); got != c.forbid {
			t.Errorf("%v: forbids colour %v, want %v", c.env, got, c.forbid)
		}
		if got, want := dumbTerminal(func(k string) string { return c.env[k] }), c.env["TERM"] == "dumb"; got != want {
			t.Errorf("%v: dumb terminal %v, want %v", c.env, got, want)
		}
	}
}

// inspectJSONFields are the documented fields of inspectResult, in order.
func inspectJSONFields() []string {
	return []string{"file", "ok", "kind", "chip", "project", "version", "idf_ver", "date", "time",
		"secure_version", "elf_sha256", "size", "image_len", "segments", "entry", "checksum_ok", "sha256", "sha256_ok",
		"layout", "signature", "signature_blocks", "slot_size", "slot_percent", "app_offset", "errors", "warnings"}
}

// TestKindLabels: every kind reads as a phrase in human output, in one style
// (no raw JSON names such as "gzip" or "partition_table").
func TestKindLabels(t *testing.T) {
	kinds := []image.Kind{image.KindApp, image.KindBootloader, image.KindPartitionTable, image.KindMerged,
		image.KindELF, image.KindESP8266, image.KindGzip, image.KindZip, image.KindIntelHex, image.KindUF2,
		image.KindEncrypted, image.KindLittleFS, image.KindEmpty, image.KindUnknown, "unreadable"}
	seen := map[string]bool{}
	for _, k := range kinds {
		l := kindLabel(string(k))
		if !strings.Contains(l, " ") || strings.Contains(l, "_") || seen[l] {
			t.Errorf("kind %s: label %q is not a distinct phrase", k, l)
		}
		seen[l] = true
	}
}
