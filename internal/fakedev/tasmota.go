package fakedev

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A fake Tasmota, written from research/uploaders.md §6 and Tasmota's own
// sources (arendst/Tasmota tasmota_xdrv_driver/xdrv_01_9_webserver.ino @
// c3a66f4, tasmota_support/support_command.ino @ 325c722,
// support_tasmota.ino @ 3fb1231, language/de_DE.h), in these words:
//
//   - Privileged pages (/up, /u1, the end of /u2, /u4, /cm, /rs) need a
//     Referer naming the device at index 7 ("http://<host or ip>…"),
//     unless SetOption128 is 1; without it the handler returns and the
//     client gets nothing at all: the connection closes without a byte.
//   - With a web password, pages ask Basic auth (a bare 401 challenge, no
//     Server header) before the Referer check; /cm checks the Referer
//     first, then the Basic header, then user= and password= in the query,
//     and answers 401 JSON {"WARNING":"…"} (with the Server header).
//   - Every page built by WSContentBegin, the 404 included, carries
//     "Server: Tasmota/<version> (<hardware>)" (31 characters at most).
//   - POST /u2?fsz=N: the upload loop writes whatever the Referer or the
//     password say (only the page at its end checks them); its page is
//     200 HTML in the build's language whether it worked or not.
//   - /cm?cmnd=Backlog a;b answers {} and runs the commands one by one
//     afterwards; OtaUrl and Upgrade 1 start an upgrade the device fetches
//     itself; on ESP8266 an image too large for the free space makes it
//     fetch "<name>-minimal<ext>" instead, boot that, and fetch the full
//     image from the stored OtaUrl again; on an ESP32 safeboot layout the
//     app restarts into safeboot, which fetches the image.
//   - Status 0 tells every section (the fake: Status, StatusPRM,
//     StatusFWR, StatusMEM, StatusNET, StatusSTS); StatusFWR.Version is
//     "<version>(<image>)"; StatusMEM.Free is the free program space in
//     KiB; BootCount counts every boot.

// TasmotaBuild is a Tasmota build as Status 2 tells it.
type TasmotaBuild struct {
	Version string // "14.3.0"
	// Image is the build's image name: "tasmota", "tasmota32", "minimal",
	// "safeboot", "release-tasmota"…: Version is told as "14.3.0(tasmota)".
	Image         string
	BuildDateTime string // "2024-10-20T10:00:00"
}

func (b TasmotaBuild) versionText() string { return b.Version + "(" + b.Image + ")" }

// TasmotaConfig describes a fake Tasmota. The zero value of a knob is the
// default given with it.
type TasmotaConfig struct {
	ESP8266 bool
	// Safeboot: an ESP32 with one app partition and a factory safeboot
	// partition (Tasmota's safeboot layouts).
	Safeboot bool
	// Running is the build before an upgrade; default 14.3.0, image
	// tasmota (ESP8266) or tasmota32.
	Running TasmotaBuild
	// Next is what a full image runs; nil: Running's version and image,
	// built at the upgrade (a custom build of the same release).
	Next *TasmotaBuild
	// Password is the WebPassword (user admin); "" = none.
	Password string
	// NoRefererCheck is SetOption128 1.
	NoRefererCheck bool
	// Language is "en" (default) or "de": the pages' words and the 401
	// JSON warning are translated.
	Language string
	// Hostname; default "tasmota-A1B2C3-1234".
	Hostname string
	// SlotSize is the free sketch space running a full build; default
	// 0x7C000 on ESP8266 (a 1 MiB device whose full build does not fit
	// twice) or 0x1E0000 on ESP32. MinimalSlotSize is the free space
	// running minimal; default 0xF0000. A safeboot ESP32 takes up to
	// SlotSize into its one app partition from safeboot.
	SlotSize, MinimalSlotSize int64
	// FlashSize is the real flash size; default 4 MiB. An ESP8266 image
	// whose header asks more is refused (error 4).
	FlashSize int64
	// OtaURL is the stored OtaUrl at start; default Tasmota's own (the
	// fake never fetches but from loopback).
	OtaURL string
	// BootCount at start; default 17.
	BootCount int
	// After: InstallsAndKeeps (default), RollsBack (the new build dies and
	// the old one comes back) or NeverComesBack.
	After After
	// UpgradeDelay is between Upgrade 1 and the fetch (default 3 s, the
	// ota_state_flag countdown); RetryDelay between fetch attempts
	// (default 2 s); RestartDelay between a finished image and the
	// restart (default 2 s); BootTime how long a restart is silent
	// (default 2.5 s); BacklogDelay between Backlog commands (default
	// 200 ms, SetOption34).
	UpgradeDelay, RetryDelay, RestartDelay, BootTime, BacklogDelay time.Duration
	// LoaderDelay is between the boot of a loader build (the ESP8266's
	// minimal, an ESP32's safeboot) that carries an upgrade on and its
	// fetch; default 6 s (it sets ota_state_flag to 6, counted down once
	// a second). The upgrade runs all along: the Status tripwire is armed.
	LoaderDelay time.Duration
	// InitialUptime is the uptime at start; default 1 h.
	InitialUptime time.Duration
	// NoUptimeSec: Status 0 tells no StatusSTS.UptimeSec (whether every
	// build tells it is not confirmed).
	NoUptimeSec bool
}

