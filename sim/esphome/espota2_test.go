package esphome

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// espota2Driver calls the genuine client's run_ota(host, port, password,
// file); the directory in OTS_OTA_ESPOTA2 holds esphome/espota2.py (as
// fetched from esphome/esphome) and the smallest stand-ins for the
// esphome.core and esphome.helpers names it imports. Nothing of it is in
// this repository.
const espota2Driver = `
import logging, sys
from esphome import espota2
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
r = espota2.run_ota(sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4])
sys.exit(r[0] if isinstance(r, tuple) else r)  # 2026: (code, address)
`

// runEspota2 runs the genuine client; it skips without OTS_OTA_ESPOTA2.
func runEspota2(t *testing.T, addr, password string, img []byte) (string, bool, bool) {
	t.Helper()
	dir := os.Getenv("OTS_OTA_ESPOTA2")
	if dir == "" {
		t.Skip("set OTS_OTA_ESPOTA2 to a directory with esphome/espota2.py and its stand-ins")
	}
	src, err := os.ReadFile(filepath.Join(dir, "esphome", "espota2.py"))
	if err != nil {
		t.Fatal(err)
	}
	sha := bytes.Contains(src, []byte("SHA256"))
	file := filepath.Join(t.TempDir(), "firmware.bin")
	if err := os.WriteFile(file, img, 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		host, port = addr[:i], addr[i+1:]
	}
	cmd := exec.Command("python3", "-c", espota2Driver, host, port, password, file)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil, sha
}

// TestGenuineEspota2 pushes with ESPHome's own client: no password, a
// password, and an ESP8266 that takes gzip.
func TestGenuineEspota2(t *testing.T) {
	if os.Getenv("OTS_OTA_ESPOTA2") == "" {
		t.Skip("set OTS_OTA_ESPOTA2 to a directory with esphome/espota2.py and its stand-ins")
	}
	for _, c := range []struct {
		name     string
		p        core.Personality
		password string
	}{
		{"esp32", ESP32, ""},
		{"esp32 password", ESP32, "s3cret"},
		{"esp8266 gzip", ESP8266, ""},
		{"esp8266 gzip password", ESP8266, "s3cret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			chip := "esp32s3"
			if c.p == ESP8266 {
				chip = "esp8266"
			}
			img := simtest.ImageOf(t, chip, "3.1.0", 300000)
			// A client without SHA-256 (2024) gets a node of its time.
			o := Options{ProjectName: "acme.node", Auth: AuthSHA256MD5}
			d := startNode(t, c.p, c.password, o)
			out, ok, _ := runEspota2(t, d.OTAAddr(), c.password, img)
			if !ok {
				t.Fatalf("espota2 failed:\n%s", out)
			}
			st, err := d.WaitState(simtest.Ctx(t, 20*time.Second), func(s core.State) bool { return s.Up && s.BootCount == 2 })
			if err != nil {
				t.Fatalf("no reboot: %v\n%s", err, out)
			}
			up := st.Uploads[len(st.Uploads)-1]
			if up.Outcome != "ok" {
				t.Fatalf("upload %+v", up)
			}
			if gz := up.Size < int64(len(img)); gz != (c.p == ESP8266) {
				t.Errorf("sent %d of a %d-byte image: compressed %v", up.Size, len(img), gz)
			}
			if v := txtOf(d)["project_version"]; v != "3.1.0" {
				t.Errorf("project_version %q after the update", v)
			}
			t.Logf("espota2: %d bytes sent for %s: %s", up.Size, strconv.Itoa(len(img)), lastLine(out))
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		d := startNode(t, ESP32, "right", Options{Auth: AuthSHA256MD5})
		out, ok, _ := runEspota2(t, d.OTAAddr(), "wrong", simtest.ImageOf(t, "esp32s3", "3.1.0", 0))
		if ok || !strings.Contains(out, "Authentication invalid") && !strings.Contains(out, "Error auth result") {
			t.Fatalf("ok=%v:\n%s", ok, out)
		}
	})
	t.Run("strict sha256 node", func(t *testing.T) {
		d := startNode(t, ESP32, "pw", Options{})
		out, ok, sha := runEspota2(t, d.OTAAddr(), "pw", simtest.ImageOf(t, "esp32s3", "3.1.0", 0))
		if ok != sha {
			t.Fatalf("a client with SHA-256 %v: ok=%v:\n%s", sha, ok, out)
		}
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
