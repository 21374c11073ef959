package rawhttp

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// curl runs the real curl binary the way the seed documents it and returns
// the body, the status code and curl's exit error.
func curl(t *testing.T, args ...string) (body string, code string, err error) {
	t.Helper()
	bin, lerr := exec.LookPath("curl")
	if lerr != nil {
		t.Skip("curl not installed")
	}
	args = append([]string{"-sS", "--max-time", "30", "-w", "\n%{http_code}"}, args...)
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	s := out.String()
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return s, "", err
	}
	if err != nil {
		t.Logf("curl %v: %v: %s", args, err, errb.String())
	}
	return s[:i], s[i+1:], err
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCurlSeed(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Password = auth.NewSecret("s3cret")
	d := simtest.Start(t, cfg)
	fw := writeFile(t, "fw.bin", simtest.Image(t, "1.0.1"))
	url := "http://" + d.OTAAddr() + "/update"

	body, code, _ := curl(t, "-X", "POST", "--data-binary", "@"+fw, url)
	if code != "401" || body != "Authentication required" {
		t.Errorf("no auth: %s %q", code, body)
	}
	body, code, _ = curl(t, "-X", "POST", "--data-binary", "@"+fw, "-H", "Authorization: Bearer wrong", url)
	if code != "403" || body != "Invalid credentials" {
		t.Errorf("wrong auth: %s %q", code, body)
	}
	body, code, err := curl(t, "-X", "POST", "--data-binary", "@"+fw, "-H", "Authorization: Bearer s3cret", url)
	if err != nil || code != "200" || body != "OTA update successful, rebooting..." {
		t.Fatalf("upload: %s %q %v", code, body, err)
	}
	if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
}

func TestCurlOTS(t *testing.T) {
	d := simtest.Start(t, simtest.Config(OTS))
	fw := writeFile(t, "fw.bin", simtest.Image(t, "1.0.1"))

	// A Basic header is accepted and not checked.
	body, code, err := curl(t, "-X", "POST", "--data-binary", "@"+fw, "-u", "admin:whatever", "http://"+d.OTAAddr()+"/update")
	if err != nil || code != "200" || body != "Update successful, rebooting..." {
		t.Fatalf("upload on 3232: %s %q %v", code, body, err)
	}
	if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
	body, code, err = curl(t, "http://"+d.WebAddr()+"/api/status")
	if err != nil || code != "200" || !strings.Contains(body, `"firmwareVersion":"1.0.1"`) {
		t.Fatalf("api/status: %s %q %v", code, body, err)
	}

	fw2 := writeFile(t, "fw2.bin", simtest.Image(t, "1.0.2"))
	body, code, err = curl(t, "-X", "POST", "--data-binary", "@"+fw2, "http://"+d.WebAddr()+"/ota/upload")
	if err != nil || code != "200" || body != "Upload successful. Rebooting..." {
		t.Fatalf("web upload: %s %q %v", code, body, err)
	}
	if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.2"); err != nil {
		t.Fatal(err)
	}
	body, code, _ = curl(t, "-X", "POST", "--data-binary", "", "http://"+d.WebAddr()+"/ota/upload")
	if code != "400" || body != "Invalid firmware size" {
		t.Errorf("empty web upload: %s %q", code, body)
	}
	big := writeFile(t, "big.bin", make([]byte, 3*1024*1024+1))
	body, code, _ = curl(t, "-X", "POST", "--data-binary", "@"+big, "-H", "Expect:", "http://"+d.WebAddr()+"/ota/upload")
	if code != "400" || body != "Invalid firmware size" {
		t.Errorf("oversized web upload: %s %q", code, body)
	}
}

// TestCurlSeesMidUploadFailure: curl stops sending when the device answers
// early and reports the device's status and text (with the default
// ErrorCloseDelay; see Timing).
func TestCurlSeesMidUploadFailure(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Timing.ErrorCloseDelay = 300 * time.Millisecond // margin for a loaded CI machine
	d := simtest.Start(t, cfg)
	bad := make([]byte, 1500<<10)
	for i := range bad {
		bad[i] = byte(i*7 + 1)
	}
	fw := writeFile(t, "notesp.bin", bad)
	for i := 0; i < 5; i++ {
		body, code, _ := curl(t, "-X", "POST", "--data-binary", "@"+fw, "-H", "Expect:", "http://"+d.OTAAddr()+"/update")
		if code != "500" || body != "Write failed" {
			t.Fatalf("got %s %q", code, body)
		}
	}
	// With curl's default Expect: 100-continue (bodies over 1 MiB) the
	// device, which never sends 100, makes curl wait its second first.
	body, code, _ := curl(t, "-X", "POST", "--data-binary", "@"+fw, "http://"+d.OTAAddr()+"/update")
	if code != "500" || body != "Write failed" {
		t.Fatalf("with Expect: got %s %q", code, body)
	}
}
