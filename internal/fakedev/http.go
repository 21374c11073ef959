package fakedev

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Field names one fact of GET /ota/status, for HTTPConfig.Omit.
type Field uint

// The fields that may be left out of /ota/status (docs/firmware.md §2:
// every field is optional).
const (
	FieldVersion Field = 1 << iota
	FieldELF
	FieldState
	FieldUptime
	FieldChip
	FieldProject
	FieldSlotSize
)

// After is what a device runs after it accepted an upload.
type After int

// The behaviours after an upload.
const (
	// InstallsAndKeeps: restarts into the new image, pending_verify for
	// PendingFor, then valid.
	InstallsAndKeeps After = iota
	// NeverRestarts: answers as told but keeps running the old image and
	// never restarts.
	NeverRestarts
	// RollsBack: restarts into the new image, which crashes before it is
	// marked valid; the bootloader goes back to Running.
	RollsBack
	// FallsToThird: as RollsBack, but the device comes back on Third (a
	// factory app).
	FallsToThird
	// CrashLoopsThenOld: the new image comes up CrashLoops times and
	// crashes each time, then the device comes back on Running.
	CrashLoopsThenOld
	// PendingThenOld: the new image runs, pending_verify, for PendingFor;
	// then the device restarts and comes back on Running.
	PendingThenOld
	// RunsForeign: comes back on Foreign, a build that carries the new
	// version string but another ELF.
	RunsForeign
	// NeverComesBack: restarts and stays silent.
	NeverComesBack
)

// Answer is how a device answers an upload.
type Answer int

// The answers.
const (
	// AnswerNormal: 200 with SuccessText once the whole image was taken
	// and checked.
	AnswerNormal Answer = iota
	// AnswerLost: takes the whole image, installs it and resets the
	// connection at once, with no answer (then restarts as After says).
	AnswerLost
	// AnswerEarly: 200 right after the headers; then it reads no more of
	// the body, installs nothing and never restarts. The connection is
	// held for EarlyHold, then reset.
	AnswerEarly
	// AnswerFailurePage: 200 text/html with FailurePage as the body once
	// the whole image was taken, as arduino's HTTPUpdateServer answers
	// every result (device-contract.md §6). Then it does what After says:
	// NeverRestarts for a device that meant it, InstallsAndKeeps for one
	// whose page lied.
	AnswerFailurePage
)

// HTTPConfig describes a fake HTTP OTA device (device-contract.md §2–§5,
// docs/firmware.md). The zero value of a knob is the default given with it.
type HTTPConfig struct {
	// Running is the image the device runs before the upload. Default:
	// project "ots-fw-main", version "1.0.0", ELF of "old".
	Running Build
	// Third is the factory app FallsToThird lands on. Default: Running's
	// project, version "0.9.0", ELF of "factory".
	Third Build
	// Foreign is what RunsForeign runs. Default: the uploaded image's
	// version and project with the ELF of "foreign".
	Foreign Build
	// Expect, when set, is the identity of the image the device will
	// receive; nil reads it from the image's app descriptor.
	Expect *Build
	// Chip is the chip /ota/status tells; default "esp32s3".
	Chip string
	// SlotSize is the update slot's size; default 2 MiB. Writing past it
	// fails with 500 "Write failed".
	SlotSize int64

	After  After
	Answer Answer
	// Token, when set, is the Bearer secret POST /update requires (401
	// "Authentication required" without it, 403 "Invalid credentials"
	// when wrong). "" takes any upload.
	Token string
	// SuccessText is the 200 body; default the seed's
	// "OTA update successful, rebooting...".
	SuccessText string
	// FailurePage is AnswerFailurePage's body; default ESP8266
	// HTTPUpdateServer's "Update error: ERROR[10]: Magic byte is not 0xE9".
	FailurePage string
	// AnswerDelay is how long the device checks the image after its last
	// byte before it answers (esp_ota_end validates the whole image).
	AnswerDelay time.Duration

	// OTAStatus serves GET /ota/status on the OTA port (else 404).
	OTAStatus bool
	// Omit leaves these fields out of /ota/status.
	Omit Field
	// APIStatus serves GET /api/status (firmwareVersion) on the web port
	// (else 404); APIUptime adds "uptime" (seconds) to it.
	APIStatus bool
	APIUptime bool
	// FailFirstStatus: the first GET of each status endpoint answers 500.
	FailFirstStatus bool
	// NoRollback: the firmware has no app rollback: every state is
	// "undefined" and a new image never waits to be marked valid.
	NoRollback bool

	// EraseStall is how long the device erases its slot before it reads
	// the first byte of the body (2–8 s on hardware).
	EraseStall time.Duration
	// BytesPerSecond bounds how fast the body is read; 0 = as fast as it
	// comes.
	BytesPerSecond int
	// RestartDelay is between the answer and the restart; default 200 ms
	// (0.5–1 s on hardware). A negative value restarts at once.
	RestartDelay time.Duration
	// BootTime is how long each restart is silent; default 2.5 s.
	BootTime time.Duration
	// PendingFor is how long a new image stays pending_verify; default 1 s.
	PendingFor time.Duration
	// CrashAfter is how long a crashing new image answers before it
	// crashes; 0 = it crashes before its network is up (one longer silence).
	CrashAfter time.Duration
	// CrashLoops is how often CrashLoopsThenOld's image comes up; default 3.
	CrashLoops int
	// InitialUptime is the uptime at start; default 1 h.
	InitialUptime time.Duration
	// EarlyHold is how long AnswerEarly keeps the connection; default 3 s.
	EarlyHold time.Duration
}

