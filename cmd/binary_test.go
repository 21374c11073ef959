package cmd

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// The real ots-ota binary, built once per test run with `go build` into a
// temporary folder, for tests that need a process of its own (signals,
// resource limits).
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// otsBinary builds ots-ota (once) and returns its path.
func otsBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "ots-ota-bin-")
		if binErr != nil {
			return
		}
		name := "ots-ota"
		if runtime.GOOS == "windows" {
			name += ".exe"
		}
		binPath = filepath.Join(binDir, name)
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "github.com/ots-ota/ots-ota")...).CombinedOutput()
		if err != nil {
			binErr = &buildError{err, string(out)}
		}
	})
	if binErr != nil {
		t.Fatalf("go build: %v", binErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// cleanupM removes the built binary after the tests (testscript.Main exits
// the process, so a deferred call in TestMain would never run).
type cleanupM struct{ m *testing.M }

func (c cleanupM) Run() int {
	code := c.m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	return code
}
