// Issue 19's push tests against the independent WLED and Tasmota fakes.

package pushtest

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/tasmota"
	"github.com/ots-ota/ots-ota/upload/wled"
)

// fakes19Options are options(t) with the WLED and Tasmota transports
// (Tasmota by file; viaURL: by URL through package fileserve on loopback),
// and expect as --expect-version ("" = none).
func fakes19Options(t *testing.T, viaURL bool, expect string) upload.Options {
	t.Helper()
	o := options(t)
	o.Transports[upload.WLED] = &wled.Transport{ConnectTimeout: connectTimeout, IdleTimeout: idleTimeout, BusyWait: 300 * time.Millisecond}
	// The quiet rule's timing, shortened with the fakes' restart
	// (startTasmota): connects every 250 ms, and a device never seen away
	// read after 3 s, ten times its restart delay.
	tt := &tasmota.Transport{ConnectTimeout: connectTimeout, IdleTimeout: idleTimeout, QuietProbe: 250 * time.Millisecond, QuietHold: 3 * time.Second}
	if viaURL {
		tt.ViaURL = true
		tt.Server = &tasmota.Server{
			Serve: func(addr string, files map[string]string, onFetch func(tasmota.Fetch)) (tasmota.FileServer, error) {
				return fileserve.Start(fileserve.Config{Addr: addr, Files: files, OnFetch: func(f fileserve.Fetch) {
					onFetch(tasmota.Fetch{Name: f.Name, Remote: f.Remote, MAC: f.MAC, Status: f.Status, Bytes: f.Bytes, Range: f.Range})
				}})
			},
			Route:     func(netip.Addr) (netip.Addr, error) { return netip.MustParseAddr("127.0.0.1"), nil },
			FetchIdle: 20 * time.Second,
		}
	}
	o.Transports[upload.Tasmota] = tt
	if expect != "" {
		o.ExpectVersion = expect
		o.Observer = &upload.DeviceObserver{Timeout: o.ProbeTimeout, ExpectVersion: expect}
	}
	return o
}

// wledFirmware is an esp32 image with a WLED metadata block where a build
// carries it (past the app descriptor); release "" leaves it out.
func wledFirmware(t *testing.T, version, release string, seed int64) *upload.Firmware {
	t.Helper()
	b, err := image.Build(image.BuildOptions{Chip: image.ChipESP32, Project: "WLED", Version: version, Seed: seed, Size: 200_000})
	if err != nil {
		t.Fatal(err)
	}
	if release != "" {
		copy(b[0x120:], fakedev.WLEDMetadata(version, release))
	}
	return upload.NewFirmware("WLED_"+version+"_ESP32.bin", b, false)
}

