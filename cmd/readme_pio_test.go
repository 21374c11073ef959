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
	web, err := os.ReadFile(filepath.Join("testdata", "script", "platformio_web.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	// The web uploaders' lines (ElegantOTA's drop-in and the form
	// protocol) have their own section and script.
	before, after, ok := strings.Cut(string(readme), "### ElegantOTA, HTTPUpdateServer and ESPEasy from PlatformIO")
	if !ok {
		t.Fatal("README has no section for ElegantOTA, HTTPUpdateServer and ESPEasy under PlatformIO")
	}
	after, _, _ = strings.Cut(after, "\n## ")
	re := regexp.MustCompile(`(?m)^upload_command = (.+)$`)
	for _, c := range []struct {
		text, script, name string
		min                int
	}{{before, string(script), "platformio.txtar", 4}, {after, string(web), "platformio_web.txtar", 3}} {
		lines := re.FindAllStringSubmatch(c.text, -1)
		if len(lines) < c.min {
			t.Fatalf("README has %d upload_command lines where %s runs them, want at least %d", len(lines), c.name, c.min)
		}
		for _, l := range lines {
			if !strings.Contains(c.script, "#   upload_command = "+l[1]+"\n") {
				t.Errorf("README's upload_command = %s is not run by %s", l[1], c.name)
			}
		}
	}
	// The credentials come from the environment, never platformio.ini.
	for _, v := range []string{"OTS_OTA_USER=admin OTS_OTA_PASSWORD=", "upload_port = http://192.168.1.123/update"} {
		if !strings.Contains(after, v) {
			t.Errorf("README's ElegantOTA section lacks %q", v)
		}
	}
	for _, v := range []string{"env OTS_OTA_USER=admin", "env OTS_OTA_PASSWORD="} {
		if !strings.Contains(string(web), v) {
			t.Errorf("platformio_web.txtar does not pass the credentials as the README says (%q)", v)
		}
	}
	if strings.Contains(after, "custom_password") || strings.Contains(after, "--password") {
		t.Error("README's ElegantOTA section puts a password on the command line or in platformio.ini")
	}
}
