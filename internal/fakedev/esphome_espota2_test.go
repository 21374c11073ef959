package fakedev

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestESPHomeGenuineEspota2 pushes to the fake with ESPHome's own client,
// espota2.py, from the directory in OTS_OTA_ESPOTA2 (esphome/espota2.py as
// fetched from esphome/esphome, plus stand-ins for the esphome.core and
// esphome.helpers names it imports; none of it is in this repository).
func TestESPHomeGenuineEspota2(t *testing.T) {
	dir := os.Getenv("OTS_OTA_ESPOTA2")
	if dir == "" {
		t.Skip("set OTS_OTA_ESPOTA2 to a directory with esphome/espota2.py and its stand-ins")
	}
	const driver = `
import logging, sys
from esphome import espota2
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
r = espota2.run_ota(sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4])
sys.exit(r[0] if isinstance(r, tuple) else r)  # 2026: (code, address)
`
	img := e9Image(200000)
	file := filepath.Join(t.TempDir(), "firmware.bin")
	if err := os.WriteFile(file, img, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  ESPHomeConfig
		pass string
		ok   bool
	}{
		{"no password", ESPHomeConfig{}, "", true},
		{"password", ESPHomeConfig{Password: "pw", Auth: "sha256-md5"}, "pw", true},
		{"wrong password", ESPHomeConfig{Password: "pw", Auth: "sha256-md5"}, "px", false},
		{"esp8266 gzip", ESPHomeConfig{ESP8266: true}, "", true},
		{"v1", ESPHomeConfig{Protocol: 1, NoExtended: true}, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := startESPHome(t, c.cfg)
			host, port, _ := strings.Cut(d.Addr(), ":")
			cmd := exec.Command("python3", "-c", driver, host, port, c.pass, file)
			cmd.Env = append(os.Environ(), "PYTHONPATH="+dir)
			out, err := cmd.CombinedOutput()
			if (err == nil) != c.ok {
				t.Fatalf("espota2 ok=%v, want %v:\n%s", err == nil, c.ok, out)
			}
			n, got := d.Installed()
			if c.ok != (n == 1) || c.ok && string(got) != string(img) {
				t.Fatalf("installed %d (%d bytes)", n, len(got))
			}
			if !c.ok {
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				if txt := d.TXT(); txt != nil && txt["project_version"] == "2.0.0" {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Fatalf("TXT after the update: %v", d.TXT())
		})
	}
}
