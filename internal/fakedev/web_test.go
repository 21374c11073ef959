package fakedev

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Test timing: a restart short enough for tests, long enough to be seen.
const (
	webBoot    = 600 * time.Millisecond
	webRestart = 150 * time.Millisecond
)

func startWeb(t *testing.T, c WebConfig) *WebDevice {
	t.Helper()
	if c.BootTime == 0 {
		c.BootTime = webBoot
	}
	if c.RestartDelay == 0 {
		c.RestartDelay = webRestart
	}
	d, err := StartWeb(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// webAnswer is what a plain net/http client saw.
type webAnswer struct {
	status int
	header http.Header
	body   string
	close  bool  // Connection: close
	err    error // no answer at all
}

func (a webAnswer) String() string {
	if a.err != nil {
		return "no answer: " + a.err.Error()
	}
	return fmt.Sprintf("%d %q", a.status, a.body)
}

func do(req *http.Request) webAnswer {
	c := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return webAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return webAnswer{err: err}
	}
	return webAnswer{status: resp.StatusCode, header: resp.Header, body: string(b), close: resp.Close}
}

func webGet(t *testing.T, d *WebDevice, path string, hdr ...string) webAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", d.Port(), path), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(req)
}

// formBody is a multipart body as Go's mime/multipart writes it (as a
// browser does): one file part under field, with filename.
func formBody(t *testing.T, field, filename string, img []byte) (body []byte, contentType string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	if err := mw.WriteField("MD5", "0123456789abcdef0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	fw, err := mw.CreateFormFile(field, filename)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(img)
	mw.Close()
	return b.Bytes(), mw.FormDataContentType()
}

// webPost posts body to path; hdr are header name/value pairs.
func webPost(t *testing.T, d *WebDevice, path, contentType string, body []byte, hdr ...string) webAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d%s", d.Port(), path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(req)
}

func upload(t *testing.T, d *WebDevice, path, field string, img []byte, hdr ...string) webAnswer {
	t.Helper()
	body, ct := formBody(t, field, "fw.bin", img)
	return webPost(t, d, path, ct, body, hdr...)
}

func basic(user, pass string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	req.SetBasicAuth(user, pass)
	return req.Header.Get("Authorization")
}

// waitRestarted waits until the device has come back from n restarts, and
// checks that it was silent (connects time out) in between.
func waitRestarted(t *testing.T, d *WebDevice, n int) {
	t.Helper()
	waitFor(t, "a restart", func() bool {
		k := 0
		for _, e := range d.Events() {
			if e.What == "restart" {
				k++
			}
		}
		return k >= n
	})
	if silentConnects && d.Boots() < n {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.Port()), 300*time.Millisecond)
		var ne net.Error
		if err == nil {
			c.Close()
			if d.Boots() < n {
				t.Fatal("a restarting device accepted a connection")
			}
		} else if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("connect to a restarting device: %v, want a timeout", err)
		}
	}
	waitFor(t, "the device back", func() bool { return d.Boots() >= n })
}

func statusVersion(t *testing.T, d *WebDevice) string {
	t.Helper()
	a := webGet(t, d, "/ota/status")
	var m map[string]any
	if a.status != 200 || json.Unmarshal([]byte(a.body), &m) != nil {
		t.Fatalf("/ota/status: %s", a)
	}
	v, _ := m["version"].(string)
	return v
}

const success = `<META http-equiv="refresh" content="15;URL=/">Update Success! Rebooting...`

