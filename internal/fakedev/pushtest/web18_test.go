package pushtest

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/elegantota"
	"github.com/ots-ota/ots-ota/upload/form"
)

// Issue 18: the Arduino web uploaders through the real push path (the
// runner, the form and elegantota transports, the device observer)
// against the independent fakes. The protocol is the user's word (the
// target's protocol), as --protocol form|elegantota gives it: no probe.

// webOptions are options(t) with the web uploaders' transports.
func webOptions(t *testing.T) upload.Options {
	t.Helper()
	o := options(t)
	o.Transports[upload.Form] = &form.Transport{ConnectTimeout: connectTimeout, IdleTimeout: idleTimeout}
	o.Transports[upload.ElegantOTA] = &elegantota.Transport{ConnectTimeout: connectTimeout, IdleTimeout: idleTimeout}
	return o
}

func startWeb(t *testing.T, cfg fakedev.WebConfig) *fakedev.WebDevice {
	t.Helper()
	if cfg.BootTime == 0 {
		cfg.BootTime = 1500 * time.Millisecond // outlasts the probe timeout
	}
	d, err := fakedev.StartWeb(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// esp32Firmware is an esp32 app image of project ots-fw-main: the fakes'
// /ota/status tells chip esp32.
func esp32Firmware(t *testing.T, version string, seed int64) *upload.Firmware {
	t.Helper()
	b, err := image.Build(image.BuildOptions{Chip: image.ChipESP32, Project: "ots-fw-main", Version: version, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return upload.NewFirmware("firmware.bin", b, false)
}

func webTarget(name string, d *fakedev.WebDevice, p upload.Protocol) upload.Target {
	return upload.Target{Name: name, Host: d.Host(), Port: d.Port(), Protocol: p}
}

// webCreds are the fakes' credentials as push passes --user and
// --password.
func webCreds() upload.Credentials {
	return upload.Credentials{User: "admin", Password: auth.NewSecret("fw-upd4te-pw")}
}

// HTTPUpdateServer (arduino-esp32, with its Origin check) takes the image
// and tells no version: unverified, tells-nothing.
func TestWeb18_HTTPUpdateServerTellsNothing(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1801, 0)
	d := startWeb(t, fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, OriginCheck: true})
	rr := run(t, fw, []upload.Target{webTarget("hus", d, upload.Form)}, webOptions(t))
	r := rr.result(t, "hus")
	wantOutcome(t, r, upload.OutcomeUnverified)
	wantReason(t, r, "tells-nothing")
	wantUploads(t, "hus", d.Uploads(), 1)
	if b, _ := d.Running(); b.Version != "1.0.1" {
		t.Errorf("the fake runs %+v, want the image sent", b)
	}
}

// A password-protected HTTPUpdateServer, no credentials given: failed
// (auth), one try, never retried.
func TestWeb18_HTTPUpdateServerNoCredentials(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1802, 0)
	d := startWeb(t, fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, OriginCheck: true, User: "admin", Password: "fw-upd4te-pw",
		After: fakedev.NeverRestarts})
	rr := run(t, fw, []upload.Target{webTarget("hus", d, upload.Form)}, webOptions(t))
	r := rr.result(t, "hus")
	wantOutcome(t, r, upload.OutcomeFailed)
	if r.Class != upload.ClassAuth || r.Tries != 1 {
		t.Errorf("class %s, %d tries; want auth, 1", r.Class, r.Tries)
	}
	if !strings.Contains(r.Message, "--user") {
		t.Errorf("message %q does not say how to give credentials", r.Message)
	}
	if b, _ := d.Running(); b.Version != "1.0.0" {
		t.Errorf("the fake runs %+v, want the old app", b)
	}
}

// The same device with its credentials (and a sketch's /ota/status):
// updated.
func TestWeb18_HTTPUpdateServerCredentialsUpdated(t *testing.T) {
	t.Parallel()
	fw := esp32Firmware(t, "1.0.1", 1803)
	d := startWeb(t, fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, OriginCheck: true, User: "admin", Password: "fw-upd4te-pw",
		OTAStatus: true, Running: old("1.0.0", "1.0.0")})
	o := webOptions(t)
	o.Credentials = webCreds()
	rr := run(t, fw, []upload.Target{webTarget("hus", d, upload.Form)}, o)
	r := rr.result(t, "hus")
	wantOutcome(t, r, upload.OutcomeUpdated)
	wantUploads(t, "hus", d.Uploads(), 1)
	if strings.Contains(r.Message, "fw-upd4te-pw") {
		t.Errorf("the message shows the password: %q", r.Message)
	}
}

