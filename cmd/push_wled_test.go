package cmd

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestPushProtocolWLED: --protocol wled reaches WLED's client through
// the command line. The test image is no WLED build (it carries no WLED
// release metadata): without --force it is refused before any byte of it
// is sent (the device sees only GET /json/info, the pre-flight read and
// the release check); with --force (the pre-flight read only) it goes
// with skipValidation=1 first in the form, and push warns of it.
func TestPushProtocolWLED(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		line := r.Method + " " + r.URL.Path
		if r.Method == "POST" {
			if mr, err := r.MultipartReader(); err == nil {
				if p, err := mr.NextPart(); err == nil {
					v, _ := io.ReadAll(p)
					line += fmt.Sprintf(" %s=%s", p.FormName(), v)
					if p, err = mr.NextPart(); err == nil {
						n, _ := io.Copy(io.Discard, p)
						line += fmt.Sprintf(" %s:%d", p.FormName(), n)
					}
				}
			}
		}
		mu.Lock()
		seen = append(seen, line)
		mu.Unlock()
		switch line[:4] {
		case "GET ":
			io.WriteString(w, `{"ver":"0.15.5","vid":2508290,"release":"ESP32-S3","arch":"ESP32-S3","uptime":100,"brand":"WLED"}`)
		default:
			io.WriteString(w, "<html><body><h2>Update successful!</h2>Rebooting now...</body></html>")
		}
	}))
	defer srv.Close()
	target := srv.Listener.Addr().String()

	code, out, errOut := runPushCmd(t, "", append(append([]string{}, pushFast...), "--no-verify", "--protocol", "wled", fw, target)...)
	if code != ExitFailed || !strings.Contains(out+errOut, "carries no WLED release metadata") || !strings.Contains(out+errOut, "--force sends it with skipValidation=1") {
		t.Errorf("without --force: exit %d\n%s\n%s", code, out, errOut)
	}
	mu.Lock()
	// The pre-flight read and the release check each read /json/info;
	// nothing else is asked.
	if len(seen) == 0 || strings.Trim(strings.ReplaceAll(fmt.Sprint(seen), "GET /json/info", ""), "[] ") != "" {
		t.Errorf("without --force the device saw %q", seen)
	}
	seen = nil
	mu.Unlock()

	code, out, errOut = runPushCmd(t, "", append(append([]string{}, pushFast...), "--no-verify", "--force", "--protocol", "wled", fw, target)...)
	if code != 0 || !strings.Contains(out+errOut, "warning: --force sends skipValidation=1") {
		t.Errorf("--force: exit %d\n%s\n%s", code, out, errOut)
	}
	mu.Lock()
	defer mu.Unlock()
	if last := seen[len(seen)-1]; len(seen) != 2 || seen[0] != "GET /json/info" || !strings.HasPrefix(last, "POST /update skipValidation=1 update:300000") {
		t.Errorf("with --force the device saw %q", seen)
	}
}