func TestWebHTTPUpdateServerAnswers(t *testing.T) {
	t.Parallel()
	img := testImage("1.0.1", "sketch", 0x11, 20000)
	notE9 := append([]byte{0x12}, img[1:]...)
	tiny := testImage("1.0.1", "sketch", 0x11, 2000)
	for _, chip := range []struct {
		name      string
		esp8266   bool
		magic     string // a firmware whose first byte is not 0xE9
		tiny      string // a 2000-byte image, "" = success
		tooBig    string
		fsAccept  string
		optionsOK bool
	}{
		{"esp32", false, "Update error: Decryption error\r\n", "", "Update error: Not Enough Space\r\n", ".bin,.bin.gz,.image", false},
		{"esp8266", true, "Update error: ERROR[10]: Magic byte is not 0xE9\n", "Update error: ERROR[13]: No data supplied\n",
			"Update error: ERROR[4]: Not Enough Space\n", ".bin,.bin.gz", true},
	} {
		t.Run(chip.name, func(t *testing.T) {
			d := startWeb(t, WebConfig{Family: HTTPUpdateServer, ESP8266: chip.esp8266, OTAStatus: true, SlotSize: 64 << 10})
			page := webGet(t, d, "/update")
			if page.status != 200 || !strings.Contains(page.body, "name='firmware'") || !strings.Contains(page.body, "accept='"+chip.fsAccept+"' name='filesystem'") {
				t.Fatalf("GET /update: %s", page)
			}
			req, _ := http.NewRequest(http.MethodOptions, d.URL(), nil)
			opt := do(req)
			if chip.optionsOK != (opt.status == 200 && opt.body == "y" && opt.header.Get("Access-Control-Allow-Origin") == "*") {
				t.Fatalf("OPTIONS /update: %s", opt)
			}
			if !chip.optionsOK && (opt.status != 404 || opt.body != "Not found: /update") {
				t.Fatalf("OPTIONS /update: %s, want 404 Not found: /update", opt)
			}
			// A body that is not multipart and fits in RAM: no upload ran,
			// and _authenticated starts false: 401, even with no credentials.
			if a := webPost(t, d, "/update", "application/octet-stream", tiny); a.status != 401 || a.header.Get("WWW-Authenticate") != `Basic realm="Login Required"` {
				t.Fatalf("raw POST: %s", a)
			}
			// One that does not fit is dropped unanswered.
			if a := webPost(t, d, "/update", "application/octet-stream", make([]byte, 70<<10)); a.err == nil {
				t.Fatalf("raw POST of 70 KiB: %s, want no answer", a)
			}
			for _, c := range []struct {
				what string
				img  []byte
				want string
			}{
				{"not 0xE9", notE9, chip.magic},
				{"2000 bytes", tiny, chip.tiny},
				{"larger than the slot", testImage("1.0.1", "sketch", 0x11, 70<<10), chip.tooBig},
			} {
				if c.want == "" {
					continue
				}
				a := upload(t, d, "/update", "firmware", c.img)
				if a.status != 200 || a.body != c.want || a.header.Get("Content-Type") != "text/html" {
					t.Errorf("%s: %s, want 200 %q", c.what, a, c.want)
				}
				if chip.esp8266 && a.header.Get("Access-Control-Allow-Origin") != "*" {
					t.Errorf("%s: no CORS header on ESP8266: %v", c.what, a.header)
				}
			}
			if d.Boots() != 0 || len(d.Events()) == 0 {
				t.Fatalf("a failed update restarted the device: %v", d.Events())
			}
			// Any field name but filesystem is firmware; the filename is not read.
			if a := upload(t, d, "/update", "image", img); a.status != 200 || a.body != success {
				t.Fatalf("upload: %s", a)
			}
			waitRestarted(t, d, 1)
			if v := statusVersion(t, d); v != "1.0.1" {
				t.Fatalf("after the update /ota/status tells %q", v)
			}
		})
	}
}

func TestWebHTTPUpdateServerAuthAndOrigin(t *testing.T) {
	t.Parallel()
	img := testImage("1.0.1", "sketch", 0x11, 20000)
	t.Run("credentials", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: HTTPUpdateServer, User: "admin", Password: "pw"})
		if a := webGet(t, d, "/update"); a.status != 401 || a.body != "" || a.header.Get("WWW-Authenticate") != `Basic realm="Login Required"` {
			t.Fatalf("GET /update without credentials: %s %v", a, a.header)
		}
		if a := upload(t, d, "/update", "firmware", img, "Authorization", basic("admin", "nope")); a.status != 401 {
			t.Fatalf("wrong password: %s", a)
		}
		if a := upload(t, d, "/update", "firmware", img, "Authorization", basic("admin", "pw")); a.status != 200 || a.body != success {
			t.Fatalf("right password: %s", a)
		}
		waitRestarted(t, d, 1)
	})
	t.Run("origin check without credentials", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: HTTPUpdateServer, OriginCheck: true})
		if a := upload(t, d, "/update", "firmware", img); a.status != 200 || a.body != "Update error: Wrong origin received!" {
			t.Fatalf("no Origin: %s", a)
		}
		if a := upload(t, d, "/update", "firmware", img, "Origin", "http://localhost"); a.body != "Update error: Wrong origin received!" {
			t.Fatalf("foreign Origin: %s", a)
		}
		host := fmt.Sprintf("127.0.0.1:%d", d.Port())
		if a := upload(t, d, "/update", "firmware", img, "Origin", "http://"+host); a.status != 200 || a.body != success {
			t.Fatalf("Origin http://%s: %s", host, a)
		}
		waitRestarted(t, d, 1)
	})
	t.Run("origin check with credentials", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: HTTPUpdateServer, OriginCheck: true, User: "admin", Password: "pw"})
		// The right password without Origin still draws the challenge.
		if a := upload(t, d, "/update", "firmware", img, "Authorization", basic("admin", "pw")); a.status != 401 {
			t.Fatalf("no Origin: %s", a)
		}
		if a := upload(t, d, "/update", "firmware", img, "Authorization", basic("admin", "pw"), "Origin", fmt.Sprintf("http://127.0.0.1:%d", d.Port())); a.body != success {
			t.Fatalf("with Origin: %s", a)
		}
	})
}

