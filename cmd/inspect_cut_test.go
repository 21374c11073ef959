package cmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/image"
)

// TestInspectDigestCut: a file cut inside its appended SHA-256 tells one
// story, the digest cut off, not also that none was appended.
func TestInspectDigestCut(t *testing.T) {
	data, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "p", Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cut.bin")
	if err := os.WriteFile(p, data[:len(data)-8], 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	streams, out, errOut := TestStreams()
	if code := Execute(context.Background(), []string{"inspect", p}, streams); code != ExitFailed {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out.String(), "truncated in the appended SHA-256 digest") {
		t.Errorf("no word of the cut digest:\n%s", out)
	}
	if strings.Contains(out.String(), "not appended") {
		t.Errorf("says the digest was not appended:\n%s", out)
	}

	// An image built without one still says so.
	data, err = image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "p", Version: "1", NoDigest: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	streams, out, errOut = TestStreams()
	if code := Execute(context.Background(), []string{"inspect", p}, streams); code != ExitOK {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	if !strings.Contains(out.String(), "not appended") {
		t.Errorf("an image without a digest:\n%s", out)
	}
}