func (c TasmotaConfig) withDefaults() TasmotaConfig {
	if c.Running == (TasmotaBuild{}) {
		c.Running = TasmotaBuild{Version: "14.3.0", Image: "tasmota32", BuildDateTime: "2024-10-20T10:00:00"}
		if c.ESP8266 {
			c.Running.Image = "tasmota"
		}
	}
	if c.Language == "" {
		c.Language = "en"
	}
	if c.Hostname == "" {
		c.Hostname = "tasmota-A1B2C3-1234"
	}
	if c.SlotSize == 0 {
		c.SlotSize = 0x1E0000
		if c.ESP8266 {
			c.SlotSize = 0x7C000
		}
	}
	if c.MinimalSlotSize == 0 {
		c.MinimalSlotSize = 0xF0000
	}
	if c.FlashSize == 0 {
		c.FlashSize = 4 << 20
	}
	if c.OtaURL == "" {
		c.OtaURL = "http://ota.tasmota.com/tasmota32/release/tasmota32.bin"
		if c.ESP8266 {
			c.OtaURL = "http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"
		}
	}
	if c.BootCount == 0 {
		c.BootCount = 17
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.UpgradeDelay, 3 * time.Second}, {&c.RetryDelay, 2 * time.Second}, {&c.RestartDelay, 2 * time.Second},
		{&c.BootTime, 2500 * time.Millisecond}, {&c.BacklogDelay, 200 * time.Millisecond}, {&c.InitialUptime, time.Hour},
		{&c.LoaderDelay, 6 * time.Second}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	return c
}

// TasmotaFetch is one image the device fetched by URL.
type TasmotaFetch struct {
	URL    string
	Status int   // HTTP status; 0 when no answer
	Bytes  int64 // body bytes read
	// Err is why the attempt failed ("" when the image was taken).
	Err string
}

// StatusProbe is one Status command the device got.
type StatusProbe struct {
	At      time.Time
	Command string
	// DuringUpgrade: it came while an upgrade ran (from Upgrade 1 or the
	// start of an upload until the final build was up, or given up).
	DuringUpgrade bool
}

// TasmotaDevice is a running fake Tasmota on 127.0.0.1.
type TasmotaDevice struct {
	life
	cfg TasmotaConfig
	webServer

	running   TasmotaBuild
	otaURL    string
	bootAt    time.Time
	bootCount int
	boots     int
	busy      sync.Mutex    // the sync web server: one request at a time
	settings  bool          // /rs switched /u2 to settings restore
	pending   *TasmotaBuild // an image written, run at the next boot
	upgrading bool          // an upgrade by URL runs
	uploading bool          // an upload runs, or its restart
	loader    bool          // RtcSettings.ota_loader: fetch the minimal (ESP8266) / run safeboot's fetch
	safeboot  bool          // running the safeboot partition
	so128     []string
	commands  []string
	statuses  []StatusProbe
	fetches   []TasmotaFetch
	uploads   int
	silences  int
}

// StartTasmota starts a fake Tasmota; Close stops it.
func StartTasmota(cfg TasmotaConfig) (*TasmotaDevice, error) {
	switch {
	case cfg.Safeboot && cfg.ESP8266:
		return nil, errors.New("safeboot layouts are ESP32 only")
	case cfg.Language != "" && cfg.Language != "en" && cfg.Language != "de":
		return nil, fmt.Errorf("language %q: the fake speaks en and de", cfg.Language)
	}
	switch cfg.After {
	case InstallsAndKeeps, RollsBack, NeverComesBack:
	default:
		return nil, fmt.Errorf("a Tasmota does not model After %d", cfg.After)
	}
	cfg = cfg.withDefaults()
	d := &TasmotaDevice{cfg: cfg, life: newLife(), running: cfg.Running, otaURL: cfg.OtaURL,
		bootAt: time.Now().Add(-cfg.InitialUptime), bootCount: cfg.BootCount}
	if err := d.listen(d, &d.wg); err != nil {
		return nil, err
	}
	return d, nil
}

// Base is "http://127.0.0.1:PORT".
func (d *TasmotaDevice) Base() string { return fmt.Sprintf("http://127.0.0.1:%d", d.Port()) }

// Referer is the Referer the device accepts.
func (d *TasmotaDevice) Referer() string { return d.Base() + "/" }

// Running is the build the device runs now.
func (d *TasmotaDevice) Running() TasmotaBuild { return locked(&d.mu, &d.running) }

// OtaURL is the stored OtaUrl now.
func (d *TasmotaDevice) OtaURL() string { return locked(&d.mu, &d.otaURL) }

// Boots is how many times the device came back from a restart.
func (d *TasmotaDevice) Boots() int { return locked(&d.mu, &d.boots) }

// Upgrading: an upgrade runs (the Status tripwire is armed).
func (d *TasmotaDevice) Upgrading() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.upgrading || d.uploading
}

// Uploads is how many POST /u2 reached the device.
func (d *TasmotaDevice) Uploads() int { return locked(&d.mu, &d.uploads) }

// Commands is every /cm command the device ran, Backlog's parts each on
// their own, in order.
func (d *TasmotaDevice) Commands() []string { return lockedCopy(&d.mu, &d.commands) }