// ESP8266HTTPUpdateServer given an image of 4096 bytes or less: the core
// buffers 4 KiB and checks for data before it flushes, so it answers
// "ERROR[13]: No data supplied" with 200. push fails it with the device's
// words and what they mean, once.
func TestWeb18_ESP8266TinyImageError13(t *testing.T) {
	t.Parallel()
	// No whole ESP8266 app fits in 4096 bytes (image.Build refuses to
	// make one): the first page of one, its magic byte and header.
	full, err := image.Build(image.BuildOptions{Chip: image.ChipESP8266})
	if err != nil {
		t.Fatal(err)
	}
	fw := upload.NewFirmware("tiny.bin", full[:4096], false)
	d := startWeb(t, fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, ESP8266: true})
	rr := run(t, fw, []upload.Target{webTarget("esp8266", d, upload.Form)}, webOptions(t))
	r := rr.result(t, "esp8266")
	wantOutcome(t, r, upload.OutcomeFailed)
	if !strings.Contains(r.Words, "ERROR[13]: No data supplied") || r.Class != upload.ClassRejected || r.Tries != 1 {
		t.Errorf("words %q class %s tries %d; want the device's ERROR[13], rejected, 1 try", r.Words, r.Class, r.Tries)
	}
	if !strings.Contains(r.Message, "4096") {
		t.Errorf("message %q does not say what ERROR[13] means (an image of 4096 bytes or less)", r.Message)
	}
	if b, _ := d.Running(); b.Version != "1.0.0" {
		t.Errorf("the fake runs %+v, want the old app", b)
	}
}

// ESPEasy with a filesystem image: refused before anything is sent,
// whether detection named the family or not.
func TestWeb18_ESPEasyFilesystemRefused(t *testing.T) {
	t.Parallel()
	fs := upload.NewFirmware("littlefs.bin", bytes.Repeat([]byte{0xFF}, 64<<10), true)
	for _, family := range []string{form.FamilyESPEasy, ""} {
		d := startWeb(t, fakedev.WebConfig{Family: fakedev.ESPEasy})
		tg := webTarget("espeasy", d, upload.Form)
		tg.Family = family
		rr := run(t, fs, []upload.Target{tg}, webOptions(t))
		r := rr.result(t, "espeasy")
		wantOutcome(t, r, upload.OutcomeRefused)
		if r.Tries != 0 || d.Uploads() != 0 || d.Filesystems() != 0 {
			t.Errorf("family %q: %d tries, %d uploads reached the device; want nothing sent", family, r.Tries, d.Uploads())
		}
		if family != "" && !strings.Contains(r.Message, "ESPEasy") {
			t.Errorf("message %q does not name ESPEasy", r.Message)
		}
	}
}

// ESPEasy's /json tells its Git Build: with --expect-version that tag the
// device is seen running it, updated.
func TestWeb18_ESPEasyExpectVersionUpdated(t *testing.T) {
	t.Parallel()
	const git = "mega-20241019"
	fw := firmware(t, "1.0.1", 1806, 0)
	d := startWeb(t, fakedev.WebConfig{Family: fakedev.ESPEasy, EasyNext: &fakedev.EasyBuild{Build: "20241019", GitBuild: git,
		BuildTime: "Oct 19 2024 22:36:19", BinaryFilename: "ESP_Easy_mega_20241019_normal_ESP32_4M316k"}})
	o := webOptions(t)
	o.ExpectVersion = git
	o.Observer = &upload.DeviceObserver{Timeout: o.ProbeTimeout, ExpectVersion: git}
	rr := run(t, fw, []upload.Target{webTarget("espeasy", d, upload.Form)}, o)
	r := rr.result(t, "espeasy")
	wantOutcome(t, r, upload.OutcomeUpdated)
	if r.Running != git || r.VersionSource != "/json" {
		t.Errorf("running %q from %q, want %q from /json", r.Running, r.VersionSource, git)
	}
	wantUploads(t, "espeasy", d.Uploads(), 1)
}

// The same, but the new build dies and the old one comes back: rolled
// back.
func TestWeb18_ESPEasyRollsBack(t *testing.T) {
	t.Parallel()
	const git = "mega-20241019"
	fw := firmware(t, "1.0.1", 1807, 0)
	d := startWeb(t, fakedev.WebConfig{Family: fakedev.ESPEasy, After: fakedev.RollsBack,
		EasyNext: &fakedev.EasyBuild{Build: "20241019", GitBuild: git, BuildTime: "Oct 19 2024 22:36:19", BinaryFilename: "x"}})
	o := webOptions(t)
	o.ExpectVersion = git
	o.Observer = &upload.DeviceObserver{Timeout: o.ProbeTimeout, ExpectVersion: git}
	rr := run(t, fw, []upload.Target{webTarget("espeasy", d, upload.Form)}, o)
	r := rr.result(t, "espeasy")
	wantOutcome(t, r, upload.OutcomeRolledBack)
	if r.Running != "mega-20240822" {
		t.Errorf("running %q, want the release before (mega-20240822)", r.Running)
	}
	wantUploads(t, "espeasy", d.Uploads(), 1)
}