func startWLED(t *testing.T, cfg fakedev.WLEDConfig) *fakedev.WLEDDevice {
	t.Helper()
	if cfg.BootTime == 0 {
		cfg.BootTime = 1500 * time.Millisecond
	}
	d, err := fakedev.StartWLED(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func wledTarget(name string, d *fakedev.WLEDDevice) upload.Target {
	return upload.Target{Name: name, Host: d.Host(), Port: d.Port(), Protocol: upload.WLED}
}

// WLED with a build of its release and --expect-version its ver: updated,
// one upload, no skipValidation sent.
func TestFakes19_WLEDExpectVersionUpdated(t *testing.T) {
	t.Parallel()
	fw := wledFirmware(t, "16.0.2", "ESP32", 1901)
	d := startWLED(t, fakedev.WLEDConfig{})
	rr := run(t, fw, []upload.Target{wledTarget("wled", d)}, fakes19Options(t, false, "16.0.2"))
	r := rr.result(t, "wled")
	wantOutcome(t, r, upload.OutcomeUpdated)
	wantUploads(t, "wled", d.Uploads(), 1)
	if d.Skipped() != 0 || d.Running().Ver != "16.0.2" {
		t.Errorf("skipValidation sent %d times; the fake runs %+v", d.Skipped(), d.Running())
	}
}

// Without --expect-version the image tells nothing WLED reports:
// unverified, image-has-no-identity.
func TestFakes19_WLEDNoExpectVersionUnverified(t *testing.T) {
	t.Parallel()
	fw := wledFirmware(t, "16.0.2", "ESP32", 1902)
	d := startWLED(t, fakedev.WLEDConfig{})
	rr := run(t, fw, []upload.Target{wledTarget("wled", d)}, fakes19Options(t, false, ""))
	r := rr.result(t, "wled")
	wantOutcome(t, r, upload.OutcomeUnverified)
	wantReason(t, r, "image-has-no-identity")
	wantUploads(t, "wled", d.Uploads(), 1)
}

// An image of another release is refused before any byte, naming both
// releases; one with no metadata too.
func TestFakes19_WLEDReleaseCheckRefused(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, release string
		words         []string
	}{
		{"another release", "ESP32S3", []string{"ESP32S3", "ESP32"}},
		{"no metadata", "", []string{"--force"}},
	} {
		fw := wledFirmware(t, "16.0.2", c.release, 1903)
		d := startWLED(t, fakedev.WLEDConfig{})
		rr := run(t, fw, []upload.Target{wledTarget("wled", d)}, fakes19Options(t, false, ""))
		r := rr.result(t, "wled")
		wantOutcome(t, r, upload.OutcomeRefused)
		wantUploads(t, "wled", d.Uploads(), 0)
		for _, w := range c.words {
			if !strings.Contains(r.Message, w) {
				t.Errorf("%s: message %q does not say %q", c.name, r.Message, w)
			}
		}
	}
}

// --force sends skipValidation=1 before the file: WLED takes a build with
// no metadata.
func TestFakes19_WLEDForceSkipsValidation(t *testing.T) {
	t.Parallel()
	fw := wledFirmware(t, "16.0.2", "", 1904)
	d := startWLED(t, fakedev.WLEDConfig{Next: &fakedev.WLEDBuild{Ver: "16.0.2-custom", Vid: 2605030, Release: "ESP32"}})
	o := fakes19Options(t, false, "16.0.2-custom")
	o.Transports[upload.WLED].(*wled.Transport).SkipValidation = true
	rr := run(t, fw, []upload.Target{wledTarget("wled", d)}, o)
	r := rr.result(t, "wled")
	wantOutcome(t, r, upload.OutcomeUpdated)
	if d.Skipped() != 1 {
		t.Errorf("skipValidation=1 before the file reached the device %d times, want 1", d.Skipped())
	}
}

// The gates are reported in the device's words and never worked around:
// failed, one try, no unlock, no revert.
func TestFakes19_WLEDGatesReported(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		cfg   fakedev.WLEDConfig
		words string
	}{
		{"OTA lock", fakedev.WLEDConfig{OTALock: true}, "Please unlock OTA in security settings!"},
		{"PIN", fakedev.WLEDConfig{PIN: true}, "Please unlock settings using PIN code!"},
		{"subnet", fakedev.WLEDConfig{ForeignSubnet: true}, "Client is not on local subnet."},
	} {
		fw := wledFirmware(t, "16.0.2", "ESP32", 1905)
		d := startWLED(t, c.cfg)
		rr := run(t, fw, []upload.Target{wledTarget("wled", d)}, fakes19Options(t, false, "16.0.2"))
		r := rr.result(t, "wled")
		wantOutcome(t, r, upload.OutcomeFailed)
		if r.Tries != 1 || !strings.Contains(r.Message+" "+r.Words, c.words) {
			t.Errorf("%s: %d tries, message %q words %q; want one try quoting %q", c.name, r.Tries, r.Message, r.Words, c.words)
		}
		if d.Reverts() != 0 || d.Running().Ver != "16.0.1" || d.Boots() != 0 {
			t.Errorf("%s: the device was changed: %d reverts, runs %+v", c.name, d.Reverts(), d.Running())
		}
	}
}

