//go:build !windows

package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAddThroughSymlink: a symlinked config stays a link; its target gets
// the devices (review 68 #7).
func TestAddThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "dotfiles", "ots-ota.yaml")
	if err := os.MkdirAll(filepath.Dir(real), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, []byte("# mine\ninventory:\n  devices: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(filepath.Join("dotfiles", "ots-ota.yaml"), link); err != nil {
		t.Fatal(err)
	}
	if _, err := Add(link, []Device{{Name: "a", Address: "127.0.0.2"}}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", st, err)
	}
	b, err := os.ReadFile(real)
	if err != nil || !strings.Contains(string(b), "# mine") || !strings.Contains(string(b), "127.0.0.2") {
		t.Errorf("target %q %v", b, err)
	}
}
