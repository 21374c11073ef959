package cmd

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ots-ota/ots-ota/fwfile"
	"github.com/ots-ota/ots-ota/image"
)

// TestInspectAllocs: inspecting a 4 MB image allocates at most 1 MiB on the
// heap, the whole command included. The file is mapped, not copied into a
// buffer (issue 16, "inspect at the speed of hashing"). Bytes, not time: a
// loaded CI machine cannot make this flaky.
func TestInspectAllocs(t *testing.T) {
	if !fwfile.Maps {
		t.Skip("files are read, not mapped, on " + runtime.GOOS)
	}
	data, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Size: 4 << 20, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	fw := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(fw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	inspect := func() {
		streams, out, errOut := TestStreams()
		if code := Execute(context.Background(), []string{"inspect", "--json", fw}, streams); code != ExitOK {
			t.Fatalf("inspect exit %d: %s%s", code, out, errOut)
		}
	}
	inspect() // warm up: one-time initialisation is not per inspect
	const runs = 5
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		inspect()
	}
	runtime.ReadMemStats(&after)
	perRun := (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("inspect of a %d-byte image: %d bytes allocated per run", len(data), perRun)
	if perRun > 1<<20 {
		t.Errorf("inspect of a 4 MB image allocates %d bytes per run, want ≤ 1 MiB (%d)", perRun, 1<<20)
	}
}