// ElegantOTA v3 with credentials, on the sync server (Basic) and on the
// async one (Digest challenge): it takes the image and tells no version,
// unverified, tells-nothing.
func TestWeb18_ElegantOTACredentialsTellsNothing(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1808, 0)
	sdev := startWeb(t, fakedev.WebConfig{Family: fakedev.ElegantOTA, User: "admin", Password: "fw-upd4te-pw"})
	adev := startWeb(t, fakedev.WebConfig{Family: fakedev.ElegantOTA, Async: true, User: "admin", Password: "fw-upd4te-pw"})
	o := webOptions(t)
	o.Credentials = webCreds()
	rr := run(t, fw, []upload.Target{webTarget("sync", sdev, upload.ElegantOTA), webTarget("async", adev, upload.ElegantOTA)}, o)
	for name, d := range map[string]*fakedev.WebDevice{"sync": sdev, "async": adev} {
		r := rr.result(t, name)
		wantOutcome(t, r, upload.OutcomeUnverified)
		wantReason(t, r, "tells-nothing")
		wantUploads(t, name, d.Uploads(), 1)
		if d.Starts() != 1 {
			t.Errorf("%s: %d GET /ota/start, want 1", name, d.Starts())
		}
		if b, _ := d.Running(); b.Version != "1.0.1" {
			t.Errorf("%s: the fake runs %+v, want the image sent", name, b)
		}
	}
}

// ElegantOTA in a sketch that adds /ota/status: updated, seen after its
// restart (2 s after its answer, in loop()).
func TestWeb18_ElegantOTAStatusUpdated(t *testing.T) {
	t.Parallel()
	fw := esp32Firmware(t, "1.0.1", 1809)
	d := startWeb(t, fakedev.WebConfig{Family: fakedev.ElegantOTA, OTAStatus: true, Running: old("1.0.0", "1.0.0")})
	rr := run(t, fw, []upload.Target{webTarget("eota", d, upload.ElegantOTA)}, webOptions(t))
	r := rr.result(t, "eota")
	wantOutcome(t, r, upload.OutcomeUpdated)
	if back, done := lastUp(d.Events(), "1.0.1"), rr.done["eota"]; back.IsZero() || done.Before(back) {
		t.Errorf("push concluded before the device came back on 1.0.1 (its life: %s)", life(d.Events()))
	}
}

// ElegantOTA in a sketch that never calls ElegantOTA.loop(): it answers OK
// and never restarts. It tells nothing: unverified, never updated.
func TestWeb18_ElegantOTANeverRestarts(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1810, 0)
	d := startWeb(t, fakedev.WebConfig{Family: fakedev.ElegantOTA, After: fakedev.NeverRestarts})
	rr := run(t, fw, []upload.Target{webTarget("eota", d, upload.ElegantOTA)}, webOptions(t))
	r := rr.result(t, "eota")
	wantOutcome(t, r, upload.OutcomeUnverified)
	wantUploads(t, "eota", d.Uploads(), 1)
	if d.Boots() != 0 {
		t.Errorf("the fake restarted %d times, want never", d.Boots())
	}
}

// An ElegantOTA upload cut after /ota/start succeeded (the connection
// drops mid-image): the device's update stays begun, so push does not try
// again, and says to restart the device.
func TestWeb18_ElegantOTACutNoRetry(t *testing.T) {
	t.Parallel()
	fw := firmware(t, "1.0.1", 1811, 300_000)
	d := startWeb(t, fakedev.WebConfig{Family: fakedev.ElegantOTA, After: fakedev.NeverRestarts})
	p := cutProxy(t, d.Port(), "POST /ota/upload", 100_000)
	tg := upload.Target{Name: "eota", Host: "127.0.0.1", Port: p.port(), Protocol: upload.ElegantOTA}
	rr := run(t, fw, []upload.Target{tg}, webOptions(t))
	r := rr.result(t, "eota")
	wantOutcome(t, r, upload.OutcomeFailed)
	if r.Tries != 1 || d.Starts() != 1 || p.cuts() != 1 {
		t.Errorf("%d tries, %d GET /ota/start, %d uploads cut; want one of each", r.Tries, d.Starts(), p.cuts())
	}
	if !strings.Contains(r.Message, "restart the device") {
		t.Errorf("message %q does not say to restart the device", r.Message)
	}
	if b, _ := d.Running(); b.Version != "1.0.0" {
		t.Errorf("the fake runs %+v, want the old app", b)
	}
}

// proxy forwards TCP connections to a device on 127.0.0.1; a connection
// whose request starts with prefix is cut after limit bytes from the
// client (a Wi-Fi drop mid-upload).
type proxy struct {
	ln  net.Listener
	mu  sync.Mutex
	cut int
}

func (p *proxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *proxy) cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

func cutProxy(t *testing.T, devPort int, prefix string, limit int64) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	dev := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: devPort}).String()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				u, err := net.DialTimeout("tcp", dev, 5*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				head := make([]byte, len(prefix))
				if _, err := io.ReadFull(c, head); err != nil {
					return
				}
				if _, err := u.Write(head); err != nil {
					return
				}
				go func() { _, _ = io.Copy(c, u); c.Close() }()
				if string(head) == prefix {
					_, _ = io.CopyN(u, c, limit-int64(len(head)))
					p.mu.Lock()
					p.cut++
					p.mu.Unlock()
					return // both sides closed: the connection dropped
				}
				_, _ = io.Copy(u, c)
			}()
		}
	}()
	return p
}
