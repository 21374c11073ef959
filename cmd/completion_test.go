package cmd

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite completions/ from the command tree")

// TestCompletionsCurrent keeps the shipped completions/ in step with the
// command tree; `go test ./cmd -run Completions -update` regenerates them.
func TestCompletionsCurrent(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		t.Run(sh, func(t *testing.T) {
			streams, out, errOut := TestStreams()
			if code := Execute(context.Background(), []string{"completion", sh}, streams); code != 0 {
				t.Fatalf("completion %s: exit %d: %s", sh, code, errOut)
			}
			path := filepath.Join("..", "completions", "ots-ota."+sh)
			if *update {
				if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run: go test ./cmd -run Completions -update)", err)
			}
			if string(want) != out.String() {
				t.Errorf("%s is stale: run go test ./cmd -run Completions -update", path)
			}
		})
	}
}