// A 503 (another upload runs) is waited out once: updated after two
// uploads; a second 503 fails it.
func TestFakes19_WLEDBusyRetriedOnce(t *testing.T) {
	t.Parallel()
	fw := wledFirmware(t, "16.0.2", "ESP32", 1906)
	once := startWLED(t, fakedev.WLEDConfig{Busy: 1})
	twice := startWLED(t, fakedev.WLEDConfig{Busy: 2})
	rr := run(t, fw, []upload.Target{wledTarget("once", once), wledTarget("twice", twice)}, fakes19Options(t, false, "16.0.2"))
	wantOutcome(t, rr.result(t, "once"), upload.OutcomeUpdated)
	wantUploads(t, "once", once.Uploads(), 2)
	wantOutcome(t, rr.result(t, "twice"), upload.OutcomeFailed)
	wantUploads(t, "twice", twice.Uploads(), 2)
}

// The new build dies and the old one comes back: rolled back.
func TestFakes19_WLEDRollsBack(t *testing.T) {
	t.Parallel()
	fw := wledFirmware(t, "16.0.2", "ESP32", 1907)
	d := startWLED(t, fakedev.WLEDConfig{After: fakedev.RollsBack})
	rr := run(t, fw, []upload.Target{wledTarget("wled", d)}, fakes19Options(t, false, "16.0.2"))
	wantOutcome(t, rr.result(t, "wled"), upload.OutcomeRolledBack)
}