// Statuses is every Status command the device got.
func (d *TasmotaDevice) Statuses() []StatusProbe { return lockedCopy(&d.mu, &d.statuses) }

// StatusDuringUpgrade is the tripwire: the Status commands that came while
// an upgrade ran. Tasmota's maintainers report that they can break the
// flash; a client must send none.
func (d *TasmotaDevice) StatusDuringUpgrade() []StatusProbe {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []StatusProbe
	for _, s := range d.statuses {
		if s.DuringUpgrade {
			out = append(out, s)
		}
	}
	return out
}

// SetOption128 is every SetOption128 (or SO128) command the device got;
// a client must never change it.
func (d *TasmotaDevice) SetOption128() []string { return lockedCopy(&d.mu, &d.so128) }

// Fetches is every image fetch by URL, in order.
func (d *TasmotaDevice) Fetches() []TasmotaFetch { return lockedCopy(&d.mu, &d.fetches) }

// Silences is how many requests the Referer gate left unanswered.
func (d *TasmotaDevice) Silences() int { return locked(&d.mu, &d.silences) }

// BootCount is StatusPRM.BootCount now.
func (d *TasmotaDevice) BootCount() int { return locked(&d.mu, &d.bootCount) }

// Close stops the device and waits for its goroutines.
func (d *TasmotaDevice) Close() error { return d.closeWith(d.shut) }

// record logs an event; the caller holds mu.
func (d *TasmotaDevice) record(what string) {
	d.logEvent(Event{What: what, Build: Build{Project: "Tasmota", Version: d.running.versionText()}})
}

func (d *TasmotaDevice) hardware() string {
	if d.cfg.ESP8266 {
		return "ESP8266EX"
	}
	return "ESP32-D0WD-V3"
}

// header is WSHeaderSend: the Server header, cut to its 32-byte buffer.
func (d *TasmotaDevice) header(w http.ResponseWriter) {
	d.mu.Lock()
	v := d.running.Version
	d.mu.Unlock()
	s := "Tasmota/" + v + " (" + d.hardware() + ")"
	if len(s) > 31 {
		s = s[:31]
	}
	w.Header().Set("Server", s)
	w.Header().Set("Cache-Control", "no-cache, no-store, must-revalidate")
}

// words are the translated texts the fake's pages use (language/*.h).
type tasWords struct {
	upload, failed, successful, notFound, needUser, restart string
	errs                                                    [10]string
}

var tasLanguages = map[string]tasWords{
	"en": {upload: "Upload", failed: "Failed", successful: "Successful", notFound: "File Not Found",
		needUser: "Need user=<username>&password=<password>", restart: "Device will restart in a few seconds",
		errs: [10]string{"", "No file selected", "Not enough space", "Magic byte is not 0xE9", "Program flash size is larger than real flash size",
			"Upload buffer miscompare", "Upload failed. Enable logging 3", "Upload aborted", "File invalid", "File too large"}},
	"de": {upload: "Upload", failed: "fehlgeschlagen", successful: "erfolgreich", notFound: "Datei nicht gefunden",
		needUser: "Benötige user=<Benutzername>&password=<Passwort>", restart: "Gerät wird jetzt neu gestartet",
		errs: [10]string{"", "keine Datei ausgewählt", "ungenügend Speicherplatz", "magic byte ist nicht 0xE9",
			"Flash-Größe des Programmes ist größer als der reale Flashspeicher", "Upload-buffer-Vergleich weicht ab",
			"Upload fehlgeschlagen. Aktiviere logging 3", "Upload abgebrochen", "Datei ungültig", "Datei zu groß"}},
}

func (d *TasmotaDevice) words() tasWords { return tasLanguages[d.cfg.Language] }

// ServeHTTP routes a request as Tasmota's web server does: one request at
// a time (the sync ESP8266WebServer).
func (d *TasmotaDevice) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.p.holdIfDown(w) {
		return
	}
	d.busy.Lock()
	defer d.busy.Unlock()
	switch {
	case r.URL.Path == "/":
		if r.URL.Query().Has("rst") {
			if !d.pageAuth(w, r) {
				return
			}
			d.page(w, "Restart", "<div>"+d.words().restart+"</div>")
			d.restartLater(nil)
			return
		}
		if !d.pageAuth(w, r) {
			return
		}
		d.page(w, "Main Menu", "<form action='up' method='get'><button>Firmware Upgrade</button></form>")
	case r.URL.Path == "/up":
		if !d.privileged(w, r, true) {
			return
		}
		d.mu.Lock()
		d.settings = false
		ota := d.otaURL
		d.mu.Unlock()
		d.page(w, "Firmware Upgrade", "<form method='get' action='u1'><input id='o' placeholder=\"OTA_URL\" value=\""+
			ota+"\"><button type='submit'>Start upgrade</button></form>"+
			"<form method='post' action='u2' enctype='multipart/form-data'><input type='file' name='u2'><button type='submit'>Start upgrade</button></form>")
	case r.URL.Path == "/rs":
		if !d.privileged(w, r, true) {
			return
		}
		d.mu.Lock()
		d.settings = true
		d.mu.Unlock()
		d.page(w, "Restore Configuration", "<form method='post' action='u2' enctype='multipart/form-data'><input type='file' name='u2'></form>")
	case r.URL.Path == "/u1":
		if !d.privileged(w, r, true) {
			return
		}
		if o := r.URL.Query().Get("o"); o != "" {
			d.command("OtaUrl " + o)
		}
		d.page(w, "Information", "<div><b>Upgrade started ...</b></div>")
		d.command("Upgrade 1")
	case r.URL.Path == "/u2" && r.Method == http.MethodPost:
		d.upload(w, r)
	case r.URL.Path == "/u2" && r.Method == http.MethodOptions:
		w.Header().Set("Access-Control-Allow-Methods", "GET, POST")
		w.Header().Set("Access-Control-Allow-Headers", "authorization")
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/u4" && !d.cfg.ESP8266 && r.Method == http.MethodGet:
		d.switchPartition(w, r)
	case r.URL.Path == "/cm":
		d.httpCommand(w, r)
	default:
		d.notFound(w, r)
	}
}

