package cmd

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmePlatformIOLines: every upload_command the README gives is one
// that platformio.txtar runs (as PlatformIO substitutes it).
func TestReadmePlatformIOLines(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join("testdata", "script", "platformio.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	lines := regexp.MustCompile(`(?m)^upload_command = (.+)$`).FindAllStringSubmatch(string(readme), -1)
	if len(lines) < 4 {
		t.Fatalf("README has %d upload_command lines, want the four of its PlatformIO section", len(lines))
	}
	for _, l := range lines {
		if !strings.Contains(string(script), "#   upload_command = "+l[1]+"\n") {
			t.Errorf("README's upload_command = %s is not run by platformio.txtar", l[1])
		}
	}
}
