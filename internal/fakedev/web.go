package fakedev

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// WebFamily is one family of Arduino web uploaders (research18.md §2–§5,
// uploaders.md §2–§4, §7).
type WebFamily int

// The web uploader families.
const (
	// HTTPUpdateServer is arduino-esp32's HTTPUpdateServer, or with
	// WebConfig.ESP8266 ESP8266HTTPUpdateServer: a multipart POST /update,
	// whose answer is 200 text/html whether the update worked or not.
	HTTPUpdateServer WebFamily = iota
	// ESPEasy is ESPEasy's /update (the core's ESP8266HTTPUpdateServer on
	// an ESP8266, a pre-CSRF copy of arduino-esp32's on an ESP32, both set
	// up without credentials) and its GET /json.
	ESPEasy
	// ElegantOTA is ElegantOTA v3: GET /ota/start, then a multipart POST
	// /ota/upload; on ESPAsyncWebServer with WebConfig.Async.
	ElegantOTA
)

func (f WebFamily) String() string {
	switch f {
	case HTTPUpdateServer:
		return "HTTPUpdateServer"
	case ESPEasy:
		return "ESPEasy"
	case ElegantOTA:
		return "ElegantOTA"
	}
	return "WebFamily(" + strconv.Itoa(int(f)) + ")"
}

// EasyBuild is what an ESPEasy build tells of itself in GET /json.
type EasyBuild struct {
	// Build is the build number, written as a date ("20240822"), or 20117
	// for a build made without ESPEasy's build scripts.
	Build string
	// GitBuild is the CI release tag ("mega-20240822"), "<branch>_<commit>"
	// for a build with ESPEasy's scripts, or "(custom)".
	GitBuild string
	// BuildTime is the compiler's __DATE__ and __TIME__.
	BuildTime      string
	BinaryFilename string
}

// WebConfig describes a fake web uploader. The zero value of a knob is the
// default given with it. What the sources leave open (research18.md,
// UNCONFIRMED) is a knob, never a built-in fact.
type WebConfig struct {
	Family WebFamily
	// ESP8266: the chip is an ESP8266 (its core's Updater and web server),
	// else an ESP32.
	ESP8266 bool
	// Async: ElegantOTA on ESPAsyncWebServer (Digest challenge, routes
	// that also match longer paths, a 404 "Not found"); else the sync
	// WebServer.
	Async bool
	// User and Password: HTTPUpdateServer and ElegantOTA ask for them when
	// both are set. ESPEasy's /update never asks (StartWeb refuses them).
	User, Password string
	// OriginCheck: arduino-esp32's HTTPUpdateServer with the CSRF check of
	// PR #11530 (which releases carry it is not confirmed): the upload needs
	// Origin equal to "http://" + the Host header.
	OriginCheck bool
	// NoOptions: an ESP8266 core before 3.1.0, without the OPTIONS /update
	// route.
	NoOptions bool
	// Core274: ESP8266 core 2.7.4, which takes an image of 4096 bytes or
	// less (newer cores answer ERROR[13]).
	Core274 bool
	// CoreMaster: the ESP8266 core's git master after 3.1.2, where a second
	// /ota/start aborts the running update with ERROR[15].
	CoreMaster bool

	// SlotSize is what the device can take as firmware (free sketch space
	// less 4 KiB); default 0x13F000 (ESP32) or 1 MiB (ESP8266).
	SlotSize int64
	// FSSize is the filesystem's size; default 1 MiB.
	FSSize int64
	// RawBodyLimit is how big a body that is not multipart may be: the
	// sync servers read it whole into RAM and drop the connection without
	// an answer when it does not fit; default 16 KiB (ESP8266) or 64 KiB
	// (ESP32). The sizes are stand-ins for the free heap.
	RawBodyLimit int64

	// OTAStatus and APIStatus: the sketch adds GET /ota/status (the
	// contract's JSON: project, version, chip, elf_sha256, uptime_s) and
	// GET /api/status (firmwareVersion, uptime), telling Running. No
	// family serves either by itself.
	OTAStatus, APIStatus bool
	// Running is the app the sketch's status routes tell before an
	// upload; default project "sketch", version "1.0.0", ELF of "old".
	Running Build
	// Expect is what they tell after an accepted firmware; nil reads the
	// image's app descriptor (an image without one tells nothing).
	Expect *Build
	// Easy is what ESPEasy's /json tells before an upload; default the
	// release mega-20240822.
	Easy EasyBuild
	// EasyNext is what it tells after an accepted firmware; nil is a
	// build made without ESPEasy's scripts: Build 20117, Git Build
	// "(custom)", Binary Filename firmware.bin, built at the upload.
	EasyNext *EasyBuild
	// EasyOld: an ESPEasy before 2021, with every value quoted and no
	// "Uptime (ms)".
	EasyOld bool

	// After is what the device does after it answered success: one of
	// InstallsAndKeeps (default), NeverRestarts (ElegantOTA in a sketch
	// that never calls ElegantOTA.loop()), RollsBack (the new image dies
	// before its network is up and the old one comes back) and
	// NeverComesBack.
	After After
	// RestartDelay is between the success answer and the restart;
	// default 100 ms (HTTPUpdateServer, ESPEasy) or 2050 ms (ElegantOTA
	// restarts in loop() once 2 s passed).
	RestartDelay time.Duration
	// BootTime is how long each restart is silent; default 2.5 s.
	BootTime time.Duration
	// InitialUptime is the uptime at start; default 1 h.
	InitialUptime time.Duration
}