// notFound is HandleNotFound: 404 text/plain through WSContentBegin, so
// with the Server header, and with no password asked.
func (d *TasmotaDevice) notFound(w http.ResponseWriter, r *http.Request) {
	d.header(w)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusNotFound)
	method := "GET"
	if r.Method != http.MethodGet {
		method = "POST"
	}
	q := r.URL.Query()
	fmt.Fprintf(w, "%s\n\nURI: %s\nMethod: %s\nArguments: %d\n", d.words().notFound, r.URL.Path, method, len(q))
}

// page is a 200 HTML page through WSContentStart: the Server header.
func (d *TasmotaDevice) page(w http.ResponseWriter, title, body string) {
	d.header(w)
	w.Header().Set("Content-Type", "text/html")
	d.mu.Lock()
	v := d.running.versionText()
	d.mu.Unlock()
	_, _ = io.WriteString(w, "<!DOCTYPE html><html lang=\""+d.cfg.Language+"\" class=\"\"><head><meta charset='utf-8'><title>"+
		d.cfg.Hostname+" - "+title+"</title></head><body><div style='text-align:center;'><h3>Tasmota</h3><h2>"+d.cfg.Hostname+"</h2></div>"+
		body+"<div style='text-align:right;font-size:11px;'><hr/>Tasmota "+v+" by Theo Arends</div></body></html>")
}

// basicOK: the request carries admin and the web password in Basic.
func (d *TasmotaDevice) basicOK(r *http.Request) bool {
	u, p, ok := r.BasicAuth()
	return ok && u == "admin" && p == d.cfg.Password
}