// TestWebMultipartStrictness: what the sync servers' parser refuses or
// ignores (research18.md §1.1).
func TestWebMultipartStrictness(t *testing.T) {
	t.Parallel()
	img := testImage("1.0.1", "sketch", 0x11, 9000)
	part := func(headers string) []byte {
		return []byte("--XyZ\r\n" + headers + "\r\n\r\n" + string(img) + "\r\n--XyZ--\r\n")
	}
	cases := []struct {
		name, ct string
		body     []byte
		want     string // "" = dropped unanswered
	}{
		{"no filename: a text part, no upload", "multipart/form-data; boundary=XyZ",
			[]byte("--XyZ\r\nContent-Disposition: form-data; name=\"firmware\"\r\n\r\nabc\r\n--XyZ--\r\n"), "401"},
		{"another part header", "multipart/form-data; boundary=XyZ",
			part("Content-Disposition: form-data; name=\"firmware\"; filename=\"fw.bin\"\r\nContent-Transfer-Encoding: binary"), ""},
		{"no Content-Type in the part", "multipart/form-data; boundary=XyZ",
			part(`Content-Disposition: form-data; name="firmware"; filename="fw.bin"`), success},
		{"quoted boundary", `multipart/form-data; boundary="XyZ"`,
			part("Content-Disposition: form-data; name=\"firmware\"; filename=\"fw.bin\"\r\nContent-Type: application/octet-stream"), success},
		{"wrong first line", "multipart/form-data; boundary=XyZ", append([]byte("junk\r\n"), part(`Content-Disposition: form-data; name="f"; filename="a"`)...), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := startWeb(t, WebConfig{Family: HTTPUpdateServer, ESP8266: true})
			a := webPost(t, d, "/update", c.ct, c.body)
			switch {
			case c.want == "" && a.err == nil:
				t.Fatalf("%s, want no answer", a)
			case c.want == "401" && a.status != 401:
				t.Fatalf("%s, want 401", a)
			case c.want == success && a.body != success:
				t.Fatalf("%s, want success", a)
			}
		})
	}
}