func (c HTTPConfig) withDefaults() HTTPConfig {
	if c.Running == (Build{}) {
		c.Running = Build{Project: "ots-fw-main", Version: "1.0.0", ELF: ELFOf("old")}
	}
	if c.Third == (Build{}) {
		c.Third = Build{Project: c.Running.Project, Version: "0.9.0", ELF: ELFOf("factory")}
	}
	if c.Chip == "" {
		c.Chip = "esp32s3"
	}
	if c.SlotSize == 0 {
		c.SlotSize = 2 << 20
	}
	if c.SuccessText == "" {
		c.SuccessText = "OTA update successful, rebooting..."
	}
	if c.FailurePage == "" {
		c.FailurePage = "Update error: ERROR[10]: Magic byte is not 0xE9"
	}
	if c.RestartDelay == 0 {
		c.RestartDelay = 200 * time.Millisecond
	}
	if c.BootTime == 0 {
		c.BootTime = 2500 * time.Millisecond
	}
	if c.PendingFor == 0 {
		c.PendingFor = time.Second
	}
	if c.CrashLoops == 0 {
		c.CrashLoops = 3
	}
	if c.InitialUptime == 0 {
		c.InitialUptime = time.Hour
	}
	if c.EarlyHold == 0 {
		c.EarlyHold = 3 * time.Second
	}
	return c
}

// OTSAsShipped is the OTS firmware as published (contract §1–§3): no
// /ota/status, /api/status with firmwareVersion and no uptime, no auth,
// its own success text, a slot erase before the first byte and writes at
// about 100 KB/s. Times are scaled by scale (1 = hardware: a 3 s erase,
// 1 s to restart); the write speed is not, so the answer arrives long
// after the push started.
func OTSAsShipped(running Build, scale float64) HTTPConfig {
	d := func(t time.Duration) time.Duration { return time.Duration(float64(t) * scale) }
	return HTTPConfig{
		Running:        running,
		APIStatus:      true,
		SuccessText:    "Update successful, rebooting...",
		EraseStall:     d(3 * time.Second),
		BytesPerSecond: 100_000,
		RestartDelay:   d(750 * time.Millisecond),
		BootTime:       max(d(4*time.Second), 2500*time.Millisecond),
	}
}

// Event is one step in a fake device's life, for tests to check timing
// against (for instance that a verdict came after the device was back).
type Event struct {
	At time.Time
	// What is "upload" (a POST /update or a connect-back began),
	// "installed", "restart" (it fell silent) or "up" (it answers again).
	What string
	// Build is what the device runs from this event on.
	Build Build
	State string
}

