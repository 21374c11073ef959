package elegantota

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// curl is simtest.Curl: the real curl binary.
func curl(t *testing.T, args ...string) (body, code string, exit int) {
	t.Helper()
	return simtest.Curl(t, args...)
}

// TestCurlFlow: ElegantOTA documents no curl line; its page (and
// platformio_upload.py) do GET /ota/start?mode=fr&hash=<md5>, then POST
// /ota/upload with the file. As curl:
//
//	curl "http://HOST/ota/start?mode=fr&hash=$(md5sum fw.bin)"
//	curl -F "file=@fw.bin" http://HOST/ota/upload
//
// with --digest -u USER:PASS on an async build with credentials (-u alone,
// Basic, on a sync one).
func TestCurlFlow(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
	fw := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(fw, img, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		v     variant
		creds []string
	}{
		{"sync esp32", variants[0], nil},
		{"sync esp8266", variants[1], nil},
		{"async esp32", variants[2], nil},
		{"async esp8266", variants[3], nil},
		{"sync, Basic", variants[0], []string{"-u", "admin:s3cret"}},
		{"async, Digest", variants[2], []string{"--digest", "-u", "admin:s3cret"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.v.config()
			if c.creds != nil {
				cfg.Username, cfg.Password = "admin", auth.NewSecret("s3cret")
			}
			d := simtest.Start(t, cfg)
			base := "http://" + d.OTAAddr()
			body, code, exit := curl(t, append(c.creds, base+"/ota/start?mode=fr&hash="+md5hex(img))...)
			if exit != 0 || code != "200" || body != "OK" {
				t.Fatalf("start: exit %d, %s %q", exit, code, body)
			}
			body, code, exit = curl(t, append(c.creds, "-F", "file=@"+fw, base+"/ota/upload")...)
			if exit != 0 || code != "200" || body != "OK" {
				t.Fatalf("upload: exit %d, %s %q", exit, code, body)
			}
			if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("without /ota/start", func(t *testing.T) {
		d := simtest.Start(t, variants[0].config())
		body, code, exit := curl(t, "-F", "file=@"+fw, "http://"+d.OTAAddr()+"/ota/upload")
		if exit != 0 || code != "200" || body != "OK" {
			t.Fatalf("upload: exit %d, %s %q", exit, code, body)
		}
		if u := simtest.WaitUploads(t, d, 1).Uploads[0]; u.Outcome != "discarded" {
			t.Errorf("record: %+v", u)
		}
	})
}