func TestWebESPEasy(t *testing.T) {
	t.Parallel()
	img := testImage("1.0.1", "sketch", 0x11, 20000)
	next := EasyBuild{Build: "20241019", GitBuild: "mega-20241019", BuildTime: "Oct 19 2024 22:36:19", BinaryFilename: "ESP_Easy_mega_20241019_normal_ESP32_4M316k"}
	readJSON := func(t *testing.T, d *WebDevice) map[string]any {
		t.Helper()
		a := webGet(t, d, "/json")
		var m struct{ System map[string]any }
		if a.status != 200 || json.Unmarshal([]byte(a.body), &m) != nil || m.System == nil {
			t.Fatalf("/json: %s", a)
		}
		return m.System
	}
	for _, esp8266 := range []bool{false, true} {
		t.Run(fmt.Sprintf("esp8266=%v", esp8266), func(t *testing.T) {
			d := startWeb(t, WebConfig{Family: ESPEasy, ESP8266: esp8266, EasyNext: &next})
			sys := readJSON(t, d)
			if sys["Git Build"] != "mega-20240822" || sys["Build"] != float64(20240822) || sys["Build Time"] != "Aug 22 2024 10:00:00" {
				t.Fatalf("before: %v", sys)
			}
			if ms, ok := sys["Uptime (ms)"].(float64); !ok || ms < 3600e3 || sys["Uptime"] != float64(60) {
				t.Fatalf("uptime before: %v / %v", sys["Uptime (ms)"], sys["Uptime"])
			}
			page := webGet(t, d, "/update")
			if page.status != 200 || strings.Contains(page.body, "filesystem") == !esp8266 {
				t.Fatalf("GET /update (a filesystem input only on ESP8266): %s", page)
			}
			if !esp8266 {
				// The ESP32 copy's filesystem update is a TODO: success, a
				// restart, nothing written.
				if a := upload(t, d, "/update", "filesystem", img); a.body != success {
					t.Fatalf("filesystem: %s", a)
				}
				waitRestarted(t, d, 1)
				if _, e := d.Running(); e.GitBuild != "mega-20240822" || d.Filesystems() != 0 {
					t.Fatalf("after a filesystem upload: %+v, %d filesystem images", e, d.Filesystems())
				}
			}
			boots := d.Boots()
			// /update never asks for credentials.
			if a := upload(t, d, "/update", "firmware", img, "Authorization", basic("admin", "x")); a.status != 200 || a.body != success {
				t.Fatalf("upload: %s", a)
			}
			waitRestarted(t, d, boots+1)
			sys = readJSON(t, d)
			if sys["Git Build"] != "mega-20241019" || sys["Build Time"] != "Oct 19 2024 22:36:19" || sys["Last Boot Cause"] != "Soft Reboot" {
				t.Fatalf("after: %v", sys)
			}
			if ms, _ := sys["Uptime (ms)"].(float64); ms > 5000 {
				t.Fatalf("Uptime (ms) %v after a restart", ms)
			}
		})
	}
	t.Run("old ESPEasy quotes everything and has no Uptime (ms)", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: ESPEasy, EasyOld: true})
		sys := readJSON(t, d)
		if _, ok := sys["Uptime (ms)"]; ok || sys["Build"] != "20240822" || sys["Uptime"] != "60" {
			t.Fatalf("%v", sys)
		}
	})
	t.Run("no credentials, no Origin check", func(t *testing.T) {
		if _, err := StartWeb(WebConfig{Family: ESPEasy, User: "admin", Password: "x"}); err == nil {
			t.Fatal("ESPEasy with /update credentials started")
		}
		if _, err := StartWeb(WebConfig{Family: ESPEasy, OriginCheck: true}); err == nil {
			t.Fatal("ESPEasy with an Origin check started")
		}
	})
}