func (c WebConfig) withDefaults() WebConfig {
	if c.SlotSize == 0 {
		c.SlotSize = 0x140000 - 0x1000
		if c.ESP8266 {
			c.SlotSize = 1 << 20
		}
	}
	if c.FSSize == 0 {
		c.FSSize = 1 << 20
	}
	if c.RawBodyLimit == 0 {
		c.RawBodyLimit = 64 << 10
		if c.ESP8266 {
			c.RawBodyLimit = 16 << 10
		}
	}
	if c.Running == (Build{}) {
		c.Running = Build{Project: "sketch", Version: "1.0.0", ELF: ELFOf("old")}
	}
	if c.Easy == (EasyBuild{}) {
		bin := "ESP_Easy_mega_20240822_normal_ESP32_4M316k"
		if c.ESP8266 {
			bin = "ESP_Easy_mega_20240822_normal_ESP8266_4M1M"
		}
		c.Easy = EasyBuild{Build: "20240822", GitBuild: "mega-20240822", BuildTime: "Aug 22 2024 10:00:00", BinaryFilename: bin}
	}
	if c.RestartDelay == 0 {
		c.RestartDelay = 100 * time.Millisecond
		if c.Family == ElegantOTA {
			c.RestartDelay = 2050 * time.Millisecond
		}
	}
	if c.BootTime == 0 {
		c.BootTime = 2500 * time.Millisecond
	}
	if c.InitialUptime == 0 {
		c.InitialUptime = time.Hour
	}
	return c
}

// WebDevice is a running fake web uploader on 127.0.0.1.
type WebDevice struct {
	life
	cfg WebConfig
	webServer
	busy sync.Mutex // a sync web server serves one request at a time

	running  Build
	easy     EasyBuild
	bootAt   time.Time
	boots    int
	upd      updater
	authed   bool   // HTTPUpdateServer's _authenticated: kept between requests, false at boot
	hsErr    string // HTTPUpdateServer's _updaterError
	eoErr    string // ElegantOTA's _update_error_str: never cleared
	uploads  int
	starts   int
	fsImages int
}