// HTTPDevice is a running fake HTTP OTA device on 127.0.0.1.
type HTTPDevice struct {
	life
	cfg      HTTPConfig
	ota, web *port
	srvs     []*http.Server

	handler sync.Mutex // ESP-IDF's httpd serves one request at a time

	running    Build
	slot       string
	state      string
	bootAt     time.Time
	uploads    int
	failedOnce map[string]bool
}

// StartHTTP starts a fake HTTP device; Close stops it.
func StartHTTP(cfg HTTPConfig) (*HTTPDevice, error) {
	cfg = cfg.withDefaults()
	d := &HTTPDevice{cfg: cfg, running: cfg.Running, slot: "ota_0", state: "valid",
		bootAt: time.Now().Add(-cfg.InitialUptime), failedOnce: map[string]bool{}, life: newLife()}
	if cfg.NoRollback {
		d.state = "undefined"
	}
	var err error
	if d.ota, err = listenPort(); err != nil {
		return nil, err
	}
	if d.web, err = listenPort(); err != nil {
		d.ota.Close()
		return nil, err
	}
	otaMux := http.NewServeMux()
	otaMux.HandleFunc("/update", d.serial(d.handleUpdate))
	otaMux.HandleFunc("/ota/status", d.serial(d.handleOTAStatus))
	otaMux.HandleFunc("/", d.serial(notFound))
	webMux := http.NewServeMux()
	webMux.HandleFunc("/api/status", d.alive(d.web, d.handleAPIStatus))
	webMux.HandleFunc("/", d.alive(d.web, notFound))
	for _, s := range []struct {
		p *port
		h http.Handler
	}{{d.ota, otaMux}, {d.web, webMux}} {
		d.srvs = append(d.srvs, serve(s.p, s.h, &d.wg))
	}
	return d, nil
}

// Host is the device's address.
func (d *HTTPDevice) Host() string { return "127.0.0.1" }

// Port is the OTA port (POST /update, GET /ota/status).
func (d *HTTPDevice) Port() int { return d.ota.portNumber() }

// WebPort is the web app's port (GET /api/status).
func (d *HTTPDevice) WebPort() int { return d.web.portNumber() }

// Uploads is how many POST /update requests reached the device (refused
// ones included).
func (d *HTTPDevice) Uploads() int { return locked(&d.mu, &d.uploads) }

// Running is what the device runs now and its app state.
func (d *HTTPDevice) Running() (Build, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running, d.state
}

// Close stops the device and waits for its goroutines.
func (d *HTTPDevice) Close() error {
	return d.closeWith(func() {
		for _, s := range d.srvs {
			_ = s.Close()
		}
		d.ota.Close()
		d.web.Close()
	})
}

func (d *HTTPDevice) record(what string) {
	d.logEvent(Event{What: what, Build: d.running, State: d.state})
}

// alive answers only while the port is up: a request that arrives as the
// device restarts is held unanswered, as on a chip that just stopped.
func (d *HTTPDevice) alive(p *port, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if p.holdIfDown(w) {
			return
		}
		h(w, r)
	}
}

// serial runs OTA-port handlers one at a time, as ESP-IDF's httpd does.
func (d *HTTPDevice) serial(h http.HandlerFunc) http.HandlerFunc {
	return d.alive(d.ota, func(w http.ResponseWriter, r *http.Request) {
		d.handler.Lock()
		defer d.handler.Unlock()
		h(w, r)
	})
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "Nothing matches the given URI", http.StatusNotFound)
}