func TestWebElegantOTA(t *testing.T) {
	t.Parallel()
	img := testImage("1.0.1", "sketch", 0x11, 20000)
	start := func(t *testing.T, d *WebDevice, q string, hdr ...string) webAnswer {
		t.Helper()
		return webGet(t, d, "/ota/start?"+q, hdr...)
	}
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("async=%v", async), func(t *testing.T) {
			d := startWeb(t, WebConfig{Family: ElegantOTA, Async: async, OTAStatus: true})
			page := webGet(t, d, "/update", "Accept-Encoding", "identity")
			if page.status != 200 || page.header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("GET /update: %s %v", page, page.header)
			}
			zr, err := gzip.NewReader(strings.NewReader(page.body))
			if err != nil {
				t.Fatal(err)
			}
			if html, _ := io.ReadAll(zr); !bytes.Contains(html, []byte("<title>ElegantOTA Lite</title>")) {
				t.Fatalf("page: %q", html)
			}
			id := webGet(t, d, "/update/identity")
			if async && (id.status != 200 || id.header.Get("Content-Encoding") != "gzip") || !async && (id.status != 404 || id.body != "Not found: /update/identity") {
				t.Fatalf("GET /update/identity: %s", id)
			}
			// Without /ota/start nothing is written, yet the answer is 200
			// OK and the device restarts into the firmware it ran.
			a := upload(t, d, "/ota/upload", "file", img)
			if a.status != 200 || a.body != "OK" || !a.close || async != (a.header.Get("Access-Control-Allow-Origin") == "*") {
				t.Fatalf("upload without /ota/start: %s %v", a, a.header)
			}
			waitRestarted(t, d, 1)
			if v := statusVersion(t, d); v != "1.0.0" {
				t.Fatalf("after the silent 200 the device runs %q", v)
			}
			if a := start(t, d, "mode=fr&hash=abc"); a.status != 400 || a.body != "MD5 parameter invalid" {
				t.Fatalf("short hash: %s", a)
			}
			if a := start(t, d, "mode=fr&hash="+md5hex(string(img))); a.status != 200 || a.body != "OK" {
				t.Fatalf("/ota/start: %s", a)
			}
			// A second start while the update runs: begin() fails without
			// an error, so 200 OK and the old stream goes on.
			if a := start(t, d, "mode=fr&hash="+md5hex(string(img))); a.status != 200 || a.body != "OK" {
				t.Fatalf("second /ota/start: %s", a)
			}
			if a := upload(t, d, "/ota/upload", "file", img); a.status != 200 || a.body != "OK" {
				t.Fatalf("upload: %s", a)
			}
			waitRestarted(t, d, 2)
			if v := statusVersion(t, d); v != "1.0.1" {
				t.Fatalf("after the update the device runs %q", v)
			}
			if d.Starts() != 3 || d.Uploads() != 2 {
				t.Errorf("starts %d uploads %d", d.Starts(), d.Uploads())
			}
		})
	}
	t.Run("failures", func(t *testing.T) {
		for _, c := range []struct {
			name string
			cfg  WebConfig
			img  []byte
			want string
		}{
			{"esp32 not 0xE9", WebConfig{}, append([]byte{0x12}, img[1:]...), "Decryption error\r\n\n"},
			{"esp8266 tiny", WebConfig{ESP8266: true}, testImage("1.0.1", "sketch", 0x11, 4096), "ERROR[13]: No data supplied\n\n"},
			{"esp8266 not 0xE9", WebConfig{ESP8266: true}, append([]byte{0x12}, img[1:]...), "ERROR[10]: Magic byte is not 0xE9\n\n"},
			{"async esp32 not 0xE9", WebConfig{Async: true}, append([]byte{0x12}, img[1:]...), ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				c.cfg.Family = ElegantOTA
				d := startWeb(t, c.cfg)
				if a := start(t, d, "mode=fr"); a.status != 200 {
					t.Fatalf("/ota/start: %s", a)
				}
				a := upload(t, d, "/ota/upload", "firmware", c.img)
				if a.status != 400 || a.body != c.want {
					t.Fatalf("%s, want 400 %q", a, c.want)
				}
				// The error stays: the next upload without /ota/start
				// answers it again.
				if a := upload(t, d, "/ota/upload", "firmware", img); a.status != 400 || a.body != c.want {
					t.Fatalf("next upload: %s, want the stale 400 %q", a, c.want)
				}
				if d.Boots() != 0 {
					t.Fatal("a failed update restarted")
				}
			})
		}
	})
	t.Run("esp8266 master aborts on a second start", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: ElegantOTA, ESP8266: true, CoreMaster: true})
		start(t, d, "mode=fr")
		if a := start(t, d, "mode=fr"); a.status != 400 || a.body != "ERROR[15]: Update already running\n\n" {
			t.Fatalf("second start: %s", a)
		}
	})
	t.Run("sync auth is Basic", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: ElegantOTA, User: "admin", Password: "pw"})
		for _, p := range []string{"/update", "/ota/start?mode=fr"} {
			if a := webGet(t, d, p); a.status != 401 || a.header.Get("WWW-Authenticate") != `Basic realm="Login Required"` {
				t.Fatalf("%s: %s %v", p, a, a.header)
			}
		}
		if a := start(t, d, "mode=fr", "Authorization", basic("admin", "pw")); a.body != "OK" {
			t.Fatalf("start: %s", a)
		}
		if a := upload(t, d, "/ota/upload", "file", img); a.status != 401 {
			t.Fatalf("upload without credentials: %s", a)
		}
	})
	t.Run("async auth is Digest, and takes Basic", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: ElegantOTA, Async: true, User: "admin", Password: "pw"})
		a := webGet(t, d, "/ota/start?mode=fr")
		ch := a.header.Get("WWW-Authenticate")
		if a.status != 401 || !strings.HasPrefix(ch, `Digest realm="Login Required", qop="auth", nonce="`) {
			t.Fatalf("challenge: %s %q", a, ch)
		}
		h := md5hex
		resp := h(h("admin:Login Required:pw") + ":anynonce:00000001:c0ffee:auth:" + h("GET:/ota/start?mode=fr"))
		dg := `Digest username="admin", realm="Login Required", nonce="anynonce", uri="/ota/start?mode=fr", qop=auth, nc=00000001, cnonce="c0ffee", response="` + resp + `"`
		if a := start(t, d, "mode=fr", "Authorization", dg); a.status != 200 {
			t.Fatalf("digest: %s", a)
		}
		bad := strings.Replace(dg, resp, h("x"), 1)
		if a := start(t, d, "mode=fr", "Authorization", bad); a.status != 401 {
			t.Fatalf("wrong digest: %s", a)
		}
		if a := upload(t, d, "/ota/upload", "file", img, "Authorization", basic("admin", "pw")); a.status != 200 || a.body != "OK" {
			t.Fatalf("preemptive Basic: %s", a)
		}
	})
	t.Run("no loop, no restart", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: ElegantOTA, After: NeverRestarts, OTAStatus: true})
		start(t, d, "mode=fr")
		if a := upload(t, d, "/ota/upload", "file", img); a.body != "OK" {
			t.Fatalf("upload: %s", a)
		}
		time.Sleep(3 * webRestart)
		if d.Boots() != 0 || statusVersion(t, d) != "1.0.0" {
			t.Fatalf("restarted without ElegantOTA.loop(): boots %d", d.Boots())
		}
	})
}

