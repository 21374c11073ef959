package fakedev

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"time"
)

// A fake WLED, written from research/uploaders.md §5 and WLED's own
// sources (wled/WLED wled00/wled_server.cpp, ota_update.cpp,
// wled_metadata.{h,cpp}, json.cpp at v0.15.5 and 6d16dc2), in these words:
//
//   - POST /update is multipart on ESPAsyncWebServer: requests run
//     concurrently; the gates are checked when the first file bytes
//     arrive: the subnet (16.x only), the settings PIN, the OTA lock, each
//     a 401 "Access Denied" page; then the update begins, and a second one
//     while an update runs gets 503 with an empty body.
//   - The form field skipValidation=1 counts only when it comes before the
//     file part (it is read when the file's first bytes arrive).
//   - Without it the image must carry a WLED metadata block (magic "WSTS",
//     DJB2 hash of the release name) within METADATA_OFFSET+512 bytes
//     (256 on ESP32, 0x1000 on ESP8266) whose release name equals the
//     device's ("_V4" ignored); else 500 "Update failed!" with the reason
//     and " Enable 'Ignore firmware validation' to proceed anyway.".
//   - Success: 200 "Update successful!" "Rebooting now...", a restart
//     about 450 ms later; /json/info tells ver, vid, release, arch, uptime.

// WLEDRelease is the WLED release line a fake runs.
type WLEDRelease int

// The release lines.
const (
	// WLED16 is 16.x: the subnet gate, the release check, 503.
	WLED16 WLEDRelease = iota
	// WLED015 is 0.15.2–0.15.5: the release check and 503, no subnet gate,
	// and gzip images fail the release check (its search reads the
	// compressed bytes).
	WLED015
)

// WLEDCheck is how the fake's release check decides.
type WLEDCheck int

// The release check's knob.
const (
	// CheckImage reads the image's own WLED metadata block (WLEDMetadata
	// writes one).
	CheckImage WLEDCheck = iota
	// CheckMissing: the image carries no metadata, whatever it holds.
	CheckMissing
	// CheckMismatch: the image's release is WLEDConfig.OtherRelease.
	CheckMismatch
	// CheckOK: the image's release is the device's.
	CheckOK
)

// WLEDBuild is what a WLED build tells in /json/info.
type WLEDBuild struct {
	Ver string // "0.15.5", "16.0.1"
	// Vid is the build code, yymmddb, fixed per release.
	Vid int
	// Release is the release name ("ESP32", "ESP8266", "ESP32_V4").
	Release string
}

// WLEDConfig describes a fake WLED. The zero value of a knob is the
// default given with it.
type WLEDConfig struct {
	Release WLEDRelease
	ESP8266 bool
	// Running is the build before an upload; default 16.0.1 (or 0.15.5
	// on WLED015), release ESP32 or ESP8266.
	Running WLEDBuild
	// Next is what runs after an accepted image; nil: the image's
	// metadata version and release if it has them, else Running's, with
	// Running's vid.
	Next *WLEDBuild
	// Check decides the release check; OtherRelease is the release name
	// CheckMismatch reports (default "ESP32S3").
	Check        WLEDCheck
	OtherRelease string
	// OTALock: the OTA lock is on (401 on GET and POST /update).
	OTALock bool
	// PIN: a settings PIN is set and not entered (401).
	PIN bool
	// ForeignSubnet: the client is not on the device's subnet (16.x, no
	// PIN set: 401).
	ForeignSubnet bool
	// Busy is how many uploads find another update already running (a
	// browser's, say): each gets 503. Concurrent uploads meet a real one.
	Busy int
	// SlotSize is the free sketch space; default 0x1E0000 (ESP32) or
	// 1 MiB (ESP8266). A request longer than that fails Update.begin.
	SlotSize int64
	// After: InstallsAndKeeps (default), RollsBack or NeverComesBack.
	After After
	// RestartDelay is between the success answer and the restart; default
	// 450 ms. BootTime is how long a restart is silent; default 2.5 s.
	RestartDelay, BootTime time.Duration
	// InitialUptime is the uptime at start; default 1 h.
	InitialUptime time.Duration
	// Name is the device's name; default "WLED".
	Name string
}

