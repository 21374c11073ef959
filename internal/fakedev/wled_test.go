package fakedev

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func startWLED(t *testing.T, c WLEDConfig) *WLEDDevice {
	t.Helper()
	if c.BootTime == 0 {
		c.BootTime = webBoot
	}
	if c.RestartDelay == 0 {
		c.RestartDelay = webRestart
	}
	d, err := StartWLED(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// wledImage is an app image with a WLED metadata block where a build puts
// it: past the app descriptor on ESP32, past 0x1000 on ESP8266.
func wledImage(esp8266 bool, version, release string, size int) []byte {
	img := testImage("ignored", "WLED", 0x33, size)
	at := 0x120
	if esp8266 {
		at = 0x1010
	}
	if release != "" {
		copy(img[at:], WLEDMetadata(version, release))
	}
	return img
}

// noisy fills an image's tail past 0x1100 with bytes gzip cannot shrink,
// so that a gzip image is as long as a real one.
func noisy(img []byte) []byte {
	r := rand.New(rand.NewPCG(19, 5))
	for i := 0x1100; i < len(img); i++ {
		img[i] = byte(r.Uint32())
	}
	return img
}

// wledForm is a multipart body in WLED's field order; skip: "" none,
// "before" or "after" the file part.
func wledForm(t *testing.T, skip string, img []byte) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	if skip == "before" {
		mw.WriteField("skipValidation", "1")
	}
	fw, err := mw.CreateFormFile("update", "WLED_16.0.1_ESP32.bin")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(img)
	if skip == "after" {
		mw.WriteField("skipValidation", "1")
	}
	mw.Close()
	return b.Bytes(), mw.FormDataContentType()
}

func wledPost(t *testing.T, d *WLEDDevice, skip string, img []byte) webAnswer {
	t.Helper()
	body, ct := wledForm(t, skip, img)
	req, _ := http.NewRequest(http.MethodPost, d.URL(), bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	return do(req)
}

func wledInfo(t *testing.T, d *WLEDDevice) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/json/info", d.Port()), nil)
	a := do(req)
	var m map[string]any
	if a.status != 200 || json.Unmarshal([]byte(a.body), &m) != nil {
		t.Fatalf("/json/info: %s", a)
	}
	return m
}

// wledSays: the answer's status and msg.htm head and detail.
func wledSays(a webAnswer, status int, head, detail string) bool {
	return a.err == nil && a.status == status && strings.Contains(a.body, "<h2>"+head+"</h2>") && strings.Contains(a.body, detail) &&
		a.header.Get("Content-Type") == "text/html"
}

func waitWLEDBoots(t *testing.T, d *WLEDDevice, n int) {
	t.Helper()
	waitFor(t, "the WLED back", func() bool { return d.Boots() >= n })
}

func TestWLEDInfo(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg  WLEDConfig
		ver  string
		arch string
		rel  string
	}{
		{WLEDConfig{}, "16.0.1", "esp32", "ESP32"},
		{WLEDConfig{Release: WLED015, ESP8266: true}, "0.15.5", "esp8266", "ESP8266"},
	} {
		d := startWLED(t, c.cfg)
		m := wledInfo(t, d)
		if m["brand"] != "WLED" || m["ver"] != c.ver || m["arch"] != c.arch || m["release"] != c.rel || m["vid"] == nil {
			t.Errorf("/json/info: %v", m)
		}
		if up, _ := m["uptime"].(float64); up < 3600 {
			t.Errorf("uptime %v, want the hour it has run", m["uptime"])
		}
	}
}

