package rawhttp

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestRebootListenersGoAwayAndComeBack: after the 200 the web server keeps
// serving for the reboot delay, then connections time out (a chip off the
// network neither refuses nor accepts) for at least the boot time, then the
// device answers with the new version.
func TestRebootListenersGoAwayAndComeBack(t *testing.T) {
	var ev simtest.EventLog
	cfg := simtest.Config(OTS)
	cfg.Timing.RebootDelayMin = 500 * time.Millisecond
	cfg.Timing.RebootDelayMax = 600 * time.Millisecond
	cfg.Timing.BootTime = 400 * time.Millisecond
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	web := d.WebAddr()

	status, body, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", simtest.Image(t, "1.0.1"), nil)
	if err != nil || status != 200 {
		t.Fatalf("upload: %d %q %v", status, body, err)
	}
	// The web server (a separate httpd task) still answers during the delay.
	if code, js, err := simtest.GetGo(t, "http://"+web+"/api/status"); err != nil || code != 200 || !strings.Contains(js, `"firmwareVersion":"1.0.0"`) {
		t.Fatalf("right after the 200: %d %q %v", code, js, err)
	}
	// Then the device goes away: connections time out.
	deadline := time.Now().Add(5 * time.Second)
	var downAt time.Time
	for time.Now().Before(deadline) {
		got := simtest.ProbeTCP(web, 200*time.Millisecond)
		if got != "accepted" {
			if got != simtest.SilentOrRefused {
				t.Errorf("dial while rebooting: %s, want %s", got, simtest.SilentOrRefused)
			}
			downAt = time.Now()
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if downAt.IsZero() {
		t.Fatal("the device never went away")
	}
	// And comes back with the new version.
	var upAt time.Time
	for time.Now().Before(deadline) {
		code, js, err := simtest.GetGo(t, "http://"+web+"/api/status")
		if err == nil {
			upAt = time.Now()
			var s apiStatus
			if code != 200 || json.Unmarshal([]byte(js), &s) != nil || s.FirmwareVersion != "1.0.1" {
				t.Fatalf("after reboot: %d %q", code, js)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if upAt.IsZero() {
		t.Fatal("the device never came back")
	}
	// Device-side timestamps: the reset (listeners closed) to ready again
	// spans the boot time (less the moment between closing and stamping the event).
	ev.WaitCount(t, core.EventReady, 2)
	reboot, _ := ev.Find(core.EventReboot)
	var ready core.Event
	for _, e := range ev.Events() {
		if e.Event == core.EventReady {
			ready = e
		}
	}
	if away := ready.Time.Sub(reboot.Time); away < cfg.Timing.BootTime*9/10 {
		t.Errorf("away for %v, less than the boot time %v", away, cfg.Timing.BootTime)
	}
	if e, ok := ev.Find(core.EventReboot); !ok || e.Reason != "update" {
		t.Errorf("reboot event: %+v", e)
	}
	if ev.Count(core.EventReady) != 2 {
		t.Errorf("ready events: %v", ev.Kinds())
	}
}

// TestOneRequestAtATime: a second request waits while an upload runs (the
// httpd is one task) and is served once the upload has ended.
func TestOneRequestAtATime(t *testing.T) {
	var ev simtest.EventLog
	cfg := simtest.Config(Seed)
	cfg.Extensions = true
	cfg.Timing.WriteRate = 400 << 10
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	good := simtest.Image(t, "1.0.1")
	bad := simtest.Corrupt(good, len(good)/2) // fails at esp_ota_end: no reboot

	type result struct {
		status int
		body   string
		err    error
		at     time.Time
	}
	// contend runs a slow failing upload and, once it has started, other.
	contend := func(other func() (int, string, error)) (first, second result) {
		started := ev.Count(core.EventUploadStarted)
		done := make(chan result, 1)
		go func() {
			s, b, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", bad, nil)
			done <- result{s, b, err, time.Now()}
		}()
		if _, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(core.State) bool {
			return ev.Count(core.EventUploadStarted) > started
		}); err != nil {
			t.Fatal(err)
		}
		s, b, err := other()
		second = result{s, b, err, time.Now()}
		first = <-done
		if first.err != nil || first.status != 500 || first.body != "OTA end failed" {
			t.Fatalf("slow upload: %+v", first)
		}
		return first, second
	}

	// Causality, not clocks: the device records an upload before it
	// answers and releases the httpd only after that.
	_, status := contend(func() (int, string, error) {
		s, b, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/ota/status")
		if n := len(d.State().Uploads); n != 1 {
			t.Errorf("status answered while the upload ran (%d uploads recorded)", n)
		}
		return s, b, err
	})
	if status.err != nil || status.status != 200 {
		t.Errorf("status request: %+v", status)
	}
	_, second := contend(func() (int, string, error) { return simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", good, nil) })
	if second.err != nil || second.status != 200 {
		t.Errorf("second upload: %+v", second)
	}
	st := simtest.WaitUploads(t, d, 3)
	slow, next := st.Uploads[1], st.Uploads[2]
	if next.Start.Before(slow.Start.Add(slow.Duration)) {
		t.Errorf("the second upload started at %v, inside the first (%v + %v)", next.Start, slow.Start, slow.Duration)
	}
	if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
}

// TestUploadWhilePendingVerify: esp_ota_begin refuses while the running
// image has not confirmed itself.
func TestUploadWhilePendingVerify(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Timing.ValidAfter = time.Hour
	d := simtest.Start(t, cfg)
	if s, b, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", simtest.Image(t, "1.0.1"), nil); err != nil || s != 200 {
		t.Fatalf("upload: %d %q %v", s, b, err)
	}
	if _, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s core.State) bool {
		return s.Up && s.Version == "1.0.1" && s.AppState == core.StatePendingVerify
	}); err != nil {
		t.Fatal(err)
	}
	r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, simtest.Image(t, "1.0.2"))
	if r.Status != 500 || r.Body != "OTA begin failed" {
		t.Fatalf("upload while pending: %d %q %v", r.Status, r.Body, r.ReadErr)
	}
	if rec := simtest.LastUpload(t, d); !strings.Contains(rec.Reason, "pending_verify") {
		t.Errorf("reason: %q", rec.Reason)
	}
}

// TestPythonRequestsShapedUpload sends what the seed's Python script sends
// (requests.post(url, data=f.read())), headers included.
func TestPythonRequestsShapedUpload(t *testing.T) {
	d := simtest.Start(t, simtest.Config(Seed))
	status, body, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", simtest.Image(t, "1.0.1"), map[string]string{
		"User-Agent":      "python-requests/2.31.0",
		"Accept-Encoding": "gzip, deflate",
		"Accept":          "*/*",
		"Connection":      "keep-alive",
	})
	if err != nil || status != 200 || body != "OTA update successful, rebooting..." {
		t.Fatalf("got %d %q %v", status, body, err)
	}
	if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
}