func (c WLEDConfig) withDefaults() WLEDConfig {
	if c.Running == (WLEDBuild{}) {
		c.Running = WLEDBuild{Ver: "16.0.1", Vid: 2605030, Release: "ESP32"}
		if c.Release == WLED015 {
			c.Running = WLEDBuild{Ver: "0.15.5", Vid: 2504110, Release: "ESP32"}
		}
		if c.ESP8266 {
			c.Running.Release = "ESP8266"
		}
	}
	if c.OtherRelease == "" {
		c.OtherRelease = "ESP32S3"
	}
	if c.SlotSize == 0 {
		c.SlotSize = 0x1E0000
		if c.ESP8266 {
			c.SlotSize = 1 << 20
		}
	}
	if c.RestartDelay == 0 {
		c.RestartDelay = 450 * time.Millisecond
	}
	if c.BootTime == 0 {
		c.BootTime = 2500 * time.Millisecond
	}
	if c.InitialUptime == 0 {
		c.InitialUptime = time.Hour
	}
	if c.Name == "" {
		c.Name = "WLED"
	}
	return c
}

// WLEDDevice is a running fake WLED on 127.0.0.1.
type WLEDDevice struct {
	life
	cfg WLEDConfig
	webServer

	running  WLEDBuild
	bootAt   time.Time
	boots    int
	updating bool // Update.isRunning()
	busy     int
	uploads  int
	reverts  int
	skipped  int // uploads that carried skipValidation=1 before the file
}

// StartWLED starts a fake WLED; Close stops it.
func StartWLED(cfg WLEDConfig) (*WLEDDevice, error) {
	switch cfg.After {
	case InstallsAndKeeps, RollsBack, NeverComesBack:
	default:
		return nil, fmt.Errorf("a WLED does not model After %d", cfg.After)
	}
	if cfg.Release != WLED16 && cfg.Release != WLED015 {
		return nil, fmt.Errorf("unknown WLED release line %d", cfg.Release)
	}
	cfg = cfg.withDefaults()
	d := &WLEDDevice{cfg: cfg, life: newLife(), running: cfg.Running, busy: cfg.Busy,
		bootAt: time.Now().Add(-cfg.InitialUptime)}
	if err := d.listen(d, &d.wg); err != nil {
		return nil, err
	}
	return d, nil
}

// URL is its upload URL.
func (d *WLEDDevice) URL() string { return fmt.Sprintf("http://127.0.0.1:%d/update", d.Port()) }

// Uploads is how many POST /update reached the device, refused ones included.
func (d *WLEDDevice) Uploads() int { return locked(&d.mu, &d.uploads) }

// Skipped is how many uploads carried skipValidation=1 before the file.
func (d *WLEDDevice) Skipped() int { return locked(&d.mu, &d.skipped) }

// Reverts is how many GET /update?revert reached the device (a client
// must never send one).
func (d *WLEDDevice) Reverts() int { return locked(&d.mu, &d.reverts) }

// Running is the build the device runs now.
func (d *WLEDDevice) Running() WLEDBuild { return locked(&d.mu, &d.running) }

// Boots is how many times the device came back from a restart.
func (d *WLEDDevice) Boots() int { return locked(&d.mu, &d.boots) }

// Close stops the device and waits for its goroutines.
func (d *WLEDDevice) Close() error { return d.closeWith(d.shut) }

func (d *WLEDDevice) record(what string) {
	d.logEvent(Event{What: what, Build: Build{Project: "WLED", Version: d.running.Ver}})
}

// wledMessage is WLED's msg.htm with serveMessage's head and detail.
func wledMessage(w http.ResponseWriter, code int, head, sub string, option int) {
	body := head + "</h2>" + sub
	switch {
	case option < 60:
		body += fmt.Sprintf("<script>setTimeout(RS,%d)</script>", option*1000)
	case option >= 120 && option < 180:
		body += fmt.Sprintf("<script>setTimeout(RP,%d)</script>", (option-120)*1000)
	case option == 254:
		body += `<br><br><button type="button" class="bt" onclick="B()">Back</button>`
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, `<!DOCTYPE html><html lang="en"><head><meta content='width=device-width' name='viewport'><title>WLED Message</title>`+
		`<script>function B(){window.history.back()};function RS(){window.location="../settings";}function RP(){top.location.href="../";}</script>`+
		`<style>@import url("style.css");</style></head><body><h2>`+body+`</body></html>`)
}