// StartWeb starts a fake web uploader; Close stops it.
func StartWeb(cfg WebConfig) (*WebDevice, error) {
	switch {
	case cfg.Family < HTTPUpdateServer || cfg.Family > ElegantOTA:
		return nil, fmt.Errorf("unknown web family %d", cfg.Family)
	case cfg.Family == ESPEasy && (cfg.User != "" || cfg.Password != ""):
		return nil, errors.New("ESPEasy's /update takes no credentials")
	case cfg.Async && cfg.Family != ElegantOTA:
		return nil, errors.New("only ElegantOTA runs on the async web server here")
	case cfg.OriginCheck && (cfg.Family != HTTPUpdateServer || cfg.ESP8266):
		// ESP8266HTTPUpdateServer and ESPEasy's ESP32 copy have no such check.
		return nil, errors.New("only arduino-esp32's HTTPUpdateServer checks Origin")
	}
	switch cfg.After {
	case InstallsAndKeeps, NeverRestarts, RollsBack, NeverComesBack:
	default:
		return nil, fmt.Errorf("a web uploader does not model After %d", cfg.After)
	}
	cfg = cfg.withDefaults()
	d := &WebDevice{cfg: cfg, running: cfg.Running, easy: cfg.Easy,
		bootAt: time.Now().Add(-cfg.InitialUptime), life: newLife(),
		upd: updater{esp8266: cfg.ESP8266, master: cfg.CoreMaster, core274: cfg.Core274}}
	if err := d.listen(d, &d.wg); err != nil {
		return nil, err
	}
	return d, nil
}

// Port is the web server's port: uploads and reads alike.
func (d *WebDevice) Port() int { return d.p.portNumber() }

// URL is the upload URL as the family's users write it: /update, or for
// ElegantOTA the page's /update (its upload goes to /ota/upload).
func (d *WebDevice) URL() string { return fmt.Sprintf("http://127.0.0.1:%d/update", d.Port()) }

// Uploads is how many POSTs reached the upload route (/update, or
// /ota/upload), refused ones included.
func (d *WebDevice) Uploads() int { return locked(&d.mu, &d.uploads) }

// Starts is how many GET /ota/start reached an ElegantOTA device.
func (d *WebDevice) Starts() int { return locked(&d.mu, &d.starts) }

// Filesystems is how many filesystem images the device took.
func (d *WebDevice) Filesystems() int { return locked(&d.mu, &d.fsImages) }

// Running is the app the device runs now (what its sketch's status routes
// tell) and, for ESPEasy, what its /json tells.
func (d *WebDevice) Running() (Build, EasyBuild) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running, d.easy
}

// Boots is how many times the device came back from a restart.
func (d *WebDevice) Boots() int { return locked(&d.mu, &d.boots) }

// Close stops the device and waits for its goroutines.
func (d *WebDevice) Close() error { return d.closeWith(d.shut) }

func (d *WebDevice) record(what string) {
	d.logEvent(Event{What: what, Build: d.running})
}

func (d *WebDevice) creds() bool { return d.cfg.User != "" && d.cfg.Password != "" }

// ServeHTTP routes a request as the family's web server would.
func (d *WebDevice) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.p.holdIfDown(w) {
		return
	}
	if !d.cfg.Async {
		d.busy.Lock()
		defer d.busy.Unlock()
	}
	get := r.Method == http.MethodGet
	switch {
	case d.cfg.OTAStatus && get && d.route(r, "/ota/status"):
		d.otaStatus(w)
		return
	case d.cfg.APIStatus && get && d.route(r, "/api/status"):
		d.apiStatus(w)
		return
	}
	if d.cfg.Family == ElegantOTA {
		d.serveElegant(w, r)
		return
	}
	d.serveForm(w, r)
}

// route: the request's path is p; on the async server also a longer path
// under p (ESPAsyncWebServer matches "p" and "p/…").
func (d *WebDevice) route(r *http.Request, p string) bool {
	return r.URL.Path == p || d.cfg.Async && strings.HasPrefix(r.URL.Path, p+"/")
}

// notFound answers as the family's web server does when no route matches.
func (d *WebDevice) notFound(w http.ResponseWriter, r *http.Request) {
	if d.cfg.Async {
		// ESP32Async's default; me-no-dev's answers 500 with no body.
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "Not found")
		return
	}
	// ESPEasy's own 404 page is not pinned down; the Arduino one stands in.
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusNotFound)
	_, _ = io.WriteString(w, "Not found: "+r.URL.Path)
}

func (d *WebDevice) uptime() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return time.Since(d.bootAt)
}

