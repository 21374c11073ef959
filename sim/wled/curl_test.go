package wled

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestCurl: WLED's documented command-line update, curl -F, with
// skipValidation=1 before the file as the UI's form sends it, and without.
func TestCurl(t *testing.T) {
	v := variants[1]
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.bin", v.image(t, ImageOptions{Version: "16.0.2"}))
	other := write("other.bin", v.image(t, ImageOptions{Version: "16.0.2", Release: "ESP32_Ethernet"}))
	cases := []struct {
		name   string
		args   []string
		code   string
		text   string
		reboot bool
	}{
		{"matching build", []string{"-F", "update=@" + good}, "200", textUpdateOK, true},
		{"skipValidation first", []string{"-F", "skipValidation=1", "-F", "update=@" + other}, "200", textUpdateOK, true},
		{"skipValidation last", []string{"-F", "update=@" + other, "-F", "skipValidation=1"}, "500", "Firmware release name mismatch", false},
		{"other build", []string{"-F", "update=@" + other}, "500", "Enable 'Ignore firmware validation' to proceed anyway.", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			body, code, exit := simtest.Curl(t, append(c.args, "http://"+d.OTAAddr()+"/update")...)
			if exit != 0 || code != c.code || !strings.Contains(body, c.text) {
				t.Fatalf("exit %d, %s %q", exit, code, body)
			}
			if c.reboot {
				rebooted(t, d, 1)
				if got := info(t, d)["ver"]; got != "16.0.2" {
					t.Errorf("ver %v", got)
				}
			}
		})
	}
}