// wledUpdatePage is data/update.htm's form: the hidden skipValidation
// input before the file input.
const wledUpdatePage = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>WLED Update</title></head><body>` +
	`<h2>WLED Software Update</h2><form method='POST' action='./update' id='upd' enctype='multipart/form-data'>` +
	`<input type='hidden' name='skipValidation' id='sV' value=''>` +
	`<input type='file' name='update' required><br><button type="submit">Update!</button></form></body></html>`

// ServeHTTP routes a request as WLED's ESPAsyncWebServer does.
func (d *WLEDDevice) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.p.holdIfDown(w) {
		return
	}
	switch {
	case r.URL.Path == "/json/info" && r.Method == http.MethodGet:
		writeJSON(w, d.info())
	case (r.URL.Path == "/json" || r.URL.Path == "/json/si") && r.Method == http.MethodGet:
		writeJSON(w, map[string]any{"state": map[string]any{"on": true, "bri": 128}, "info": d.info()})
	case r.URL.Path == "/update" && r.Method == http.MethodGet:
		if d.cfg.OTALock {
			wledMessage(w, 401, "Access Denied", "Please unlock OTA in security settings!", 254)
			return
		}
		if _, ok := r.URL.Query()["revert"]; ok {
			d.mu.Lock()
			d.reverts++
			d.record("revert")
			d.mu.Unlock()
			wledMessage(w, 500, "Rollback failed!", "Please reboot and retry.", 254)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Encoding", "gzip") // PAGE_update is stored gzipped
		_, _ = w.Write(gzipBytes([]byte(wledUpdatePage)))
	case r.URL.Path == "/update" && r.Method == http.MethodPost:
		d.upload(w, r)
	case r.URL.Path == "/" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<!DOCTYPE html><html><head><title>"+d.cfg.Name+"</title></head><body>WLED</body></html>")
	default:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "<!DOCTYPE html><html><head><title>Not found</title></head><body><h2>404 Not Found</h2></body></html>")
	}
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// info is /json/info, the facts a client verifies with.
func (d *WLEDDevice) info() map[string]any {
	d.mu.Lock()
	b, up := d.running, time.Since(d.bootAt)
	d.mu.Unlock()
	arch, core := "esp32", "v4.4.7"
	if d.cfg.ESP8266 {
		arch, core = "esp8266", "3.1.2"
	}
	m := map[string]any{
		"ver": b.Ver, "vid": b.Vid, "cn": "Kōsen", "release": b.Release, "repo": "wled/WLED",
		"name": d.cfg.Name, "udpport": 21324, "arch": arch, "core": core, "mac": "aabbcca1b2c3", "ip": "127.0.0.1",
		"uptime": int64(up / time.Second), "brand": "WLED", "product": "FOSS",
		"leds": map[string]any{"count": 30},
	}
	if d.cfg.ESP8266 {
		m["resetReason"] = "Software/System restart"
	} else {
		m["resetReason0"], m["resetReason1"] = "Software reset CPU", "Software reset CPU"
	}
	return m
}

// metadataOffset is where WLED starts looking for its block.
func (d *WLEDDevice) metadataOffset() int {
	if d.cfg.ESP8266 {
		return 0x1000
	}
	return 256
}

// errWLEDBusy: the update was refused as another one runs.
var errWLEDBusy = errors.New("busy")

// upload is POST /update: the gates and the update on the first file
// bytes, the release check once enough bytes arrived, the answer once the
// body was read.
func (d *WLEDDevice) upload(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	d.uploads++
	d.record("upload")
	d.mu.Unlock()
	var (
		skip     bool   // skipValidation=1 seen before the file
		gate     string // a 401's detail
		busy     bool
		began    bool
		checked  bool
		fail     string // the release check's or Update's words
		img      []byte
		gotFile  bool
		gz       bool // 16.x on ESP8266: a gzip image, checked at the end
		upd      updater
		complete bool
	)
	upd.esp8266 = d.cfg.ESP8266
	defer func() {
		if began {
			d.mu.Lock()
			d.updating = false
			d.mu.Unlock()
		}
	}()
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		// No file part ever arrives: no update context ran.
		_, _ = io.Copy(io.Discard, r.Body)
		wledMessage(w, 500, "Update failed!", "Internal software failure", 254)
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				d.abortUpdate(began, &upd)
				return // a broken body: the connection goes
			}
			break
		}
		if part.FileName() == "" {
			v, _ := io.ReadAll(io.LimitReader(part, 1024))
			if part.FormName() == "skipValidation" && string(v) == "1" && !gotFile {
				skip = true
			}
			continue
		}
		first := !gotFile
		gotFile = true
		buf := make([]byte, 1436)
		for index := 0; ; {
			n, rerr := part.Read(buf)
			if n > 0 || (rerr != nil && first && index == 0) {
				data := buf[:n]
				if index == 0 && first {
					gate, busy, began, fail = d.firstChunk(r, &upd)
					if skip && began {
						d.mu.Lock()
						d.skipped++
						d.mu.Unlock()
						checked = true
					}
					gz = began && d.isGzip(data)
				}
				if gate == "" && !busy && began && fail == "" {
					img = append(img, data...)
					if !checked && !gz && len(img) >= d.metadataOffset()+512 {
						checked = true
						fail = d.releaseCheck(img)
					}
					if fail == "" && !upd.write(data) {
						fail = wledUpdateError(upd.err)
					}
				}
				index += n
			}
			if rerr != nil {
				if !errors.Is(rerr, io.EOF) {
					d.abortUpdate(began, &upd)
					return
				}
				break
			}
		}
		complete = true
	}
	switch {
	case !gotFile:
		wledMessage(w, 500, "Update failed!", "Internal software failure", 254)
	case gate != "":
		wledMessage(w, 401, "Access Denied", gate, 254)
	case busy:
		w.WriteHeader(http.StatusServiceUnavailable)
	case fail != "":
		upd.abort()
		wledMessage(w, 500, "Update failed!", fail, 254)
	case !checked && gz:
		// 16.x on ESP8266: the gzip image's head is inflated and checked now.
		if f := d.gzipCheck(img); f != "" {
			upd.abort()
			wledMessage(w, 500, "Update failed!", f, 254)
			return
		}
		d.finish(w, &upd, img, complete)
	case !checked:
		upd.abort()
		wledMessage(w, 500, "Update failed!", "Release check data never arrived?", 254)
	default:
		d.finish(w, &upd, img, complete)
	}
}

// isGzip: 16.x on ESP8266 takes a gzip image (eboot inflates it at boot).
func (d *WLEDDevice) isGzip(img []byte) bool {
	return d.cfg.ESP8266 && d.cfg.Release == WLED16 && len(img) >= 2 && img[0] == 0x1F && img[1] == 0x8B
}

// gzipCheck inflates the head of a gzip image and checks its metadata.
func (d *WLEDDevice) gzipCheck(img []byte) string {
	zr, err := gzip.NewReader(bytes.NewReader(img))
	if err != nil {
		return "Invalid gzip header in OTA firmware"
	}
	head := make([]byte, d.metadataOffset()+512)
	if _, err := io.ReadFull(zr, head); err != nil {
		return "Not enough decompressed data for validation"
	}
	return d.releaseCheck(head)
}

// firstChunk runs what WLED does when a file's first bytes arrive: the
// gates, then Update.begin (503 while an update runs).
func (d *WLEDDevice) firstChunk(r *http.Request, upd *updater) (gate string, busy, began bool, fail string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.cfg.Release == WLED16 && d.cfg.ForeignSubnet && !d.cfg.PIN:
		return "Client is not on local subnet.", false, false, ""
	case d.cfg.PIN:
		return "Please unlock settings using PIN code!", false, false, ""
	case d.cfg.OTALock:
		return "Please unlock OTA in security settings!", false, false, ""
	case d.updating || d.busy > 0:
		if !d.updating {
			d.busy--
		}
		d.record("busy")
		return "", true, false, ""
	}
	size := r.ContentLength
	if size <= 0 {
		size = d.cfg.SlotSize
	}
	if size > d.cfg.SlotSize {
		upd.setError(errSpace)
		return "", false, false, wledUpdateError(upd.err)
	}
	upd.begin(size, false)
	d.updating = true
	return "", false, true, ""
}

// wledUpdateError is Update's error as WLED quotes it: errorString() on
// ESP32, getErrorString() on ESP8266, neither with printError's
// "ERROR[n]: " or line end.
func wledUpdateError(s string) string {
	s = strings.TrimRight(s, "\r\n")
	if strings.HasPrefix(s, "ERROR[") {
		if _, rest, ok := strings.Cut(s, "]: "); ok {
			s = rest
		}
	}
	return s
}

func (d *WLEDDevice) abortUpdate(began bool, upd *updater) {
	if began {
		upd.abort()
	}
}

// releaseCheck is validateOTA on the bytes received so far: "" when the
// image may go on.
func (d *WLEDDevice) releaseCheck(img []byte) string {
	const tail = " Enable 'Ignore firmware validation' to proceed anyway."
	mine := d.running.Release
	var release string
	switch d.cfg.Check {
	case CheckMissing:
		return "This firmware file is missing compatibility metadata." + tail
	case CheckMismatch:
		release = d.cfg.OtherRelease
	case CheckOK:
		release = mine
	default:
		md, ok := FindWLEDMetadata(img)
		if !ok {
			return "This firmware file is missing compatibility metadata." + tail
		}
		release = md.Release
	}
	if strings.TrimSuffix(release, "_V4") != strings.TrimSuffix(mine, "_V4") {
		return fmt.Sprintf("Firmware release name mismatch: current='%s', uploaded='%s'.", mine, release) + tail
	}
	return ""
}

// finish ends the update and answers.
func (d *WLEDDevice) finish(w http.ResponseWriter, upd *updater, img []byte, complete bool) {
	if !complete || !upd.end() {
		words := wledUpdateError(upd.err)
		if words == "" {
			words = "Internal software failure"
		}
		wledMessage(w, 500, "Update failed!", words, 254)
		return
	}
	wledMessage(w, 200, "Update successful!", "Rebooting now...", 131)
	d.mu.Lock()
	next := d.nextBuild(img)
	d.record("installed")
	d.mu.Unlock()
	d.restartInto(next)
}

// nextBuild is what the device runs after img; the caller holds mu.
func (d *WLEDDevice) nextBuild(img []byte) WLEDBuild {
	if d.cfg.Next != nil {
		return *d.cfg.Next
	}
	n := d.running
	if d.isGzip(img) {
		if zr, err := gzip.NewReader(bytes.NewReader(img)); err == nil {
			img, _ = io.ReadAll(io.LimitReader(zr, int64(d.metadataOffset()+1024)))
		}
	}
	if md, ok := FindWLEDMetadata(img); ok {
		n.Ver, n.Release = md.Version, md.Release
	}
	return n
}

// restartInto plays doReboot: silence, then the new build (or the old
// one, or nothing).
func (d *WLEDDevice) restartInto(next WLEDBuild) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if !sleepOrDone(d.done, d.cfg.RestartDelay) {
			return
		}
		d.p.quiesce()
		d.mu.Lock()
		old := d.running
		d.record("restart")
		d.mu.Unlock()
		if !sleepOrDone(d.done, d.cfg.BootTime) {
			return
		}
		up, rolled := d.newAppRuns(d.cfg.After, d.cfg.BootTime)
		if !up {
			return
		}
		if rolled {
			next = old
		}
		d.mu.Lock()
		d.running, d.bootAt = next, time.Now()
		d.boots++
		d.record("up")
		d.mu.Unlock()
		d.p.resume()
	}()
}

// WLEDMeta is a WLED metadata block's contents.
type WLEDMeta struct {
	Version, Release string
}

// The WLED metadata block (wled_metadata.h): magic, structure version,
// wled_version[48], release_name[48], DJB2 hash of the release name, the
// version it is safe to update from; packed, little-endian.
const (
	wledMetaMagic = 0x57535453
	wledMetaLen   = 4 + 4 + 48 + 48 + 4 + 3
)

func djb2(s string) uint32 {
	h := uint32(5381)
	for i := 0; i < len(s); i++ {
		h = h<<5 + h + uint32(s[i])
	}
	return h
}

// WLEDMetadata is a metadata block for version and release, as a WLED
// build embeds it, for tests to put into images.
func WLEDMetadata(version, release string) []byte {
	b := make([]byte, wledMetaLen)
	binary.LittleEndian.PutUint32(b[0:], wledMetaMagic)
	binary.LittleEndian.PutUint32(b[4:], 1)
	copy(b[8:8+47], version)
	copy(b[56:56+47], release)
	binary.LittleEndian.PutUint32(b[104:], djb2(cString(b[56:104])))
	copy(b[108:], []byte{0, 15, 2})
	return b
}

// FindWLEDMetadata finds the first valid metadata block in b (magic and
// hash both match), as findWledMetadata does.
func FindWLEDMetadata(b []byte) (WLEDMeta, bool) {
	for i := 0; i+wledMetaLen <= len(b); i++ {
		if binary.LittleEndian.Uint32(b[i:]) != wledMetaMagic {
			continue
		}
		m := b[i : i+wledMetaLen]
		rel := cString(m[56:104])
		if binary.LittleEndian.Uint32(m[104:]) != djb2(rel) {
			continue
		}
		return WLEDMeta{Version: cString(m[8:56]), Release: rel}, true
	}
	return WLEDMeta{}, false
}