// TestWLEDUploadAnswers: every answer of POST /update the facts name, in
// a table.
func TestWLEDUploadAnswers(t *testing.T) {
	t.Parallel()
	const tail = " Enable 'Ignore firmware validation' to proceed anyway."
	plain := testImage("1.0.1", "sketch", 0x11, 20000) // no WLED metadata
	good := wledImage(false, "16.0.2", "ESP32", 20000)
	for _, c := range []struct {
		name    string
		cfg     WLEDConfig
		skip    string
		img     []byte
		status  int
		head    string
		detail  string
		restart bool
		ver     string // after the restart
	}{
		{"metadata of its release", WLEDConfig{}, "", good, 200, "Update successful!", "Rebooting now...", true, "16.0.2"},
		{"_V4 is ignored", WLEDConfig{Running: WLEDBuild{Ver: "16.0.1", Vid: 1, Release: "ESP32_V4"}}, "", good, 200, "Update successful!", "", true, "16.0.2"},
		{"no metadata", WLEDConfig{}, "", plain, 500, "Update failed!", "This firmware file is missing compatibility metadata." + tail, false, ""},
		{"another release", WLEDConfig{}, "", wledImage(false, "16.0.2", "ESP32S3", 20000), 500, "Update failed!",
			"Firmware release name mismatch: current='ESP32', uploaded='ESP32S3'." + tail, false, ""},
		{"skipValidation before the file", WLEDConfig{}, "before", plain, 200, "Update successful!", "", true, "16.0.1"},
		{"skipValidation after the file counts for nothing", WLEDConfig{}, "after", plain, 500, "Update failed!", "missing compatibility metadata", false, ""},
		{"knob: missing", WLEDConfig{Check: CheckMissing}, "", good, 500, "Update failed!", "This firmware file is missing", false, ""},
		{"knob: mismatch", WLEDConfig{Check: CheckMismatch, OtherRelease: "ESP32C3"}, "", good, 500, "Update failed!", "uploaded='ESP32C3'", false, ""},
		{"knob: ok", WLEDConfig{Check: CheckOK}, "", plain, 200, "Update successful!", "", true, "16.0.1"},
		{"OTA lock", WLEDConfig{OTALock: true}, "before", plain, 401, "Access Denied", "Please unlock OTA in security settings!", false, ""},
		{"PIN", WLEDConfig{PIN: true}, "before", plain, 401, "Access Denied", "Please unlock settings using PIN code!", false, ""},
		{"foreign subnet", WLEDConfig{ForeignSubnet: true}, "before", plain, 401, "Access Denied", "Client is not on local subnet.", false, ""},
		{"foreign subnet, 0.15 has no such gate", WLEDConfig{Release: WLED015, ForeignSubnet: true}, "before", plain, 200, "Update successful!", "", true, "0.15.5"},
		{"too large", WLEDConfig{SlotSize: 16 << 10}, "before", plain, 500, "Update failed!", "Not Enough Space", false, ""},
		{"short image, no skip", WLEDConfig{}, "", good[:600], 500, "Update failed!", "Release check data never arrived?", false, ""},
		{"not 0xE9 on ESP32", WLEDConfig{}, "before", append([]byte{0x12}, plain[1:]...), 500, "Update failed!", "Decryption error", false, ""},
		{"ESP8266 gzip on 16.x", WLEDConfig{ESP8266: true}, "", gzipBytes(noisy(wledImage(true, "16.0.2", "ESP8266", 20000))), 200, "Update successful!", "", true, "16.0.2"},
		{"ESP8266 gzip on 0.15", WLEDConfig{ESP8266: true, Release: WLED015}, "", gzipBytes(noisy(wledImage(true, "0.15.6", "ESP8266", 20000))), 500, "Update failed!", "missing compatibility metadata", false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startWLED(t, c.cfg)
			a := wledPost(t, d, c.skip, c.img)
			if !wledSays(a, c.status, c.head, c.detail) {
				t.Fatalf("%s %v, want %d %q %q", a, a.header, c.status, c.head, c.detail)
			}
			if !c.restart {
				time.Sleep(2 * webRestart)
				if d.Boots() != 0 || len(d.Events()) != 1 {
					t.Fatalf("a refused upload restarted the device: %v", d.Events())
				}
				return
			}
			waitWLEDBoots(t, d, 1)
			m := wledInfo(t, d)
			if m["ver"] != c.ver {
				t.Errorf("after the update ver %v, want %s", m["ver"], c.ver)
			}
			if up, _ := m["uptime"].(float64); up > 30 {
				t.Errorf("uptime %v after a restart", up)
			}
		})
	}
}

// A second upload while one runs is answered 503 with an empty body, a
// browser's upload by the knob as well as a real concurrent one; the
// update is not hurt and the next try goes through.
func TestWLEDBusy(t *testing.T) {
	t.Parallel()
	img := wledImage(false, "16.0.2", "ESP32", 30000)
	t.Run("knob", func(t *testing.T) {
		d := startWLED(t, WLEDConfig{Busy: 1})
		if a := wledPost(t, d, "", img); a.status != 503 || a.body != "" {
			t.Fatalf("first upload: %s, want 503 and no body", a)
		}
		if a := wledPost(t, d, "", img); !wledSays(a, 200, "Update successful!", "") {
			t.Fatalf("retry: %s", a)
		}
		waitWLEDBoots(t, d, 1)
	})
	t.Run("concurrent", func(t *testing.T) {
		d := startWLED(t, WLEDConfig{})
		body, ct := wledForm(t, "", img)
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodPost, d.URL(), pr)
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", ct)
		first := make(chan webAnswer, 1)
		go func() { first <- do(req) }()
		// The first 5000 bytes: its update has begun.
		if _, err := pw.Write(body[:5000]); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the first update to begin", func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			return d.updating
		})
		if a := wledPost(t, d, "", img); a.status != 503 || a.body != "" {
			t.Fatalf("second upload: %s, want 503 and no body", a)
		}
		if _, err := pw.Write(body[5000:]); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		if a := <-first; !wledSays(a, 200, "Update successful!", "") {
			t.Fatalf("first upload: %s", a)
		}
		waitWLEDBoots(t, d, 1)
		if d.Uploads() != 2 {
			t.Errorf("%d uploads, want 2", d.Uploads())
		}
	})
}

