package tasmota

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestCurl: the command-line upgrade as Tasmota's users run it with curl:
// GET /up with the Referer, then -F u2=@fw.bin to /u2?fsz=N with it; and
// the same without the Referer, which gets nothing (curl's exit 52, "Empty
// reply from server"). /cm with the Referer answers Status.
func TestCurl(t *testing.T) {
	for _, v := range variants[:2] {
		t.Run(v.name, func(t *testing.T) {
			img := v.image(t, "tasmota", "15.5.0", 0)
			fw := filepath.Join(t.TempDir(), "fw.bin")
			if err := os.WriteFile(fw, img, 0o644); err != nil {
				t.Fatal(err)
			}
			d := simtest.Start(t, v.config())
			base := "http://" + d.OTAAddr()
			ref := "Referer: " + referer(d)
			if _, code, exit := simtest.Curl(t, "-H", ref, base+"/cm?cmnd=Status%202"); exit != 0 || code != "200" {
				t.Fatalf("Status: exit %d %s", exit, code)
			}
			if _, code, exit := simtest.Curl(t, base+"/cm?cmnd=Status%202"); exit != 52 || code != "000" {
				t.Errorf("Status without Referer: exit %d %s, want 52", exit, code)
			}
			if _, code, exit := simtest.Curl(t, "-H", ref, base+"/up"); exit != 0 || code != "200" {
				t.Fatalf("/up: exit %d %s", exit, code)
			}
			body, code, exit := simtest.Curl(t, "-H", ref, "-F", "u2=@"+fw, base+"/u2?fsz="+strconv.Itoa(len(img)))
			if exit != 0 || code != "200" || !strings.Contains(body, "Successful") {
				t.Fatalf("/u2: exit %d %s %q", exit, code, body)
			}
			rebooted(t, d, 1)
			if got := version(t, d); got != "15.5.0(tasmota)" {
				t.Errorf("Version %q", got)
			}
		})
	}
}