func text(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (d *HTTPDevice) failOnce(path string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.cfg.FailFirstStatus || d.failedOnce[path] {
		return false
	}
	d.failedOnce[path] = true
	return true
}

func (d *HTTPDevice) handleOTAStatus(w http.ResponseWriter, r *http.Request) {
	if !d.cfg.OTAStatus || r.Method != http.MethodGet {
		notFound(w, r)
		return
	}
	if d.failOnce(r.URL.Path) {
		text(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	d.mu.Lock()
	b, state, slot, up := d.running, d.state, d.slot, time.Since(d.bootAt)
	d.mu.Unlock()
	size := d.cfg.SlotSize
	if slot == "factory" {
		size = 1 << 20
	}
	m := map[string]any{"idf": "v5.2.2", "running": slot, "boot": slot, "secure_version": b.Secure}
	put := func(f Field, k string, v any) {
		if d.cfg.Omit&f == 0 {
			m[k] = v
		}
	}
	put(FieldProject, "project", b.Project)
	put(FieldVersion, "version", b.Version)
	put(FieldChip, "chip", d.cfg.Chip)
	put(FieldState, "state", state)
	put(FieldELF, "elf_sha256", b.ELF)
	put(FieldSlotSize, "slot_size", size)
	put(FieldUptime, "uptime_s", int64(up/time.Second))
	writeJSON(w, m)
}

func (d *HTTPDevice) handleAPIStatus(w http.ResponseWriter, r *http.Request) {
	if !d.cfg.APIStatus || r.Method != http.MethodGet {
		notFound(w, r)
		return
	}
	if d.failOnce(r.URL.Path) {
		text(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	d.mu.Lock()
	b, up := d.running, time.Since(d.bootAt)
	d.mu.Unlock()
	m := map[string]any{"firmwareVersion": b.Version, "mode": "normal", "ip": d.Host(),
		"serialNumber": "FAKE-0001", "ownerName": "fakedev"}
	if d.cfg.APIUptime {
		m["uptime"] = int64(up / time.Second)
	}
	writeJSON(w, m)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// handleUpdate takes POST /update the way the contract's firmware does:
// the raw image with a Content-Length, read in 1024-byte pieces after the
// slot erase.
func (d *HTTPDevice) handleUpdate(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		text(w, http.StatusMethodNotAllowed, "Method not allowed")
		return
	}
	d.mu.Lock()
	d.uploads++
	d.record("upload")
	d.mu.Unlock()
	if d.cfg.Token != "" {
		a := r.Header.Get("Authorization")
		switch {
		case a == "":
			text(w, http.StatusUnauthorized, "Authentication required")
			return
		case a != "Bearer "+d.cfg.Token:
			text(w, http.StatusForbidden, "Invalid credentials")
			return
		}
	}
	if r.ContentLength <= 0 {
		text(w, http.StatusBadRequest, "Content-Length required")
		return
	}
	if d.cfg.Answer == AnswerEarly {
		d.answerEarly(w)
		return
	}
	if !d.sleep(d.cfg.EraseStall) {
		return
	}
	data, status, words := d.readBody(r)
	if status != 0 {
		text(w, status, words)
		return
	}
	if !d.sleep(d.cfg.AnswerDelay) {
		return
	}
	b, err := IdentityOf(data)
	if d.cfg.Expect != nil {
		b, err = *d.cfg.Expect, nil
	}
	if err != nil {
		text(w, http.StatusInternalServerError, "OTA end failed")
		return
	}
	if d.cfg.Answer != AnswerFailurePage || d.cfg.After != NeverRestarts {
		d.mu.Lock()
		d.record("installed")
		d.mu.Unlock()
	}
	if d.cfg.Answer == AnswerLost {
		// The last bytes are read and the connection goes at once.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				c.Close()
			}
		}
	} else {
		if d.cfg.Answer == AnswerFailurePage {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, d.cfg.FailurePage)
		} else {
			text(w, http.StatusOK, d.cfg.SuccessText)
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.lifecycle(b)
	}()
}

// readBody reads the image in 1024-byte pieces at the configured speed.
// status is non-zero when the device refuses it.
func (d *HTTPDevice) readBody(r *http.Request) (data []byte, status int, words string) {
	buf := make([]byte, 1024)
	start := time.Now()
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if len(data) == 0 && buf[0] != imageMagic {
				return nil, http.StatusInternalServerError, "Write failed"
			}
			if int64(len(data)+n) > d.cfg.SlotSize {
				return nil, http.StatusInternalServerError, "Write failed"
			}
			data = append(data, buf[:n]...)
			if bps := d.cfg.BytesPerSecond; bps > 0 {
				due := start.Add(time.Duration(float64(len(data)) / float64(bps) * float64(time.Second)))
				if !d.sleep(time.Until(due)) {
					return nil, http.StatusInternalServerError, "Receive failed"
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return data, 0, ""
		}
		if err != nil {
			return nil, http.StatusInternalServerError, "Receive failed"
		}
	}
}

// answerEarly answers 200 right after the headers and reads nothing more.
func (d *HTTPDevice) answerEarly(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		text(w, http.StatusOK, d.cfg.SuccessText)
		return
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return
	}
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		len(d.cfg.SuccessText), d.cfg.SuccessText)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.sleep(d.cfg.EarlyHold)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}()
}