// seedScript is upload_ota.py from the seed (seed/ota-update-prompt.md).
const seedScript = `#!/usr/bin/env python3
import requests
import sys

def upload_firmware(host, firmware_path):
    url = f"http://{host}:3232/update"

    print(f"Uploading {firmware_path} to {url}")

    with open(firmware_path, 'rb') as f:
        files = {'file': f}
        response = requests.post(url, data=f.read(), stream=True)

        if response.status_code == 200:
            print("Upload successful!")
            print(response.text)
        else:
            print(f"Upload failed: {response.status_code}")
            print(response.text)

if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("Usage: upload_ota.py <host> <firmware.bin>")
        sys.exit(1)

    upload_firmware(sys.argv[1], sys.argv[2])
`

// TestSeedPythonScript runs the seed's own script (port 3232 is fixed in
// it, so the device takes 127.0.0.77:3232).
func TestSeedPythonScript(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	if err := exec.Command(py, "-c", "import requests").Run(); err != nil {
		t.Skip("python3 requests not installed")
	}
	cfg := simtest.Config(Seed)
	cfg.IP = simtest.MustAddr(t, "127.0.0.77")
	cfg.OTAPort = 3232
	cfg.WebPort = -1
	d, err := core.Start(simtest.Ctx(t, time.Minute), cfg)
	if err != nil {
		t.Skipf("cannot take 127.0.0.77:3232: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	dir := t.TempDir()
	script := filepath.Join(dir, "upload_ota.py")
	os.WriteFile(script, []byte(seedScript), 0o755)
	badPath := filepath.Join(dir, "bad.bin")
	goodPath := filepath.Join(dir, "good.bin")
	os.WriteFile(badPath, make([]byte, 1500<<10), 0o644)
	os.WriteFile(goodPath, simtest.Image(t, "1.0.1"), 0o644)
	// One interpreter for both runs: starting python with requests is slow.
	driver := "import sys; sys.path.insert(0, sys.argv[1]); import upload_ota as u\n" +
		"u.upload_firmware('127.0.0.77', sys.argv[2]); print('---')\n" +
		"u.upload_firmware('127.0.0.77', sys.argv[3])\n"
	out, err := exec.Command(py, "-c", driver, dir, badPath, goodPath).CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%s", err, out)
	}
	bad, good, _ := strings.Cut(string(out), "---")
	if !strings.Contains(bad, "Upload failed: 500\nWrite failed") {
		t.Errorf("bad image: %s", bad)
	}
	if !strings.Contains(good, "Upload successful!\nOTA update successful, rebooting...") {
		t.Errorf("good image: %s", good)
	}
	if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
}

func TestOTSWebApp(t *testing.T) {
	cfg := simtest.Config(OTS)
	cfg.SerialNumber = "OTS-0042"
	cfg.OwnerName = "Ada"
	d := simtest.Start(t, cfg)
	code, js, err := simtest.GetGo(t, "http://"+d.WebAddr()+"/api/status")
	if err != nil || code != 200 {
		t.Fatalf("api/status: %d %v", code, err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"firmwareVersion": "1.0.0", "mode": "STA", "ip": "127.0.0.1", "serialNumber": "OTS-0042", "ownerName": "Ada"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	// No /ota/status without Extensions, on either port.
	for _, a := range []string{d.OTAAddr(), d.WebAddr()} {
		if code, body, _ := simtest.GetGo(t, "http://"+a+"/ota/status"); code != 404 || body != "Nothing matches the given URI" {
			t.Errorf("%s /ota/status: %d %q", a, code, body)
		}
	}
	r := simtest.RawPost(t, d.WebAddr(), "POST", "/ota/upload", map[string]string{"Content-Length": "0"}, nil)
	if r.Status != 400 || r.Body != "Invalid firmware size" {
		t.Errorf("empty: %d %q", r.Status, r.Body)
	}
	s, b, err := simtest.PostGo(t, "http://"+d.WebAddr()+"/ota/upload", simtest.Image(t, "1.0.1"), nil)
	if err != nil || s != 200 || b != "Upload successful. Rebooting..." {
		t.Fatalf("upload: %d %q %v", s, b, err)
	}
	if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
}

// TestSecondUploadAlternatesSlots: factory → ota_0 → ota_1 → ota_0.
func TestSecondUploadAlternatesSlots(t *testing.T) {
	d := simtest.Start(t, simtest.Config(Seed))
	for i, want := range []string{"ota_0", "ota_1", "ota_0"} {
		v := fmt.Sprintf("1.0.%d", i+1)
		if s, b, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", simtest.Image(t, v), nil); err != nil || s != 200 {
			t.Fatalf("upload %s: %d %q %v", v, s, b, err)
		}
		st, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), v)
		if err != nil {
			t.Fatal(err)
		}
		if st.Running != want || st.AppState != core.StateValid {
			t.Errorf("%s runs from %s (%s), want %s", v, st.Running, st.AppState, want)
		}
	}
	if st := d.State(); simtest.Slot(st, "factory").Version != "1.0.0" || simtest.Slot(st, "ota_1").Version != "1.0.2" {
		t.Errorf("slots: %+v", st.Slots)
	}
}