// otaStatus is a sketch's GET /ota/status (device-contract.md §4):
// what it knows of the app it runs. An app without a descriptor tells no
// version.
func (d *WebDevice) otaStatus(w http.ResponseWriter) {
	d.mu.Lock()
	b, up := d.running, time.Since(d.bootAt)
	d.mu.Unlock()
	chip := "esp32"
	if d.cfg.ESP8266 {
		chip = "esp8266"
	}
	m := map[string]any{"chip": chip, "uptime_s": int64(up / time.Second)}
	for k, v := range map[string]string{"project": b.Project, "version": b.Version, "elf_sha256": b.ELF} {
		if v != "" {
			m[k] = v
		}
	}
	writeJSON(w, m)
}

// apiStatus is a sketch's GET /api/status in the OTS web app's words.
func (d *WebDevice) apiStatus(w http.ResponseWriter) {
	d.mu.Lock()
	b, up := d.running, time.Since(d.bootAt)
	d.mu.Unlock()
	m := map[string]any{"uptime": int64(up / time.Second)}
	if b.Version != "" {
		m["firmwareVersion"] = b.Version
	}
	writeJSON(w, m)
}

// basicOK: the request carries HTTP Basic with the configured user and
// password.
func (d *WebDevice) basicOK(r *http.Request) bool {
	a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Basic ")
	if !ok {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a))
	return err == nil && string(b) == d.cfg.User+":"+d.cfg.Password
}

// realm is the default realm of both web servers' requestAuthentication.
const realm = "Login Required"