// sleep waits t or until Close; it reports whether the device still runs.
func (d *HTTPDevice) sleep(t time.Duration) bool { return sleepOrDone(d.done, t) }

// sleepOrDone waits t or until done closes; it reports whether done is
// still open.
func sleepOrDone(done <-chan struct{}, t time.Duration) bool {
	if t <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	tm := time.NewTimer(t)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-done:
		return false
	}
}

// restart makes the device fall silent.
func (d *HTTPDevice) restart() {
	d.ota.quiesce()
	d.web.quiesce()
	d.mu.Lock()
	d.record("restart")
	d.mu.Unlock()
}

// boot brings the device back running b in state.
func (d *HTTPDevice) boot(b Build, slot, state string) {
	d.mu.Lock()
	if d.cfg.NoRollback {
		state = "undefined"
	}
	d.running, d.slot, d.state, d.bootAt = b, slot, state, time.Now()
	d.record("up")
	d.mu.Unlock()
	d.ota.resume()
	d.web.resume()
}

func (d *HTTPDevice) setState(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.NoRollback {
		return
	}
	d.state = s
	d.record("state")
}

// lifecycle plays what happens after an accepted upload of n.
func (d *HTTPDevice) lifecycle(n Build) {
	c := d.cfg
	if c.Answer == AnswerEarly || c.After == NeverRestarts {
		return
	}
	if c.RestartDelay > 0 && !d.sleep(c.RestartDelay) {
		return
	}
	d.mu.Lock()
	old, oldSlot := d.running, d.slot
	d.mu.Unlock()
	newSlot := "ota_1"
	if oldSlot == "ota_1" {
		newSlot = "ota_0"
	}
	d.restart()
	if !d.sleep(c.BootTime) {
		return
	}
	// crash: the new image comes up (for CrashAfter) and crashes; with no
	// CrashAfter it dies before its network is up.
	crash := func() bool {
		if c.CrashAfter > 0 {
			d.boot(n, newSlot, "pending_verify")
			if !d.sleep(c.CrashAfter) {
				return false
			}
			d.restart()
		}
		return d.sleep(c.BootTime)
	}
	switch c.After {
	case InstallsAndKeeps:
		d.boot(n, newSlot, "pending_verify")
		if d.sleep(c.PendingFor) {
			d.setState("valid")
		}
	case RollsBack:
		if crash() {
			d.boot(old, oldSlot, "valid")
		}
	case FallsToThird:
		if crash() {
			d.boot(c.Third, "factory", "undefined")
		}
	case CrashLoopsThenOld:
		for range c.CrashLoops {
			d.boot(n, newSlot, "pending_verify")
			if !d.sleep(max(c.CrashAfter, 300*time.Millisecond)) {
				return
			}
			d.restart()
			if !d.sleep(c.BootTime) {
				return
			}
		}
		d.boot(old, oldSlot, "valid")
	case PendingThenOld:
		d.boot(n, newSlot, "pending_verify")
		if !d.sleep(c.PendingFor) {
			return
		}
		d.restart()
		if d.sleep(c.BootTime) {
			d.boot(old, oldSlot, "valid")
		}
	case RunsForeign:
		f := c.Foreign
		if f == (Build{}) {
			f = Build{Project: n.Project, Version: n.Version, ELF: ELFOf("foreign")}
		}
		d.boot(f, newSlot, "valid")
	case NeverComesBack:
	}
}

// ELFOf is a stand-in ELF SHA-256 (64 hex characters) for a named build,
// for tests that describe builds without images.
func ELFOf(name string) string {
	s := sha256.Sum256([]byte(name))
	return hex.EncodeToString(s[:])
}