// TestWebWithCurl: each family's own documented command line.
func TestWebWithCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	fw := filepath.Join(t.TempDir(), "firmware.bin")
	img := testImage("1.0.1", "sketch", 0x11, 20000)
	if err := os.WriteFile(fw, img, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, args ...string) string {
		t.Helper()
		// -s: no meter; --noproxy: loopback only; curl waits 1 s for a
		// 100 Continue these servers never send.
		out, err := exec.Command(curl, append([]string{"-s", "--noproxy", "*", "--max-time", "20"}, args...)...).Output()
		if err != nil {
			t.Fatalf("curl %q: %v (%q)", args, err, out)
		}
		return string(out)
	}
	t.Run("ESP8266HTTPUpdateServer", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: HTTPUpdateServer, ESP8266: true})
		if out := run(t, "-F", "firmware=@"+fw, d.URL()); out != success {
			t.Fatalf("curl -F firmware=@: %q", out)
		}
	})
	t.Run("HTTPUpdateServer with the Origin check", func(t *testing.T) {
		// The library's own comment: curl -F "image=@firmware.bin" …/update.
		d := startWeb(t, WebConfig{Family: HTTPUpdateServer, OriginCheck: true})
		if out := run(t, "-F", "image=@"+fw, d.URL()); out != "Update error: Wrong origin received!" {
			t.Fatalf("without Origin: %q", out)
		}
		if out := run(t, "-H", fmt.Sprintf("Origin: http://127.0.0.1:%d", d.Port()), "-F", "image=@"+fw, d.URL()); out != success {
			t.Fatalf("with Origin: %q", out)
		}
	})
	t.Run("ESPEasy", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: ESPEasy})
		if out := run(t, "-F", "firmware=@"+fw, d.URL()); out != success {
			t.Fatalf("curl -F: %q", out)
		}
	})
	t.Run("ElegantOTA", func(t *testing.T) {
		d := startWeb(t, WebConfig{Family: ElegantOTA, OTAStatus: true})
		base := fmt.Sprintf("http://127.0.0.1:%d", d.Port())
		if out := run(t, base+"/ota/start?mode=fr&hash="+md5hex(string(img))); out != "OK" {
			t.Fatalf("/ota/start: %q", out)
		}
		if out := run(t, "-F", "MD5="+md5hex(string(img)), "-F", "firmware=@"+fw+";filename=firmware", base+"/ota/upload"); out != "OK" {
			t.Fatalf("/ota/upload: %q", out)
		}
		waitRestarted(t, d, 1)
		if v := statusVersion(t, d); v != "1.0.1" {
			t.Fatalf("runs %q", v)
		}
	})
}