// digestOK checks an Authorization: Digest header the way ESPAsyncWebServer
// does (research18.md §1.3): any nonce and opaque are taken, and the
// response is computed the qop=auth way.
func (d *WebDevice) digestOK(r *http.Request) bool {
	a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Digest ")
	if !ok {
		return false
	}
	p := map[string]string{}
	for _, kv := range splitParams(a) {
		k, v, _ := strings.Cut(kv, "=")
		p[strings.ToLower(strings.TrimSpace(k))] = strings.Trim(strings.TrimSpace(v), `"`)
	}
	if p["username"] != d.cfg.User || p["response"] == "" {
		return false
	}
	h := func(s string) string {
		sum := md5.Sum([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	ha1 := h(d.cfg.User + ":" + p["realm"] + ":" + d.cfg.Password)
	ha2 := h(r.Method + ":" + p["uri"])
	return p["response"] == h(ha1+":"+p["nonce"]+":"+p["nc"]+":"+p["cnonce"]+":"+p["qop"]+":"+ha2)
}

// splitParams splits a Digest header's parameters at commas outside quotes.
func splitParams(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// authOK: the request carries the configured credentials, in Basic or
// (async server only) Digest.
func (d *WebDevice) authOK(r *http.Request) bool {
	return d.basicOK(r) || d.cfg.Async && d.digestOK(r)
}

// challenge is requestAuthentication(): Basic on the sync servers, Digest
// on the async one; 401, no body.
func (d *WebDevice) challenge(w http.ResponseWriter) {
	if d.cfg.Async {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", qop="auth", nonce="%s", opaque="%s"`, realm, randHex(), randHex()))
	} else {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`"`)
	}
	w.WriteHeader(http.StatusUnauthorized)
}

func randHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// rawReply is an answer written on a hijacked connection.
type rawReply struct {
	status int
	header [][2]string
	body   string
}

func (rr rawReply) write(c net.Conn) {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", rr.status, http.StatusText(rr.status))
	for _, h := range rr.header {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(rr.body), rr.body)
	_, _ = io.WriteString(c, b.String())
}

// challengeReply is challenge() on a hijacked connection.
func (d *WebDevice) challengeReply(extra ...[2]string) rawReply {
	rr := rawReply{status: http.StatusUnauthorized, header: extra}
	if d.cfg.Async {
		rr.header = append(rr.header, [2]string{"WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", qop="auth", nonce="%s", opaque="%s"`, realm, randHex(), randHex())})
	} else {
		rr.header = append(rr.header, [2]string{"Content-Type", "text/html"}, [2]string{"WWW-Authenticate", `Basic realm="` + realm + `"`})
	}
	return rr
}

// takeUpload hijacks an upload's connection, so its body is read as the
// device reads it: no 100 Continue (neither server sends one), a
// Content-Length required. It returns nil when the body cannot be read.
func takeUpload(w http.ResponseWriter, r *http.Request) (net.Conn, io.Reader) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, nil
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil
	}
	if r.ContentLength < 0 {
		// Chunked: the Arduino servers read a Content-Length only.
		c.Close()
		return nil, nil
	}
	return c, io.LimitReader(brw.Reader, r.ContentLength)
}

// chunk is HTTP_UPLOAD_BUFLEN: the piece an upload handler gets.
func (d *WebDevice) chunk() int {
	if d.cfg.ESP8266 {
		return 2048
	}
	return 1436
}

// restartAfter plays the device's restart after a success answer: the
// new app (nil: the same one) and, for ESPEasy, the new build.
func (d *WebDevice) restartAfter(c net.Conn, next *Build, nextEasy *EasyBuild) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		wait := d.cfg.RestartDelay
		if c != nil {
			// HTTPUpdateServer: delay(100), stop the client, ESP.restart().
			first := min(wait, 100*time.Millisecond)
			d.sleep(first)
			c.Close()
			wait -= first
		}
		if d.cfg.After == NeverRestarts || !d.sleep(wait) {
			return
		}
		d.p.quiesce()
		d.mu.Lock()
		old, oldEasy := d.running, d.easy
		d.record("restart")
		d.mu.Unlock()
		if !d.sleep(d.cfg.BootTime) {
			return
		}
		up, rolled := d.newAppRuns(d.cfg.After, d.cfg.BootTime)
		if !up {
			return
		}
		if rolled {
			next, nextEasy = &old, &oldEasy
		}
		d.mu.Lock()
		if next != nil {
			d.running = *next
		}
		if nextEasy != nil {
			d.easy = *nextEasy
		}
		// A boot forgets everything but flash.
		d.bootAt, d.authed, d.hsErr, d.eoErr = time.Now(), false, "", ""
		d.upd = updater{esp8266: d.cfg.ESP8266, master: d.cfg.CoreMaster, core274: d.cfg.Core274}
		d.boots++
		d.record("up")
		d.mu.Unlock()
		d.p.resume()
	}()
}

// sleep waits t or until Close; it reports whether the device still runs.
func (d *WebDevice) sleep(t time.Duration) bool { return sleepOrDone(d.done, t) }

// installed is what the device will run after its restart once a
// firmware image was taken.
func (d *WebDevice) installed(img []byte) (*Build, *EasyBuild) {
	var b Build
	if d.cfg.Expect != nil {
		b = *d.cfg.Expect
	} else if id, err := IdentityOf(img); err == nil {
		b = id
	}
	var e *EasyBuild
	if d.cfg.Family == ESPEasy {
		if d.cfg.EasyNext != nil {
			n := *d.cfg.EasyNext
			e = &n
		} else {
			e = &EasyBuild{Build: "20117", GitBuild: "(custom)", BuildTime: time.Now().Format("Jan _2 2006 15:04:05"), BinaryFilename: "firmware.bin"}
		}
	}
	return &b, e
}

// easyJSON is ESPEasy's GET /json: the System object first, in its order,
// a value that reads as a number written bare (ESPEasy's to_json_value),
// then WiFi, Sensors and TTL.
func (d *WebDevice) easyJSON(w http.ResponseWriter) {
	d.mu.Lock()
	e, up, boots := d.easy, time.Since(d.bootAt), d.boots
	d.mu.Unlock()
	cause := "Cold Boot"
	if boots > 0 {
		cause = "Soft Reboot"
	}
	chip := "ESP32-D0WD-V3"
	if d.cfg.ESP8266 {
		chip = "ESP8266EX"
	}
	ms := int64(up / time.Millisecond)
	sys := [][2]string{
		{"Load", "12.5"}, {"Build", e.Build}, {"Git Build", e.GitBuild}, {"System Libraries", "ESP32 SDK 4.4.7"},
		{"Plugin Count", "89"}, {"Plugin Description", "[Normal]"}, {"Build Time", e.BuildTime},
		{"Binary Filename", e.BinaryFilename}, {"Local Time", "2024-10-20 10:00:00"},
		{"Unit Number", "1"}, {"Unit Name", "fake-easy"}, {"Uptime", strconv.FormatInt(ms/60000, 10)},
		{"Uptime (ms)", strconv.FormatInt(ms, 10)}, {"Last Boot Cause", cause},
		{"Reset Reason", "Software/System restart"}, {"ESP Chip Model", chip},
	}
	var b strings.Builder
	b.WriteString("{\"System\":{\n")
	first := true
	for _, kv := range sys {
		if d.cfg.EasyOld && kv[0] == "Uptime (ms)" {
			continue
		}
		if !first {
			b.WriteString(",\n")
		}
		first = false
		k, _ := json.Marshal(kv[0])
		b.Write(k)
		b.WriteByte(':')
		if _, err := strconv.ParseFloat(kv[1], 64); err == nil && !d.cfg.EasyOld {
			b.WriteString(kv[1])
		} else {
			v, _ := json.Marshal(kv[1])
			b.Write(v)
		}
	}
	b.WriteString("\n},\n\"WiFi\":{\n\"Hostname\":\"fake-easy-1\",\n\"IP Address\":\"127.0.0.1\"\n},\n\"Sensors\":[\n],\n\"TTL\":60000\n}")
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, b.String())
}

// The GET /update pages (research18.md §2–§4): two forms with an empty action
// (the second absent from ESPEasy's ESP32 copy).
const (
	formFirmware = `<!DOCTYPE html>
     <html lang='en'>
     <head>
         <meta charset='utf-8'>
         <meta name='viewport' content='width=device-width,initial-scale=1'/>
     </head>
     <body>
     <form method='POST' action='' enctype='multipart/form-data'>
         Firmware:<br>
         <input type='file' accept='.bin,.bin.gz' name='firmware'>
         <input type='submit' value='Update Firmware'>
     </form>`
	formFilesystem = `
     <form method='POST' action='' enctype='multipart/form-data'>
         FileSystem:<br>
         <input type='file' accept='%s' name='filesystem'>
         <input type='submit' value='Update FileSystem'>
     </form>`
	formEnd = `
     </body>
     </html>`
	successPage = `<META http-equiv="refresh" content="15;URL=/">Update Success! Rebooting...`
)

func (d *WebDevice) formPage() string {
	switch {
	case d.cfg.Family == ESPEasy && !d.cfg.ESP8266:
		return formFirmware + formEnd
	case d.cfg.ESP8266:
		return formFirmware + fmt.Sprintf(formFilesystem, ".bin,.bin.gz") + formEnd
	}
	return formFirmware + fmt.Sprintf(formFilesystem, ".bin,.bin.gz,.image") + formEnd
}

// serveForm is HTTPUpdateServer's routes (and ESPEasy's /json and /).
func (d *WebDevice) serveForm(w http.ResponseWriter, r *http.Request) {
	cors := d.cfg.ESP8266
	switch {
	case r.URL.Path == "/update" && r.Method == http.MethodGet:
		if d.creds() && !d.basicOK(r) {
			d.challenge(w)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, d.formPage())
	case r.URL.Path == "/update" && r.Method == http.MethodPost:
		d.formUpload(w, r)
	case r.URL.Path == "/update" && r.Method == http.MethodOptions && cors && !d.cfg.NoOptions:
		// ESP8266HTTPUpdateServer since core 3.1.0; never authenticated.
		w.Header().Set("Access-Control-Allow-Headers", "*")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "y")
	case d.cfg.Family == ESPEasy && r.URL.Path == "/json" && r.Method == http.MethodGet:
		d.easyJSON(w)
	case d.cfg.Family == ESPEasy && r.URL.Path == "/" && r.Method == http.MethodGet && r.URL.RawQuery == "":
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<!DOCTYPE html><html><head><title>fake-easy</title></head><body><h1>ESP Easy Mega: fake-easy</h1></body></html>")
	default:
		d.notFound(w, r)
	}
}

// formUpload is HTTPUpdateServer's POST /update: the upload handler runs
// for every file part as the body is parsed, the POST handler once the
// whole body was read, with the state both keep between requests.
func (d *WebDevice) formUpload(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	d.uploads++
	d.record("upload")
	d.mu.Unlock()
	c, body := takeUpload(w, r)
	if c == nil {
		return
	}
	var extra [][2]string
	if d.cfg.ESP8266 {
		extra = [][2]string{{"Access-Control-Allow-Headers", "*"}, {"Access-Control-Allow-Origin", "*"}}
	}
	var img []byte
	took, fs := false, false
	boundary, multipart := formBoundary(r.Header.Get("Content-Type"))
	if !multipart {
		// The whole body goes into RAM; what does not fit is dropped
		// with the connection, unanswered.
		if r.ContentLength > d.cfg.RawBodyLimit {
			c.Close()
			return
		}
		_, _ = io.Copy(io.Discard, body)
	} else {
		sink := formSink{
			start: func(name, _ string) {
				d.mu.Lock()
				defer d.mu.Unlock()
				d.hsErr = ""
				d.authed = !d.creds() || d.basicOK(r)
				if d.authed && d.cfg.OriginCheck && r.Header.Get("Origin") != "http://"+r.Host {
					d.authed = false
				}
				if !d.authed {
					return
				}
				fs = name == "filesystem"
				switch {
				case fs && d.cfg.Family == ESPEasy && !d.cfg.ESP8266:
					// ESPEasy's ESP32 copy leaves filesystem updates a TODO:
					// nothing begins, every write returns 0, no error.
				case fs:
					d.upd.begin(d.cfg.FSSize, true) // its error is not kept here
				case !d.upd.begin(d.cfg.SlotSize, false):
					d.hsErr = d.upd.printError()
				}
			},
			write: func(b []byte) {
				d.mu.Lock()
				defer d.mu.Unlock()
				if d.authed && d.hsErr == "" && !d.upd.write(b) {
					d.hsErr = d.upd.printError()
				}
			},
			end: func() {
				d.mu.Lock()
				defer d.mu.Unlock()
				if !d.authed || d.hsErr != "" {
					return
				}
				data := d.upd.data
				if !d.upd.end() {
					d.hsErr = d.upd.printError()
					return
				}
				took, img = true, data
			},
			abort: func() {
				d.mu.Lock()
				defer d.mu.Unlock()
				if d.authed {
					d.upd.abort()
				}
			},
		}
		if err := parseForm(body, boundary, true, d.chunk(), sink); err != nil {
			c.Close()
			return
		}
	}
	d.mu.Lock()
	authed, hasErr, words := d.authed, d.upd.hasError(), d.hsErr
	d.mu.Unlock()
	html := [2]string{"Content-Type", "text/html"}
	switch {
	case !authed && d.cfg.OriginCheck && !d.creds():
		rawReply{http.StatusOK, append(extra, html), "Update error: Wrong origin received!"}.write(c)
	case !authed:
		d.challengeReply(extra...).write(c)
	case hasErr:
		rawReply{http.StatusOK, append(extra, html), "Update error: " + words}.write(c)
	default:
		rawReply{http.StatusOK, append(extra, html), successPage}.write(c)
		var next *Build
		var nextEasy *EasyBuild
		d.mu.Lock()
		switch {
		case took && fs:
			d.fsImages++
			d.record("installed")
		case took:
			next, nextEasy = d.installed(img)
			d.record("installed")
		}
		d.mu.Unlock()
		d.restartAfter(c, next, nextEasy)
		return
	}
	c.Close()
}

// printError is what Update.printError prints now, "No Error" included.
func (u *updater) printError() string {
	switch {
	case u.err != "":
		return u.err
	case u.esp8266:
		return "ERROR[0]: No Error\n"
	}
	return "No Error\r\n"
}