// Tasmota: a restart is seen by TCP connects at most every QuietProbe
// (250 ms here, fakes19Options), so the fakes stay silent long enough for
// four of them.
func startTasmota(t *testing.T, cfg fakedev.TasmotaConfig) *fakedev.TasmotaDevice {
	t.Helper()
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.BootTime, 1200 * time.Millisecond}, {&cfg.RestartDelay, 300 * time.Millisecond}, {&cfg.UpgradeDelay, 300 * time.Millisecond},
		{&cfg.RetryDelay, 200 * time.Millisecond}, {&cfg.BacklogDelay, 50 * time.Millisecond}, {&cfg.LoaderDelay, 3 * time.Second}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	d, err := fakedev.StartTasmota(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func tasTarget(name string, d *fakedev.TasmotaDevice) upload.Target {
	return upload.Target{Name: name, Host: d.Host(), Port: d.Port(), WebPort: d.Port(), Protocol: upload.Tasmota}
}

// tasFirmware writes an image to a temporary directory (the upgrade by
// URL serves files from disk) with, when minimal, a -minimal companion;
// an ESP8266 image when name is "tasmota", else an ESP32 one.
func tasFirmware(t *testing.T, name string, size int, minimal bool, seed int64) *upload.Firmware {
	t.Helper()
	dir := t.TempDir()
	chip := image.ChipESP32
	if name == "tasmota" {
		chip = image.ChipESP8266
	}
	b, err := image.Build(image.BuildOptions{Chip: chip, Project: "tasmota", Version: "14.4.0", Seed: seed, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".bin")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if minimal {
		mb, err := image.Build(image.BuildOptions{Chip: chip, Project: "tasmota-minimal", Version: "14.4.0", Seed: seed + 1, Size: 300_000})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-minimal.bin"), mb, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return upload.NewFirmware(path, b, false)
}

// noStatusDuringUpgrade: the tripwire stayed quiet and SetOption128 was
// never touched.
func noStatusDuringUpgrade(t *testing.T, name string, d *fakedev.TasmotaDevice) {
	t.Helper()
	if trip := d.StatusDuringUpgrade(); len(trip) != 0 {
		t.Errorf("%s: Status during the upgrade: %+v", name, trip)
	}
	if so := d.SetOption128(); len(so) != 0 {
		t.Errorf("%s: SetOption128 changed: %q", name, so)
	}
}

var tasNext = fakedev.TasmotaBuild{Version: "14.4.0", Image: "tasmota32", BuildDateTime: "2024-12-01T10:00:00"}

// By file, --expect-version the new release: updated, and no Status
// reached the device while it installed.
func TestFakes19_TasmotaFileUpdated(t *testing.T) {
	t.Parallel()
	fw := tasFirmware(t, "tasmota32", 300_000, false, 1911)
	d := startTasmota(t, fakedev.TasmotaConfig{Next: &tasNext})
	rr := run(t, fw, []upload.Target{tasTarget("tas", d)}, fakes19Options(t, false, "14.4.0"))
	r := rr.result(t, "tas")
	wantOutcome(t, r, upload.OutcomeUpdated)
	wantUploads(t, "tas", d.Uploads(), 1)
	noStatusDuringUpgrade(t, "tas", d)
	if d.Silences() != 0 {
		t.Errorf("%d requests met the Referer gate: push must always send the Referer", d.Silences())
	}
}

// By file without --expect-version: unverified, image-has-no-identity;
// still no Status during the upgrade.
func TestFakes19_TasmotaFileNoExpectUnverified(t *testing.T) {
	t.Parallel()
	fw := tasFirmware(t, "tasmota32", 300_000, false, 1912)
	d := startTasmota(t, fakedev.TasmotaConfig{Next: &tasNext})
	rr := run(t, fw, []upload.Target{tasTarget("tas", d)}, fakes19Options(t, false, ""))
	r := rr.result(t, "tas")
	wantOutcome(t, r, upload.OutcomeUnverified)
	wantReason(t, r, "image-has-no-identity")
	noStatusDuringUpgrade(t, "tas", d)
}

// A web password: without credentials failed (auth) at once; with them
// (Basic only, never in a URL) updated on a German build, whose pages
// are never read for the verdict.
func TestFakes19_TasmotaPassword(t *testing.T) {
	t.Parallel()
	fw := tasFirmware(t, "tasmota32", 300_000, false, 1913)
	locked := startTasmota(t, fakedev.TasmotaConfig{Password: "t4s-pw", Language: "de", Next: &tasNext})
	rr := run(t, fw, []upload.Target{tasTarget("tas", locked)}, fakes19Options(t, false, "14.4.0"))
	r := rr.result(t, "tas")
	wantOutcome(t, r, upload.OutcomeFailed)
	if r.Class != upload.ClassAuth || r.Tries != 1 {
		t.Errorf("no credentials: class %s, %d tries; want auth, 1", r.Class, r.Tries)
	}
	d := startTasmota(t, fakedev.TasmotaConfig{Password: "t4s-pw", Language: "de", Next: &tasNext})
	o := fakes19Options(t, false, "14.4.0")
	o.Credentials = upload.Credentials{User: "admin", Password: auth.NewSecret("t4s-pw")}
	// As push passes them: the upload's and the verification's reads.
	o.Observer.(*upload.DeviceObserver).Credentials = func(upload.Target) upload.Credentials { return o.Credentials }
	rr = run(t, fw, []upload.Target{tasTarget("tas", d)}, o)
	r = rr.result(t, "tas")
	wantOutcome(t, r, upload.OutcomeUpdated)
	noStatusDuringUpgrade(t, "tas", d)
	if strings.Contains(r.Message, "t4s-pw") {
		t.Errorf("the message shows the password: %q", r.Message)
	}
}

// A German ESP32 safeboot layout by file: its page says "Upload
// fehlgeschlagen … ungenügend Speicherplatz" with 200; push decides from
// the device, which never restarted: not updated.
func TestFakes19_TasmotaTranslatedFailureNotUpdated(t *testing.T) {
	t.Parallel()
	fw := tasFirmware(t, "tasmota32", 300_000, false, 1914)
	d := startTasmota(t, fakedev.TasmotaConfig{Safeboot: true, Language: "de", Next: &tasNext})
	rr := run(t, fw, []upload.Target{tasTarget("tas", d)}, fakes19Options(t, false, "14.4.0"))
	r := rr.result(t, "tas")
	if r.Outcome == upload.OutcomeUpdated || d.Running().Version != "14.3.0" || d.Boots() != 0 {
		t.Errorf("outcome %s, the fake runs %+v after %d boots; want not updated and the old build", r.OutcomeText(), d.Running(), d.Boots())
	}
	noStatusDuringUpgrade(t, "tas", d)
}

// By URL on an ESP32: Backlog OtaUrl <url>; Upgrade 1, the device fetches
// from push's file server, updated; the old OtaUrl is put back.
func TestFakes19_TasmotaViaURLUpdated(t *testing.T) {
	t.Parallel()
	fw := tasFirmware(t, "tasmota32", 300_000, false, 1915)
	d := startTasmota(t, fakedev.TasmotaConfig{Next: &tasNext, OtaURL: "http://127.0.0.1:9/tasmota32.bin"})
	rr := run(t, fw, []upload.Target{tasTarget("tas", d)}, fakes19Options(t, true, "14.4.0"))
	r := rr.result(t, "tas")
	wantOutcome(t, r, upload.OutcomeUpdated)
	noStatusDuringUpgrade(t, "tas", d)
	if f := d.Fetches(); len(f) != 1 || f[0].Err != "" {
		t.Errorf("fetches %+v, want one", f)
	}
	if got := d.OtaURL(); got != "http://127.0.0.1:9/tasmota32.bin" {
		t.Errorf("OtaUrl %q after the push, want the old one back", got)
	}
	if !containsCmd(d.Commands(), "Upgrade 1") {
		t.Errorf("commands %q", d.Commands())
	}
}

func containsCmd(cmds []string, want string) bool {
	for _, c := range cmds {
		if strings.EqualFold(c, want) {
			return true
		}
	}
	return false
}

// By URL on an ESP8266 whose image does not fit twice: the -minimal
// companion beside FIRMWARE is fetched, booted, and the full image after
// it; updated only once the full build runs. The minimal build is a step
// of the upgrade, not its end: it fetches and flashes the full image
// moments after its boot, so no Status may reach it either.
func TestFakes19_TasmotaViaURLMinimalTwoStep(t *testing.T) {
	t.Parallel()
	fw := tasFirmware(t, "tasmota", 600_000, true, 1916)
	next := fakedev.TasmotaBuild{Version: "14.4.0", Image: "tasmota", BuildDateTime: "2024-12-01T10:00:00"}
	d := startTasmota(t, fakedev.TasmotaConfig{ESP8266: true, Next: &next})
	o := fakes19Options(t, true, "14.4.0")
	o.VerifyTimeout = 24 * time.Second // two restarts and the minimal image's wait, with room
	rr := run(t, fw, []upload.Target{tasTarget("tas", d)}, o)
	r := rr.result(t, "tas")
	wantOutcome(t, r, upload.OutcomeUpdated)
	noStatusDuringUpgrade(t, "tas", d)
	var ups []string
	for _, e := range d.Events() {
		if e.What == "up" {
			ups = append(ups, e.Build.Version)
		}
	}
	if strings.Join(ups, " ") != "14.4.0(minimal) 14.4.0(tasmota)" {
		t.Errorf("came up on %q, want the minimal then the full build", ups)
	}
}

// The same ESP8266 with no -minimal image beside FIRMWARE: refused before
// any command that changes it.
func TestFakes19_TasmotaViaURLMinimalMissingRefused(t *testing.T) {
	t.Parallel()
	fw := tasFirmware(t, "tasmota", 600_000, false, 1917)
	d := startTasmota(t, fakedev.TasmotaConfig{ESP8266: true})
	rr := run(t, fw, []upload.Target{tasTarget("tas", d)}, fakes19Options(t, true, ""))
	r := rr.result(t, "tas")
	wantOutcome(t, r, upload.OutcomeRefused)
	for _, c := range d.Commands() {
		if !strings.HasPrefix(strings.ToUpper(c), "STATUS") {
			t.Errorf("refused, yet the device ran %q", c)
		}
	}
	if len(d.Fetches()) != 0 || d.Boots() != 0 {
		t.Errorf("fetches %+v, %d boots", d.Fetches(), d.Boots())
	}
}

// By URL on an ESP32 safeboot layout: the app restarts into safeboot,
// which fetches the image; updated once the app runs it.
func TestFakes19_TasmotaViaURLSafeboot(t *testing.T) {
	t.Parallel()
	fw := tasFirmware(t, "tasmota32", 300_000, false, 1918)
	d := startTasmota(t, fakedev.TasmotaConfig{Safeboot: true, Next: &tasNext})
	rr := run(t, fw, []upload.Target{tasTarget("tas", d)}, fakes19Options(t, true, "14.4.0"))
	wantOutcome(t, rr.result(t, "tas"), upload.OutcomeUpdated)
	noStatusDuringUpgrade(t, "tas", d)
	if d.Boots() != 2 {
		t.Errorf("%d boots, want safeboot then the app", d.Boots())
	}
}
