package fakedev

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func startTasmota(t *testing.T, c TasmotaConfig) *TasmotaDevice {
	t.Helper()
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.BootTime, webBoot}, {&c.RestartDelay, webRestart}, {&c.UpgradeDelay, 100 * time.Millisecond},
		{&c.RetryDelay, 100 * time.Millisecond}, {&c.BacklogDelay, 20 * time.Millisecond}, {&c.LoaderDelay, 200 * time.Millisecond}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	d, err := StartTasmota(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// tasGet sends a GET; referer "" sends none.
func tasGet(t *testing.T, d *TasmotaDevice, path, referer string, hdr ...string) webAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, d.Base()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if referer != "" {
		req.Header.Set("Referer", referer)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(req)
}

func tasCmd(t *testing.T, d *TasmotaDevice, cmnd string, hdr ...string) webAnswer {
	t.Helper()
	return tasGet(t, d, "/cm?cmnd="+url.QueryEscape(cmnd), d.Referer(), hdr...)
}

// tasStatus is Status 0, parsed.
func tasStatus(t *testing.T, d *TasmotaDevice) map[string]map[string]any {
	t.Helper()
	a := tasCmd(t, d, "Status 0")
	var m map[string]map[string]any
	if a.status != 200 || json.Unmarshal([]byte(a.body), &m) != nil {
		t.Fatalf("Status 0: %s", a)
	}
	return m
}

// tasUpload posts img to /u2?fsz= as the upgrade page does (field u2).
func tasUpload(t *testing.T, d *TasmotaDevice, filename string, img []byte, referer string, hdr ...string) webAnswer {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, _ := mw.CreateFormFile("u2", filename)
	fw.Write(img)
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/u2?fsz=%d", d.Base(), len(img)), bytes.NewReader(b.Bytes()))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if referer != "" {
		req.Header.Set("Referer", referer)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(req)
}

func waitTasBoots(t *testing.T, d *TasmotaDevice, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("boot %d of the Tasmota", n), func() bool { return d.Boots() >= n })
}

// ups is the builds the device came up on, in order.
func ups(d *TasmotaDevice) []string {
	var out []string
	for _, e := range d.Events() {
		if e.What == "up" {
			out = append(out, e.Build.Version)
		}
	}
	return out
}

