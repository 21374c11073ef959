package fileserve

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A genuine HTTP client against the server: curl asks for a range, as a
// resuming downloader does, and for the whole file with its headers.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl on this host")
	}
	fw := pattern(5000)
	fx := start(t, map[string][]byte{"fw.bin": fw})
	dir := t.TempDir()
	run := func(args ...string) (headers string, body []byte) {
		t.Helper()
		hf, bf := filepath.Join(dir, "h"), filepath.Join(dir, "b")
		os.Remove(hf)
		os.Remove(bf)
		// --noproxy: a proxy from the environment must not see the URL.
		args = append([]string{"-sS", "--noproxy", "*", "--max-time", "60", "-D", hf, "-o", bf}, args...)
		out, err := exec.Command(curl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		h, _ := os.ReadFile(hf)
		b, _ := os.ReadFile(bf)
		return strings.ReplaceAll(string(h), "\r\n", "\n"), b
	}

	h, b := run("-r", "100-1099", fx.srv.URL("fw.bin"))
	for _, want := range []string{" 206 ", "content-range: bytes 100-1099/5000", "content-length: 1000", "x-md5: " + md5hex(fw)} {
		if !strings.Contains(strings.ToLower(h), want) {
			t.Errorf("curl -r 100-1099: headers lack %q:\n%s", want, h)
		}
	}
	if !bytes.Equal(b, fw[100:1100]) {
		t.Errorf("curl -r 100-1099: got %d bytes, not the range", len(b))
	}

	h, b = run("-r", "-500", fx.srv.URL("fw.bin"))
	if !strings.Contains(strings.ToLower(h), "content-range: bytes 4500-4999/5000") || !bytes.Equal(b, fw[4500:]) {
		t.Errorf("curl -r -500: %d bytes\n%s", len(b), h)
	}

	// HTTP/1.0, as the ESP updaters ask.
	h, b = run("-0", "-H", "x-ESP8266-STA-MAC: 5C:CF:7F:01:02:03", fx.srv.URL("fw.bin"))
	if !strings.Contains(h, " 200 ") || !bytes.Equal(b, fw) {
		t.Errorf("curl -0: %d bytes\n%s", len(b), h)
	}
	if f := fx.lastFetch(t, 3); f.MAC != "5C:CF:7F:01:02:03" || f.Bytes != 5000 {
		t.Errorf("fetch = %+v", f)
	}
}