// pageAuth is WebAuthenticate with requestAuthentication: a bare 401
// challenge, no Server header.
func (d *TasmotaDevice) pageAuth(w http.ResponseWriter, r *http.Request) bool {
	if d.cfg.Password == "" || d.basicOK(r) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="Login Required"`)
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, "401 Unauthorized")
	return false
}

// refererOK is the Referer gate: the upper-cased Referer has the host name
// or the address at index 7.
func (d *TasmotaDevice) refererOK(r *http.Request) bool {
	if d.cfg.NoRefererCheck {
		return true
	}
	ref := strings.ToUpper(r.Header.Get("Referer"))
	return ref != "" && (strings.Index(ref, strings.ToUpper(d.cfg.Hostname)) == 7 || strings.Index(ref, "127.0.0.1") == 7)
}

// silent is the gate's answer: nothing; the connection closes.
func (d *TasmotaDevice) silent(w http.ResponseWriter) {
	d.mu.Lock()
	d.silences++
	d.record("silence")
	d.mu.Unlock()
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// privileged is HttpCheckPriviledgedAccess: the password first (when
// auth), then the Referer.
func (d *TasmotaDevice) privileged(w http.ResponseWriter, r *http.Request, auth bool) bool {
	if auth && !d.pageAuth(w, r) {
		return false
	}
	if !d.refererOK(r) {
		d.silent(w)
		return false
	}
	return true
}

// httpCommand is HandleHttpCommand: the Referer, then the Basic header or
// user and password in the query, then the command.
func (d *TasmotaDevice) httpCommand(w http.ResponseWriter, r *http.Request) {
	if !d.privileged(w, r, false) {
		return
	}
	q := r.URL.Query()
	if d.cfg.Password != "" && !d.basicOK(r) && !(q.Get("user") == "admin" && q.Get("password") == d.cfg.Password) {
		d.header(w)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, jsonOf(map[string]string{"WARNING": d.words().needUser}))
		return
	}
	d.header(w)
	w.Header().Set("Content-Type", "application/json")
	cmnd := q.Get("cmnd")
	if cmnd == "" {
		_, _ = io.WriteString(w, `{"WARNING":"Enter command cmnd="}`)
		return
	}
	_, _ = io.WriteString(w, d.command(cmnd))
}

// command runs one command line and gives its JSON answer.
func (d *TasmotaDevice) command(line string) string {
	line = strings.TrimSpace(line)
	word, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	upper := strings.ToUpper(word)
	if upper != "BACKLOG" && !strings.HasPrefix(upper, "BACKLOG") {
		d.mu.Lock()
		d.commands = append(d.commands, line)
		d.mu.Unlock()
	}
	switch {
	case strings.HasPrefix(upper, "BACKLOG"):
		var cmds []string
		for _, c := range strings.Split(arg, ";") {
			if c = strings.TrimSpace(c); c != "" {
				cmds = append(cmds, c)
			}
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			for _, c := range cmds {
				if !sleepOrDone(d.done, d.cfg.BacklogDelay) {
					return
				}
				d.command(c)
			}
		}()
		return "{}"
	case strings.HasPrefix(upper, "STATUS"):
		n := strings.TrimPrefix(upper, "STATUS")
		if n == "" {
			n = arg
		}
		d.mu.Lock()
		d.statuses = append(d.statuses, StatusProbe{At: time.Now(), Command: line, DuringUpgrade: d.upgrading || d.uploading})
		d.mu.Unlock()
		return d.status(n)
	case upper == "OTAURL":
		d.mu.Lock()
		defer d.mu.Unlock()
		if arg != "" {
			d.otaURL = arg
		}
		return jsonOf(map[string]string{"OtaUrl": d.otaURL})
	case upper == "UPGRADE":
		d.mu.Lock()
		defer d.mu.Unlock()
		if arg != "1" {
			return jsonOf(map[string]string{"Upgrade": "Option 1 or >" + d.running.Version + " to upgrade"})
		}
		ans := jsonOf(map[string]string{"Upgrade": "Version " + d.running.Version + " from " + d.otaURL})
		if !d.upgrading {
			d.upgrading = true
			d.record("upgrade")
			d.wg.Add(1)
			go d.upgrade(d.cfg.UpgradeDelay)
		}
		return ans
	case upper == "SETOPTION128" || upper == "SO128":
		d.mu.Lock()
		defer d.mu.Unlock()
		d.so128 = append(d.so128, line)
		if arg == "1" || strings.EqualFold(arg, "on") {
			d.cfg.NoRefererCheck = true
		} else if arg == "0" || strings.EqualFold(arg, "off") {
			d.cfg.NoRefererCheck = false
		}
		state := "OFF"
		if d.cfg.NoRefererCheck {
			state = "ON"
		}
		return jsonOf(map[string]string{"SetOption128": state})
	case upper == "RESTART" && arg == "1":
		d.restartLater(nil)
		return `{"Restart":"Restarting"}`
	}
	return `{"Command":"Unknown"}`
}

// jsonOf writes v as Tasmota does: '<', '>' and '&' as they are.
func jsonOf(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return strings.TrimSuffix(b.String(), "\n")
}

// uptime is Tasmota's "<days>T<hh>:<mm>:<ss>".
func uptimeText(d time.Duration) string {
	s := int64(d / time.Second)
	return fmt.Sprintf("%dT%02d:%02d:%02d", s/86400, s/3600%24, s/60%60, s%60)
}

// status is Status n: n "0" every section, else the one asked; "" the
// Status section alone.
func (d *TasmotaDevice) status(n string) string {
	d.mu.Lock()
	b, up, boots, ota, free := d.running, time.Since(d.bootAt), d.bootCount, d.otaURL, d.freeSpace()
	d.mu.Unlock()
	reason := "Software/System restart"
	sections := []struct {
		n, key string
		v      any
	}{
		{"", "Status", map[string]any{"Module": 1, "DeviceName": "Tasmota", "FriendlyName": []string{"Tasmota"}, "Topic": "tasmota_A1B2C3", "Power": "0"}},
		{"1", "StatusPRM", map[string]any{"Baudrate": 115200, "SerialConfig": "8N1", "GroupTopic": "tasmotas", "OtaUrl": ota,
			"RestartReason": reason, "Uptime": uptimeText(up), "StartupUTC": time.Now().Add(-up).UTC().Format("2006-01-02T15:04:05"),
			"Sleep": 50, "CfgHolder": 4617, "BootCount": boots, "BCResetTime": "2024-10-20T10:00:00", "SaveCount": 120}},
		{"2", "StatusFWR", d.fwr(b)},
		{"4", "StatusMEM", map[string]any{"ProgramSize": 600, "Free": free / 1024, "Heap": 25, "ProgramFlashSize": d.cfg.FlashSize / 1024,
			"FlashSize": d.cfg.FlashSize / 1024, "FlashChipId": "1640EF", "FlashFrequency": 40, "FlashMode": "DOUT"}},
		{"5", "StatusNET", map[string]any{"Hostname": d.cfg.Hostname, "IPAddress": "127.0.0.1", "Mac": "AA:BB:CC:A1:B2:C3", "Webserver": 2,
			"HTTP_API": boolInt(d.cfg.NoRefererCheck)}},
		{"11", "StatusSTS", d.sts(up)},
	}
	var parts []string
	for _, s := range sections {
		if n == "0" || n == s.n {
			parts = append(parts, fmt.Sprintf("%q:%s", s.key, jsonOf(s.v)))
		}
	}
	if len(parts) == 0 {
		return `{"Command":"Error"}`
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (d *TasmotaDevice) fwr(b TasmotaBuild) map[string]any {
	m := map[string]any{"Version": b.versionText(), "BuildDateTime": b.BuildDateTime, "Core": "3_1_0", "SDK": "5.3.1",
		"CpuFrequency": 160, "Hardware": d.hardware(), "CR": "380/699"}
	if d.cfg.ESP8266 {
		m["BootVersion"], m["Core"], m["SDK"], m["CpuFrequency"] = 31, "2_7_8", "2.2.2-dev(38a443e)", 80
	}
	return m
}

func (d *TasmotaDevice) sts(up time.Duration) map[string]any {
	m := map[string]any{"Time": time.Now().UTC().Format("2006-01-02T15:04:05"), "Uptime": uptimeText(up), "Heap": 25, "SleepMode": "Dynamic",
		"Sleep": 50, "LoadAvg": 19, "MqttCount": 0, "Wifi": map[string]any{"AP": 1, "SSId": "fake", "RSSI": 80}}
	if !d.cfg.NoUptimeSec {
		m["UptimeSec"] = int64(up / time.Second)
	}
	return m
}

// upload is POST /u2: HandleUploadLoop on every part as it arrives (no
// Referer or password check), then HandleUploadDone's page.
func (d *TasmotaDevice) upload(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	d.uploads++
	d.record("upload")
	settings, safeboot := d.settings, d.safeboot
	d.mu.Unlock()
	fsz, _ := strconv.ParseInt(r.URL.Query().Get("fsz"), 10, 64)
	errCode := 0
	var written int64
	var first []byte
	took := false
	began := false
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err == nil && params["boundary"] != "" {
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					panic(http.ErrAbortHandler) // a broken body
				}
				break
			}
			if _, ok := contentDisposition(part); !ok {
				_, _ = io.Copy(io.Discard, part)
				continue
			}
			// UPLOAD_FILE_START.
			errCode, written, first, began = 0, 0, nil, false
			d.mu.Lock()
			d.uploading = true
			d.mu.Unlock()
			if part.FileName() == "" {
				errCode = 1
			}
			buf := make([]byte, 2048)
			for {
				n, rerr := part.Read(buf)
				if n > 0 && errCode == 0 {
					if written == 0 {
						first = append([]byte(nil), buf[:n]...)
						errCode = d.firstBlock(first, fsz, settings, safeboot)
						began = errCode == 0
					}
					if errCode == 0 {
						if written+int64(n) > d.maxSketch() {
							errCode = 2
						}
						written += int64(n)
					}
				}
				if rerr != nil {
					if !errors.Is(rerr, io.EOF) {
						panic(http.ErrAbortHandler)
					}
					break
				}
			}
			// UPLOAD_FILE_END.
			if errCode == 0 && began && settings {
				errCode = 8 // a firmware image is no settings file
			}
			if errCode == 0 && began {
				took = true
			}
		}
	}
	if took {
		// Update.end(true): the image runs at the next boot, whoever asks
		// for it.
		d.mu.Lock()
		n := d.nextFor(false)
		d.pending = &n
		d.record("installed")
		d.mu.Unlock()
	}
	// HandleUploadDone: the password, the Referer, then the page.
	if !d.privileged(w, r, true) {
		d.uploadOver()
		return
	}
	wd := d.words()
	if !took {
		if errCode == 0 {
			errCode = 1
		}
		d.page(w, "Information", "<div style='text-align:center;'><b>"+wd.upload+" <font color='#d43535'>"+wd.failed+
			"</font></b><br><br>"+wd.errs[errCode]+"</div><br>")
		d.uploadOver()
		return
	}
	d.page(w, "Information", "<div style='text-align:center;'><b>"+wd.upload+" <font color='#47c266'>"+wd.successful+
		"</font></b><br><br><div style='text-align:center;'>"+wd.restart+"</div></div><br>")
	d.restartLater(nil)
}

// contentDisposition: the part is a file part of the form (it has a
// filename parameter, empty or not).
func contentDisposition(p *multipart.Part) (string, bool) {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return "", false
	}
	f, ok := params["filename"]
	return f, ok
}

// maxSketch is what Update.begin reserved: the free space less 4 KiB.
func (d *TasmotaDevice) maxSketch() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return (d.freeSpace() - 0x1000) &^ 0xFFF
}

// freeSpace is the free sketch space for the build running; the caller
// holds mu.
func (d *TasmotaDevice) freeSpace() int64 {
	if d.cfg.ESP8266 && d.running.Image == "minimal" {
		return d.cfg.MinimalSlotSize
	}
	return d.cfg.SlotSize
}

// firstBlock checks the first block of a firmware upload.
func (d *TasmotaDevice) firstBlock(b []byte, fsz int64, settings, safeboot bool) int {
	if settings {
		return 0
	}
	switch {
	case b[0] != 0xE9 && b[0] != 0x1F:
		return 3
	case d.cfg.Safeboot && !safeboot:
		// One app partition, and it runs: Update.begin finds no other.
		return 2
	case !d.cfg.ESP8266 && b[0] == 0x1F:
		// No gzip on ESP32: the first flush fails, Update.write with it.
		return 2
	case b[0] == 0xE9 && d.cfg.ESP8266 && len(b) > 3 && esp8266FlashSize(b[3]>>4) > d.cfg.FlashSize:
		return 4
	case b[0] == 0xE9 && !d.cfg.ESP8266 && fsz > d.cfg.SlotSize:
		return 4
	}
	return 0
}

// esp8266FlashSize is ESP.magicFlashChipSize of an image header's size
// nibble.
func esp8266FlashSize(n byte) int64 {
	switch n {
	case 0:
		return 512 << 10
	case 1:
		return 256 << 10
	case 2:
		return 1 << 20
	case 3:
		return 2 << 20
	case 4:
		return 4 << 20
	case 8:
		return 8 << 20
	case 9:
		return 16 << 20
	}
	return 0
}

// nextFor is the build an image brings; the caller holds mu.
func (d *TasmotaDevice) nextFor(minimal bool) TasmotaBuild {
	n := d.running
	if d.cfg.Next != nil {
		n = *d.cfg.Next
	} else {
		n.BuildDateTime = time.Now().UTC().Format("2006-01-02T15:04:05")
		if n.Image == "minimal" || n.Image == "safeboot" {
			n.Image = d.cfg.Running.Image
		}
	}
	if minimal {
		n.Image = "minimal"
	}
	return n
}

// uploadOver: an upload ended with no restart to follow (failed, or its
// page withheld); an image it wrote waits for the next boot.
func (d *TasmotaDevice) uploadOver() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.uploading = false
}

// switchPartition is /u4 (ESP32): u4=fct in api mode answers false and
// restarts into safeboot, true when safeboot runs, none without one.
func (d *TasmotaDevice) switchPartition(w http.ResponseWriter, r *http.Request) {
	if !d.privileged(w, r, true) {
		return
	}
	q := r.URL.Query()
	d.mu.Lock()
	safeboot := d.safeboot
	d.settings = false
	d.mu.Unlock()
	plain := func(s string) {
		d.header(w)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, s)
	}
	switch {
	case q.Get("u4") == "fct" && d.cfg.Safeboot && !safeboot:
		plain("false")
		b := d.Running()
		d.restartLater(&TasmotaBuild{Version: b.Version, Image: "safeboot", BuildDateTime: b.BuildDateTime})
	case !d.cfg.Safeboot:
		plain("none")
	default:
		plain("true")
	}
}

// restartLater restarts the device after RestartDelay into into (nil:
// the pending image if one was written, else the build that runs).
func (d *TasmotaDevice) restartLater(into *TasmotaBuild) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if !sleepOrDone(d.done, d.cfg.RestartDelay) {
			return
		}
		d.restart(into)
	}()
}

// restart plays one restart: silence, then the next build boots. A
// safeboot that was asked to fetch does it after its boot; a minimal
// booted by the two-step fetches the full image.
func (d *TasmotaDevice) restart(into *TasmotaBuild) {
	d.p.quiesce()
	d.mu.Lock()
	old := d.running
	next := old
	if into != nil {
		next = *into
	} else if d.pending != nil {
		next = *d.pending
	}
	d.pending = nil
	d.record("restart")
	d.mu.Unlock()
	if !sleepOrDone(d.done, d.cfg.BootTime) {
		return
	}
	final := next.Image != "minimal" && next.Image != "safeboot"
	if final && next != old {
		up, rolled := d.newAppRuns(d.cfg.After, d.cfg.BootTime)
		if !up {
			return
		}
		if rolled {
			next = old
		}
	}
	d.mu.Lock()
	d.running, d.bootAt = next, time.Now()
	d.safeboot = next.Image == "safeboot"
	d.bootCount++
	d.boots++
	d.settings = false
	loader := d.loader
	propagate := loader && !final
	if !propagate {
		d.loader = false
		d.upgrading = false
	}
	d.uploading = false
	d.record("up")
	d.mu.Unlock()
	d.p.resume()
	if propagate {
		// RtcSettings.ota_loader survived the restart: the minimal (or
		// safeboot) build fetches the image from the stored OtaUrl.
		d.wg.Add(1)
		go d.upgrade(d.cfg.LoaderDelay)
	}
}

// OTA attempts (OTA_ATTEMPTS): the counter starts at 5 and an attempt
// runs while it stays above 0 after its decrement.
const tasOTAAttempts = 5

// upgrade is the ota_state_flag machine after Upgrade 1 (or after a boot
// that propagates one): fetch OtaUrl, on ESP8266 the minimal image when
// the full one does not fit, retry, then restart into what it got.
func (d *TasmotaDevice) upgrade(delay time.Duration) {
	defer d.wg.Done()
	if !sleepOrDone(d.done, delay) {
		return
	}
	counter := tasOTAAttempts
	for {
		counter--
		if counter <= 0 {
			d.mu.Lock()
			d.upgrading, d.loader = false, false
			d.record("upgrade-failed")
			d.mu.Unlock()
			return
		}
		d.mu.Lock()
		u := d.otaURL
		running := d.running
		if d.cfg.Safeboot && !d.safeboot {
			// One app partition: restart into safeboot, which fetches.
			d.loader = true
			d.mu.Unlock()
			d.restart(&TasmotaBuild{Version: running.Version, Image: "safeboot", BuildDateTime: running.BuildDateTime})
			return
		}
		minimal := d.cfg.ESP8266 && d.loader && running.Image != "minimal"
		free := d.freeSpace()
		d.mu.Unlock()
		if minimal {
			u = minimalURL(u)
		}
		if d.cfg.ESP8266 && counter < tasOTAAttempts/2 {
			if strings.Contains(strings.ToLower(u), ".gz") {
				counter = 1
			} else {
				u += ".gz"
			}
		}
		f, tooBig := d.fetch(u, free)
		d.mu.Lock()
		d.fetches = append(d.fetches, f)
		if f.Err == "" {
			n := d.nextFor(minimal)
			d.pending = &n
			d.loader = minimal
			d.record("installed")
			d.mu.Unlock()
			if !sleepOrDone(d.done, d.cfg.RestartDelay) {
				return
			}
			d.restart(nil)
			return
		}
		if tooBig && d.cfg.ESP8266 && running.Image != "minimal" {
			d.loader = true // try the minimal image next
		}
		d.mu.Unlock()
		if !sleepOrDone(d.done, d.cfg.RetryDelay) {
			return
		}
	}
}

// minimalURL is Tasmota's rewrite: in the file name after the last '/',
// drop from the last '-' (or the first '.') and add "-minimal" before the
// file type.
func minimalURL(u string) string {
	slash := strings.LastIndex(u, "/")
	name := u[slash+1:]
	ext := ""
	if i := strings.Index(name, "."); i >= 0 {
		name, ext = name[:i], name[i:]
	}
	if i := strings.LastIndex(name, "-"); i >= 0 {
		name = name[:i]
	}
	return u[:slash+1] + name + "-minimal" + ext
}

// Why updaterGet refuses a URL before any request.
var (
	errNotHTTP     = errors.New("not an http URL")
	errNotLoopback = errors.New("not on loopback")
)

// updaterGet is the GET of the Arduino HTTP updaters (ESP8266httpUpdate,
// HTTPUpdate) as a fake makes it: http on loopback only (a fake never
// reaches the network), no proxy, no redirect followed, one connection,
// the device's User-Agent and x-<chip>-* headers. It is cut when done
// closes or after timeout; stop closes the body and ends it.
func updaterGet(done <-chan struct{}, u string, timeout time.Duration, chip string, hdr map[string]string) (resp *http.Response, stop func(), err error) {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "http" {
		return nil, nil, errNotHTTP
	}
	if ip := net.ParseIP(pu.Hostname()); ip == nil || !ip.IsLoopback() {
		return nil, nil, errNotLoopback
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("User-Agent", chip+"-http-Update")
	for k, v := range hdr {
		req.Header.Set("x-"+chip+"-"+k, v)
	}
	c := http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = c.Do(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return resp, func() { resp.Body.Close(); cancel() }, nil
}

// fetch is ESPhttpUpdate.update: GET with the device's headers; 200,
// Content-Length, room for it, the magic byte and the x-MD5 when sent.
// Only loopback is fetched: a fake never reaches the network.
func (d *TasmotaDevice) fetch(u string, free int64) (f TasmotaFetch, tooBig bool) {
	f.URL = u
	chip := "ESP32"
	if d.cfg.ESP8266 {
		chip = "ESP8266"
	}
	d.mu.Lock()
	ver := d.running.Version + "(" + d.running.Image + ")"
	d.mu.Unlock()
	resp, stop, err := updaterGet(d.done, u, 30*time.Second, chip, map[string]string{"STA-MAC": "AA:BB:CC:A1:B2:C3", "AP-MAC": "AA:BB:CC:A1:B2:C4",
		"free-space": strconv.FormatInt(free, 10), "sketch-size": "600000", "chip-size": strconv.FormatInt(d.cfg.FlashSize, 10),
		"sdk-version": "fake", "mode": "sketch", "version": ver})
	switch {
	case errors.Is(err, errNotHTTP):
		f.Err = "unsupported protocol"
		return f, false
	case errors.Is(err, errNotLoopback):
		f.Err = "connection failed: the fake fetches from loopback only"
		return f, false
	case err != nil:
		f.Err = "connection failed"
		return f, false
	}
	defer stop()
	defer resp.Body.Close()
	f.Status = resp.StatusCode
	switch {
	case resp.StatusCode != http.StatusOK:
		f.Err = fmt.Sprintf("wrong HTTP code %d", resp.StatusCode)
		return f, false
	case resp.ContentLength <= 0:
		f.Err = "server did not report size"
		return f, false
	case resp.ContentLength > free:
		f.Err = "not enough space"
		return f, true
	}
	h := md5.New()
	first := make([]byte, 4)
	n, _ := io.ReadFull(resp.Body, first)
	h.Write(first[:n])
	m, err := io.Copy(h, resp.Body)
	f.Bytes = int64(n) + m
	switch {
	case err != nil || f.Bytes != resp.ContentLength:
		f.Err = "stream read timeout"
	case n == 0 || first[0] != 0xE9 && !(d.cfg.ESP8266 && n > 1 && first[0] == 0x1F && first[1] == 0x8B):
		f.Err = "magic byte is not 0xE9"
	case d.cfg.ESP8266 && first[0] == 0xE9 && n > 3 && esp8266FlashSize(first[3]>>4) > d.cfg.FlashSize:
		f.Err = "bin for wrong flash size"
		return f, true
	case resp.Header.Get("x-MD5") != "" && !strings.EqualFold(resp.Header.Get("x-MD5"), hex.EncodeToString(h.Sum(nil))):
		f.Err = "MD5 check failed"
	}
	return f, false
}