func TestTasmotaServerHeaderAndStatus(t *testing.T) {
	t.Parallel()
	d := startTasmota(t, TasmotaConfig{})
	a := tasGet(t, d, "/update", "")
	if a.status != 404 || a.header.Get("Server") != "Tasmota/14.3.0 (ESP32-D0WD-V3)" || !strings.HasPrefix(a.body, "File Not Found\n\nURI: /update") {
		t.Fatalf("GET /update: %s %v", a, a.header)
	}
	if a := tasGet(t, d, "/", ""); a.status != 200 || !strings.HasPrefix(a.header.Get("Server"), "Tasmota/") {
		t.Fatalf("GET /: %s", a)
	}
	m := tasStatus(t, d)
	if m["StatusFWR"]["Version"] != "14.3.0(tasmota32)" || m["StatusFWR"]["BuildDateTime"] != "2024-10-20T10:00:00" || m["StatusFWR"]["Hardware"] != "ESP32-D0WD-V3" {
		t.Errorf("StatusFWR: %v", m["StatusFWR"])
	}
	prm := m["StatusPRM"]
	if prm["BootCount"] != float64(17) || !strings.HasPrefix(prm["Uptime"].(string), "0T01:00:") || prm["OtaUrl"] == "" {
		t.Errorf("StatusPRM: %v", prm)
	}
	if m["StatusMEM"]["Free"] != float64(0x1E0000/1024) {
		t.Errorf("StatusMEM: %v", m["StatusMEM"])
	}
	if up, _ := m["StatusSTS"]["UptimeSec"].(float64); up < 3600 {
		t.Errorf("StatusSTS: %v", m["StatusSTS"])
	}
	if a := tasCmd(t, d, "Status 2"); a.body != `{"StatusFWR":`+mustJSON(m["StatusFWR"])+`}` && !strings.HasPrefix(a.body, `{"StatusFWR":{`) {
		t.Errorf("Status 2: %s", a)
	}
	if n := len(d.StatusDuringUpgrade()); n != 0 || len(d.Statuses()) != 2 {
		t.Errorf("statuses %v, %d during an upgrade", d.Statuses(), n)
	}
	old := startTasmota(t, TasmotaConfig{NoUptimeSec: true, ESP8266: true})
	m = tasStatus(t, old)
	if _, ok := m["StatusSTS"]["UptimeSec"]; ok || m["StatusFWR"]["BootVersion"] == nil || m["StatusFWR"]["Version"] != "14.3.0(tasmota)" {
		t.Errorf("ESP8266 without UptimeSec: %v %v", m["StatusSTS"], m["StatusFWR"])
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The Referer gate answers nothing at all; the password comes first on
// pages, second on /cm; its 401 JSON is translated.
func TestTasmotaRefererAndAuth(t *testing.T) {
	t.Parallel()
	d := startTasmota(t, TasmotaConfig{})
	for _, ref := range []string{"", "http://evil.example/", "https://127.0.0.1/"} {
		if a := tasGet(t, d, "/cm?cmnd=Status%200", ref); a.err == nil {
			t.Errorf("Referer %q: %s, want no answer at all", ref, a)
		}
	}
	if d.Silences() != 3 || len(d.Statuses()) != 0 {
		t.Errorf("%d silences, %d statuses run", d.Silences(), len(d.Statuses()))
	}
	if a := tasGet(t, d, "/cm?cmnd=Status%200", "http://TASMOTA-A1B2C3-1234/"); a.status != 200 {
		t.Errorf("Referer naming the host: %s", a)
	}
	if a := tasGet(t, d, "/up", ""); a.err == nil {
		t.Errorf("/up without Referer: %s", a)
	}
	open := startTasmota(t, TasmotaConfig{NoRefererCheck: true})
	if a := tasGet(t, open, "/cm?cmnd=Status%202", ""); a.status != 200 {
		t.Errorf("SetOption128 1: %s", a)
	}

	for _, lang := range []string{"en", "de"} {
		p := startTasmota(t, TasmotaConfig{Password: "s3cret", Language: lang})
		if a := tasGet(t, p, "/", ""); a.status != 401 || a.header.Get("Server") != "" || a.header.Get("WWW-Authenticate") != `Basic realm="Login Required"` {
			t.Errorf("%s: GET / with a password: %s %v", lang, a, a.header)
		}
		if a := tasGet(t, p, "/up", ""); a.status != 401 {
			t.Errorf("%s: /up: the password comes before the Referer: %s", lang, a)
		}
		if a := tasGet(t, p, "/cm?cmnd=Status%200", ""); a.err == nil {
			t.Errorf("%s: /cm without Referer: %s, want no answer: the Referer comes first there", lang, a)
		}
		a := tasCmd(t, p, "Status 0")
		var w map[string]string
		if a.status != 401 || json.Unmarshal([]byte(a.body), &w) != nil || !strings.Contains(w["WARNING"], "user=<") ||
			!strings.HasPrefix(a.header.Get("Server"), "Tasmota/") || a.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: /cm without credentials: %s %v", lang, a, a.header)
		}
		if (lang == "de") != strings.HasPrefix(w["WARNING"], "Benötige") {
			t.Errorf("%s: warning %q", lang, w["WARNING"])
		}
		if a := tasCmd(t, p, "Status 2", "Authorization", basic("admin", "s3cret")); a.status != 200 {
			t.Errorf("%s: Basic: %s", lang, a)
		}
		if a := tasGet(t, p, "/cm?user=admin&password=s3cret&cmnd=Status%202", p.Referer()); a.status != 200 {
			t.Errorf("%s: query credentials: %s", lang, a)
		}
	}
}

// TestTasmotaUploadAnswers: /u2's page is 200 HTML in every case, in the
// build's language.
func TestTasmotaUploadAnswers(t *testing.T) {
	t.Parallel()
	img := testImage("ignored", "tasmota", 0x44, 40000)
	big8266 := testImage("ignored", "tasmota", 0x44, 0x7C000)
	flash8m := bytes.Clone(img)
	flash8m[3] = 0x80
	for _, c := range []struct {
		name     string
		cfg      TasmotaConfig
		settings bool // /rs before the upload
		filename string
		img      []byte
		want     string // the page's words after "Upload"
	}{
		{"ESP32", TasmotaConfig{}, false, "fw.bin", img, "Successful"},
		{"ESP8266", TasmotaConfig{ESP8266: true}, false, "fw.bin", img, "Successful"},
		{"ESP8266 gzip", TasmotaConfig{ESP8266: true}, false, "fw.bin.gz", gzipBytes(img), "Successful"},
		{"no file name", TasmotaConfig{}, false, "", img, "Failed</font></b><br><br>No file selected"},
		{"not 0xE9", TasmotaConfig{}, false, "fw.bin", append([]byte{0x12}, img[1:]...), "Magic byte is not 0xE9"},
		{"ESP32 gzip", TasmotaConfig{}, false, "fw.bin.gz", gzipBytes(img), "Not enough space"},
		{"ESP8266 image larger than its free space", TasmotaConfig{ESP8266: true}, false, "fw.bin", big8266, "Not enough space"},
		{"ESP8266 image for 8 MiB of flash", TasmotaConfig{ESP8266: true}, false, "fw.bin", flash8m, "Program flash size is larger than real flash size"},
		{"ESP32 fsz beyond its slot", TasmotaConfig{SlotSize: 32 << 10}, false, "fw.bin", img, "Program flash size is larger"},
		{"safeboot layout, from the app", TasmotaConfig{Safeboot: true}, false, "fw.bin", img, "Not enough space"},
		{"after /rs", TasmotaConfig{}, true, "fw.bin", img, "File invalid"},
		{"German", TasmotaConfig{Language: "de"}, false, "fw.bin", append([]byte{0x12}, img[1:]...), "fehlgeschlagen</font></b><br><br>magic byte ist nicht 0xE9"},
		{"German, no space", TasmotaConfig{Language: "de", Safeboot: true}, false, "fw.bin", img, "ungenügend Speicherplatz"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startTasmota(t, c.cfg)
			page := "/up"
			if c.settings {
				page = "/rs"
			}
			if a := tasGet(t, d, page, d.Referer()); a.status != 200 {
				t.Fatalf("GET %s: %s", page, a)
			}
			a := tasUpload(t, d, c.filename, c.img, d.Referer())
			if a.status != 200 || !strings.Contains(a.body, c.want) || !strings.HasPrefix(a.header.Get("Server"), "Tasmota/") {
				t.Fatalf("%s, want 200 with %q", a, c.want)
			}
			if c.want != "Successful" {
				time.Sleep(2 * webRestart)
				if d.Boots() != 0 || d.Upgrading() {
					t.Fatalf("a failed upload restarted the device (%d) or left the upgrade on", d.Boots())
				}
				return
			}
			waitTasBoots(t, d, 1)
			m := tasStatus(t, d)
			if m["StatusFWR"]["BuildDateTime"] == "2024-10-20T10:00:00" || m["StatusPRM"]["BootCount"] != float64(18) {
				t.Errorf("after the upload: %v %v", m["StatusFWR"], m["StatusPRM"])
			}
		})
	}
}