// GET /update: the OTA lock answers 401 there too; else the gzipped page
// whose hidden skipValidation input precedes the file input.
func TestWLEDUpdatePage(t *testing.T) {
	t.Parallel()
	d := startWLED(t, WLEDConfig{})
	req, _ := http.NewRequest(http.MethodGet, d.URL(), nil)
	a := do(req)
	if a.status != 200 || a.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("GET /update: %s %v", a, a.header)
	}
	if page := wledUpdatePage; strings.Index(page, "skipValidation") > strings.Index(page, "type='file'") {
		t.Fatal("the page's skipValidation input follows the file input")
	}
	locked := startWLED(t, WLEDConfig{OTALock: true})
	req, _ = http.NewRequest(http.MethodGet, locked.URL(), nil)
	if a := do(req); !wledSays(a, 401, "Access Denied", "Please unlock OTA in security settings!") {
		t.Fatalf("locked GET /update: %s", a)
	}
	req, _ = http.NewRequest(http.MethodGet, d.URL()+"?revert", nil)
	if a := do(req); a.status != 500 || d.Reverts() != 1 {
		t.Fatalf("revert: %s, %d reverts counted", a, d.Reverts())
	}
}

// The device falls silent while it restarts, and comes back on the new
// build; RollsBack comes back on the old one.
func TestWLEDRestart(t *testing.T) {
	t.Parallel()
	img := wledImage(false, "16.0.2", "ESP32", 20000)
	for _, after := range []After{InstallsAndKeeps, RollsBack} {
		d := startWLED(t, WLEDConfig{After: after})
		if a := wledPost(t, d, "", img); a.status != 200 {
			t.Fatalf("upload: %s", a)
		}
		waitFor(t, "the restart", func() bool {
			for _, e := range d.Events() {
				if e.What == "restart" {
					return true
				}
			}
			return false
		})
		if silentConnects && d.Boots() == 0 {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/json/info", d.Port()), nil)
			c := http.Client{Timeout: 300 * time.Millisecond}
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
				if d.Boots() == 0 {
					t.Fatal("a restarting WLED answered")
				}
			}
		}
		waitWLEDBoots(t, d, 1)
		want := "16.0.2"
		if after == RollsBack {
			want = "16.0.1"
		}
		if v := d.Running().Ver; v != want {
			t.Errorf("after %d: runs %s, want %s", after, v, want)
		}
	}
}

func TestWLEDMetadataRoundTrip(t *testing.T) {
	img := wledImage(false, "16.0.2", "ESP32_V4", 4096)
	m, ok := FindWLEDMetadata(img)
	if !ok || m.Version != "16.0.2" || m.Release != "ESP32_V4" {
		t.Fatalf("%+v %v", m, ok)
	}
	bad := bytes.Clone(img)
	bad[0x120+56] ^= 1 // the release name no longer matches its hash
	if _, ok := FindWLEDMetadata(bad); ok {
		t.Fatal("a block whose hash does not match was taken")
	}
}

// TestWLEDWithCurl: WLED's documented command line, skipValidation first.
func TestWLEDWithCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	fw := filepath.Join(t.TempDir(), "firmware.bin")
	if err := os.WriteFile(fw, testImage("1.0.1", "sketch", 0x11, 20000), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startWLED(t, WLEDConfig{})
	run := func(args ...string) string {
		out, err := exec.Command(curl, append([]string{"-s", "--noproxy", "*", "--max-time", "20"}, args...)...).Output()
		if err != nil {
			t.Fatalf("curl %q: %v", args, err)
		}
		return string(out)
	}
	if out := run("-F", "update=@"+fw, d.URL()); !strings.Contains(out, "<h2>Update failed!</h2>This firmware file is missing compatibility metadata.") {
		t.Fatalf("without skipValidation: %q", out)
	}
	if out := run("-F", "skipValidation=1", "-F", "update=@"+fw, d.URL()); !strings.Contains(out, "<h2>Update successful!</h2>Rebooting now...") {
		t.Fatalf("with skipValidation: %q", out)
	}
	waitWLEDBoots(t, d, 1)
}
