package form

import (
	"os"
	"path/filepath"
	"strings"
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

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCurlDocumented: each family's own curl line, as its docs write it.
//
//   - arduino-esp32 WebUpdater.ino: curl -F "image=@firmware.bin" <host>/update.
//     It sends no Origin, so the library with the CSRF check refuses it
//     ("Update error: Wrong origin received!"); an older build takes it.
//   - esp8266/Arduino WebUpdater.ino: the same line; SecureWebUpdater.ino
//     adds -u admin:admin. Issue 18's working line: -F firmware=@fw.bin.
//   - ESPEasy documents none; its form's field is "firmware".
func TestCurlDocumented(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
	fw := writeFile(t, "firmware.bin", img)
	cases := []struct {
		name    string
		v       variant
		noCheck bool
		creds   bool
		args    []string
		body    string
		install bool
	}{
		{"arduino-esp32 WebUpdater", variants[0], false, false, []string{"-F", "image=@" + fw}, textWrongOrigin, false},
		{"arduino-esp32 WebUpdater with Origin", variants[0], false, false, []string{"-F", "image=@" + fw, "-H", "Origin: http://ADDR"}, textSuccess, true},
		{"arduino-esp32 WebUpdater, build before the CSRF fix", variants[0], true, false, []string{"-F", "image=@" + fw}, textSuccess, true},
		{"esp8266 WebUpdater", variants[1], false, false, []string{"-F", "image=@" + fw}, textSuccess, true},
		{"esp8266 SecureWebUpdater", variants[1], false, true, []string{"-u", "admin:admin", "-F", "image=@" + fw}, textSuccess, true},
		{"esp8266 issue 18", variants[1], false, false, []string{"-F", "firmware=@" + fw}, textSuccess, true},
		{"espeasy esp32", variants[2], false, false, []string{"-F", "firmware=@" + fw}, textSuccess, true},
		{"espeasy esp8266", variants[3], false, false, []string{"-F", "firmware=@" + fw}, textSuccess, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.v.config()
			cfg.NoOriginCheck = c.noCheck
			if c.creds {
				cfg.Username, cfg.Password = "admin", auth.NewSecret("admin")
			}
			d := simtest.Start(t, cfg)
			args := append([]string{}, c.args...)
			for i, a := range args {
				args[i] = strings.ReplaceAll(a, "ADDR", d.OTAAddr())
			}
			body, code, exit := curl(t, append(args, "http://"+d.OTAAddr()+"/update")...)
			if exit != 0 || code != "200" || body != c.body {
				t.Fatalf("got exit %d, %s %q; want 200 %q", exit, code, body, c.body)
			}
			if c.install {
				if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	t.Run("credentials missing", func(t *testing.T) {
		cfg := variants[1].config()
		cfg.Username, cfg.Password = "admin", auth.NewSecret("admin")
		d := simtest.Start(t, cfg)
		if _, code, _ := curl(t, "-F", "image=@"+fw, "http://"+d.OTAAddr()+"/update"); code != "401" {
			t.Errorf("got %s, want 401", code)
		}
	})
}

// TestCurlRawBody: curl --data-binary, a raw body, gets no answer at all
// (curl's exit 52, "Empty reply from server"): issue 18's symptom.
func TestCurlRawBody(t *testing.T) {
	cfg := variants[1].config()
	cfg.Timing.RecvTimeout = 300 * time.Millisecond
	d := simtest.Start(t, cfg)
	fw := writeFile(t, "fw.bin", simtest.Image(t, "1.0.1"))
	_, code, exit := curl(t, "--data-binary", "@"+fw, "-H", "Content-Type: application/octet-stream", "http://"+d.OTAAddr()+"/update")
	if exit != 52 || code != "000" {
		t.Errorf("got exit %d, code %s; want 52 (empty reply)", exit, code)
	}
}

// TestCurlDigest: ESPEasy's pages ask for the admin password by Digest;
// the sync server checks the answer against its own last challenge (and,
// on arduino-esp32, the request's path).
func TestCurlDigest(t *testing.T) {
	for _, v := range variants[2:] {
		t.Run(v.name, func(t *testing.T) {
			cfg := v.config()
			cfg.Password = auth.NewSecret("s3cret")
			d := simtest.Start(t, cfg)
			body, code, exit := curl(t, "--digest", "-u", "admin:s3cret", "http://"+d.OTAAddr()+"/")
			if exit != 0 || code != "200" || !strings.Contains(body, "ESP Easy Mega: ots-sim") {
				t.Errorf("with the password: exit %d, %s %q", exit, code, body)
			}
			if _, code, _ := curl(t, "--digest", "-u", "admin:wrong", "http://"+d.OTAAddr()+"/"); code != "401" {
				t.Errorf("wrong password: %s", code)
			}
		})
	}
}