// An upload without the Referer: the image is written (the upload loop
// checks nothing), the page never comes, the device does not restart;
// the next restart runs it.
func TestTasmotaUploadWithoutReferer(t *testing.T) {
	t.Parallel()
	next := TasmotaBuild{Version: "14.4.0", Image: "tasmota32", BuildDateTime: "2024-12-01T10:00:00"}
	d := startTasmota(t, TasmotaConfig{Next: &next})
	if a := tasUpload(t, d, "fw.bin", testImage("x", "tasmota", 0x44, 40000), ""); a.err == nil {
		t.Fatalf("%s, want no answer", a)
	}
	time.Sleep(2 * webRestart)
	if d.Boots() != 0 || d.Running().Version != "14.3.0" || d.Upgrading() {
		t.Fatalf("boots %d, runs %+v, upgrading %v", d.Boots(), d.Running(), d.Upgrading())
	}
	if a := tasCmd(t, d, "Restart 1"); a.body != `{"Restart":"Restarting"}` {
		t.Fatalf("Restart 1: %s", a)
	}
	waitTasBoots(t, d, 1)
	if d.Running() != next {
		t.Fatalf("after a restart it runs %+v, want the written image", d.Running())
	}
}

// fileServer serves files on loopback with Content-Length and x-MD5, and
// logs what was asked.
type fileServer struct {
	base string
	mu   sync.Mutex
	got  []string
}

func serveFiles(t *testing.T, files map[string][]byte) *fileServer {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fileServer{base: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		fs.mu.Lock()
		fs.got = append(fs.got, name+" "+r.Header.Get("x-ESP8266-STA-MAC")+r.Header.Get("x-ESP32-STA-MAC"))
		fs.mu.Unlock()
		b, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		sum := md5.Sum(b)
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Header().Set("x-MD5", hex.EncodeToString(sum[:]))
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return fs
}

func (fs *fileServer) asked() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]string(nil), fs.got...)
}

// By URL: Backlog OtaUrl …; Upgrade 1 answers {}, the device fetches the
// image itself and restarts into it; a Status during the upgrade trips the
// wire.
func TestTasmotaUpgradeByURL(t *testing.T) {
	t.Parallel()
	img := testImage("x", "tasmota", 0x44, 300_000)
	fs := serveFiles(t, map[string][]byte{"tok/tasmota32.bin": img})
	next := TasmotaBuild{Version: "14.4.0", Image: "tasmota32", BuildDateTime: "2024-12-01T10:00:00"}
	d := startTasmota(t, TasmotaConfig{Next: &next, UpgradeDelay: 400 * time.Millisecond})
	u := fs.base + "/tok/tasmota32.bin"
	if a := tasCmd(t, d, "Backlog OtaUrl "+u+"; Upgrade 1"); a.status != 200 || a.body != "{}" {
		t.Fatalf("Backlog: %s", a)
	}
	waitFor(t, "the upgrade to start", d.Upgrading)
	if a := tasCmd(t, d, "Status 2"); a.status != 200 {
		t.Fatalf("Status 2 during the upgrade: %s", a)
	}
	waitTasBoots(t, d, 1)
	if d.Running() != next || d.OtaURL() != u || d.Upgrading() {
		t.Fatalf("runs %+v, OtaUrl %q, upgrading %v", d.Running(), d.OtaURL(), d.Upgrading())
	}
	if got := d.Commands(); strings.Join(got, "|") != "OtaUrl "+u+"|Upgrade 1|Status 2" {
		t.Errorf("commands %q", got)
	}
	if trip := d.StatusDuringUpgrade(); len(trip) != 1 || trip[0].Command != "Status 2" {
		t.Errorf("tripwire %+v, want the one Status 2", trip)
	}
	if f := d.Fetches(); len(f) != 1 || f[0].Err != "" || f[0].Bytes != int64(len(img)) {
		t.Errorf("fetches %+v", f)
	}
	if a := fs.asked(); len(a) != 1 || a[0] != "tok/tasmota32.bin AA:BB:CC:A1:B2:C3" {
		t.Errorf("the file server saw %q", a)
	}
	if a := tasCmd(t, d, "Upgrade 2"); !strings.Contains(a.body, "Option 1 or >14.4.0 to upgrade") {
		t.Errorf("Upgrade 2: %s", a)
	}
}

// ESP8266 whose full image does not fit beside the running one: it
// fetches the -minimal image, boots it, and fetches the full one from the
// stored OtaUrl.
func TestTasmotaMinimalTwoStep(t *testing.T) {
	t.Parallel()
	full := testImage("x", "tasmota", 0x44, 600_000)
	minimal := testImage("x", "minimal", 0x45, 300_000)
	fs := serveFiles(t, map[string][]byte{"tok/tasmota.bin": full, "tok/tasmota-minimal.bin": minimal})
	d := startTasmota(t, TasmotaConfig{ESP8266: true, LoaderDelay: 1500 * time.Millisecond})
	if a := tasCmd(t, d, "Backlog OtaUrl "+fs.base+"/tok/tasmota.bin; Upgrade 1"); a.body != "{}" {
		t.Fatalf("Backlog: %s", a)
	}
	// Up on the minimal build, the upgrade still runs: a Status now trips
	// the wire.
	waitTasBoots(t, d, 1)
	if a := tasCmd(t, d, "Status 2"); !strings.Contains(a.body, "14.3.0(minimal)") || len(d.StatusDuringUpgrade()) != 1 {
		t.Errorf("Status 2 on the minimal build: %s; tripwire %+v", a, d.StatusDuringUpgrade())
	}
	waitTasBoots(t, d, 2)
	if got := strings.Join(ups(d), " "); got != "14.3.0(minimal) 14.3.0(tasmota)" {
		t.Errorf("came up on %q, want minimal then tasmota", got)
	}
	var names []string
	for _, f := range d.Fetches() {
		names = append(names, f.URL[len(fs.base):]+":"+f.Err)
	}
	if got := strings.Join(names, " "); got != "/tok/tasmota.bin:not enough space /tok/tasmota-minimal.bin: /tok/tasmota.bin:" {
		t.Errorf("fetches %q", got)
	}
	if d.BootCount() != 19 || d.Upgrading() {
		t.Errorf("BootCount %d, upgrading %v", d.BootCount(), d.Upgrading())
	}
}

// An ESP32 safeboot layout: by URL the app restarts into safeboot, which
// fetches; by file, /u4?u4=fct&api= restarts into safeboot first.
func TestTasmotaSafeboot(t *testing.T) {
	t.Parallel()
	img := testImage("x", "tasmota", 0x44, 300_000)
	fs := serveFiles(t, map[string][]byte{"tok/tasmota32.bin": img})
	t.Run("by URL", func(t *testing.T) {
		d := startTasmota(t, TasmotaConfig{Safeboot: true})
		tasCmd(t, d, "Backlog OtaUrl "+fs.base+"/tok/tasmota32.bin; Upgrade 1")
		waitTasBoots(t, d, 2)
		if got := strings.Join(ups(d), " "); got != "14.3.0(safeboot) 14.3.0(tasmota32)" {
			t.Errorf("came up on %q", got)
		}
	})
	t.Run("by file", func(t *testing.T) {
		d := startTasmota(t, TasmotaConfig{Safeboot: true})
		if a := tasGet(t, d, "/u4?u4=fct&api=", d.Referer()); a.body != "false" {
			t.Fatalf("/u4 from the app: %s", a)
		}
		waitTasBoots(t, d, 1)
		if a := tasGet(t, d, "/u4?u4=fct&api=", d.Referer()); a.body != "true" {
			t.Fatalf("/u4 in safeboot: %s", a)
		}
		if a := tasUpload(t, d, "fw.bin", img, d.Referer()); !strings.Contains(a.body, "Successful") {
			t.Fatalf("upload in safeboot: %s", a)
		}
		waitTasBoots(t, d, 2)
		if r := d.Running(); r.Image != "tasmota32" {
			t.Errorf("runs %+v", r)
		}
	})
	if a := tasGet(t, startTasmota(t, TasmotaConfig{}), "/u4?u4=fct&api=", ""); a.err == nil {
		t.Errorf("/u4 without Referer answered: %s", a)
	}
}

// A URL that never serves: four attempts (the last with .gz on ESP8266),
// then the device gives up on the build it runs; a URL off loopback is
// never dialled.
func TestTasmotaUpgradeGivesUp(t *testing.T) {
	t.Parallel()
	fs := serveFiles(t, nil)
	d := startTasmota(t, TasmotaConfig{ESP8266: true})
	tasCmd(t, d, "OtaUrl "+fs.base+"/tok/none.bin")
	tasCmd(t, d, "Upgrade 1")
	waitFor(t, "the upgrade to give up", func() bool { return len(d.Fetches()) == 4 && !d.Upgrading() })
	f := d.Fetches()
	if !strings.HasSuffix(f[3].URL, "/tok/none.bin.gz") || f[0].Err != "wrong HTTP code 404" {
		t.Errorf("fetches %+v", f)
	}
	if d.Boots() != 0 || d.Running().Image != "tasmota" {
		t.Errorf("boots %d, runs %+v", d.Boots(), d.Running())
	}
	far := startTasmota(t, TasmotaConfig{})
	tasCmd(t, far, "Upgrade 1") // the default OtaUrl, ota.tasmota.com
	waitFor(t, "the upgrade to give up", func() bool { return len(far.Fetches()) == 4 && !far.Upgrading() })
	if e := far.Fetches()[0].Err; !strings.Contains(e, "loopback only") {
		t.Errorf("fetch off loopback: %q", e)
	}
}

func TestTasmotaSetOption128Recorded(t *testing.T) {
	t.Parallel()
	d := startTasmota(t, TasmotaConfig{})
	if a := tasCmd(t, d, "SetOption128 1"); a.body != `{"SetOption128":"ON"}` {
		t.Fatalf("%s", a)
	}
	if len(d.SetOption128()) != 1 {
		t.Fatalf("SetOption128 not recorded: %v", d.SetOption128())
	}
	if a := tasGet(t, d, "/cm?cmnd=Status%202", ""); a.status != 200 {
		t.Errorf("with SetOption128 1 the gate is open: %s", a)
	}
}

// TestTasmotaWithCurl: the family's upload as curl replays it, and the
// gate's empty reply.
func TestTasmotaWithCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	img := testImage("x", "tasmota", 0x44, 40000)
	fw := filepath.Join(t.TempDir(), "tasmota32.bin")
	if err := os.WriteFile(fw, img, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startTasmota(t, TasmotaConfig{Password: "s3cret"})
	run := func(args ...string) (string, error) {
		out, err := exec.Command(curl, append([]string{"-s", "--noproxy", "*", "--max-time", "20"}, args...)...).Output()
		return string(out), err
	}
	out, err := run(d.Base() + "/cm?cmnd=Status%200")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 52 || out != "" {
		t.Fatalf("without Referer: %q, %v; want curl's empty reply (52)", out, err)
	}
	ref := "Referer: " + d.Referer()
	if out, err := run("-u", "admin:s3cret", "-H", ref, d.Base()+"/up"); err != nil || !strings.Contains(out, "Firmware Upgrade") {
		t.Fatalf("/up: %q %v", out, err)
	}
	out, err = run("-u", "admin:s3cret", "-H", ref, "-F", "u2=@"+fw, fmt.Sprintf("%s/u2?fsz=%d", d.Base(), len(img)))
	if err != nil || !strings.Contains(out, "Successful") {
		t.Fatalf("/u2: %q %v", out, err)
	}
	waitTasBoots(t, d, 1)
}
