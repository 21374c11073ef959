package sim

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
)

// The device shapes of issue 13, each driven by a plain client (net/http or
// raw TCP/UDP) and checked on the wire and in the device's state.

// statusKeys GETs a JSON status endpoint and returns its keys, or the
// status code when it is not 200.
func statusKeys(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	code, js, err := getGo(t, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if code != 200 {
		return code, nil
	}
	m := map[string]any{}
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatalf("GET %s: %q: %v", url, js, err)
	}
	return code, m
}

func TestOmitFields(t *testing.T) {
	cases := []struct {
		name        string
		p           Personality
		apiUptime   bool
		omit        []string
		otaCode     int      // /ota/status answer
		otaAbsent   []string // keys missing from /ota/status
		apiCode     int      // /api/status answer (ots)
		apiAbsent   []string
		apiPresent  []string
		txtAbsent   []string // TXT keys missing from _ota._tcp
		txtPresent  []string
		otaPresent0 []string
	}{
		{name: "ots as shipped: /api/status without uptime", p: OTS, otaCode: 200, apiCode: 200,
			apiAbsent: []string{"uptime"}, apiPresent: []string{"firmwareVersion", "mode", "ip", "serialNumber", "ownerName"},
			txtPresent: []string{"version", "project", "chip"}, otaPresent0: otaStatusKeys},
		{name: "ots with uptime in /api/status", p: OTS, apiUptime: true, otaCode: 200, apiCode: 200,
			apiPresent: []string{"firmwareVersion", "uptime"}},
		{name: "each /ota/status key", p: Seed, omit: []string{"ota-status.uptime_s", "ota-status.elf_sha256", "ota-status.state", "ota-status.version"},
			otaCode: 200, otaAbsent: []string{"uptime_s", "elf_sha256", "state", "version"}, otaPresent0: []string{"project", "running", "boot", "slot_size"}},
		{name: "no /ota/status at all", p: Seed, omit: []string{"ota-status"}, otaCode: 404},
		{name: "api-status keys", p: OTS, apiUptime: true, omit: []string{"api-status.firmwareVersion", "api-status.uptime"}, otaCode: 200, apiCode: 200,
			apiAbsent: []string{"firmwareVersion", "uptime"}, apiPresent: []string{"mode", "serialNumber"}},
		{name: "no /api/status", p: OTS, omit: []string{"api-status"}, otaCode: 200, apiCode: 404},
		{name: "TXT without version", p: Seed, omit: []string{"txt.version"}, otaCode: 200,
			txtAbsent: []string{"version"}, txtPresent: []string{"project", "chip", "board", "auth", "path", "api"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(c.p)
			cfg.Extensions, cfg.APIUptime, cfg.Omit = true, c.apiUptime, c.omit
			d := startDevice(t, cfg)
			code, m := statusKeys(t, "http://"+d.OTAAddr()+"/ota/status")
			if code != c.otaCode {
				t.Fatalf("/ota/status: %d, want %d", code, c.otaCode)
			}
			for _, k := range c.otaAbsent {
				if _, ok := m[k]; ok {
					t.Errorf("/ota/status tells %s: %v", k, m)
				}
			}
			for _, k := range c.otaPresent0 {
				if _, ok := m[k]; !ok {
					t.Errorf("/ota/status lacks %s: %v", k, m)
				}
			}
			if c.apiCode != 0 {
				code, m := statusKeys(t, "http://"+d.WebAddr()+"/api/status")
				if code != c.apiCode {
					t.Fatalf("/api/status: %d, want %d", code, c.apiCode)
				}
				for _, k := range c.apiAbsent {
					if _, ok := m[k]; ok {
						t.Errorf("/api/status tells %s: %v", k, m)
					}
				}
				for _, k := range c.apiPresent {
					if _, ok := m[k]; !ok {
						t.Errorf("/api/status lacks %s: %v", k, m)
					}
				}
			}
			var txt []string
			for _, s := range d.s.fw.Services(d.env) {
				if s.Type == "_ota._tcp" {
					txt = s.TXT
				}
			}
			keys := map[string]bool{}
			for _, item := range txt {
				k, _, _ := strings.Cut(item, "=")
				keys[k] = true
			}
			for _, k := range c.txtAbsent {
				if keys[k] {
					t.Errorf("TXT tells %s: %v", k, txt)
				}
			}
			for _, k := range c.txtPresent {
				if !keys[k] {
					t.Errorf("TXT lacks %s: %v", k, txt)
				}
			}
		})
	}
}

func TestShapeConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  func(*Config)
		want string
	}{
		{"ota-status without extensions", func(c *Config) { c.Omit = []string{"ota-status.uptime_s"} }, "Extensions"},
		{"api-status on seed", func(c *Config) { c.Extensions = true; c.Omit = []string{"api-status.uptime"} }, "only the ots personality"},
		{"api uptime not told", func(c *Config) { c.Personality = OTS; c.Omit = []string{"api-status.uptime"} }, "tells no uptime already"},
		{"unknown field", func(c *Config) { c.Extensions = true; c.Omit = []string{"ota-status.colour"} }, "unknown field"},
		{"txt without extensions", func(c *Config) { c.Omit = []string{"txt.version"} }, "TXT"},
		{"api uptime on seed", func(c *Config) { c.APIUptime = true }, "ots personality"},
		{"factory version on arduino", func(c *Config) { c.Personality = Arduino; c.FactoryVersion = "0.9.0" }, "factory slot"},
		{"factory version and image", func(c *Config) { c.FactoryVersion = "0.9.0"; c.Factory = []byte{0xE9} }, "not both"},
		{"bad elf key", func(c *Config) { c.Behaviours = map[string]Behaviour{"elf:xyz": Healthy} }, "hex digits"},
		{"bad @ key", func(c *Config) { c.Behaviours = map[string]Behaviour{"@next": Healthy} }, "@uploaded"},
		{"crash-to-factory on arduino", func(c *Config) {
			c.Personality = Arduino
			c.Behaviours = map[string]Behaviour{"1.0.1": CrashToFactory}
		}, "factory app"},
		{"foreign-elf on esp8266", func(c *Config) {
			c.Personality = ESP8266
			c.Behaviours = map[string]Behaviour{"1.0.1": ForeignELF}
		}, "esp8266"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(Seed)
			c.cfg(&cfg)
			_, err := resolve(cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line with %q", err, c.want)
			}
		})
	}
	// What OmittableFields lists is accepted, and nothing else for that device.
	for _, p := range Personalities() {
		for _, ext := range []bool{false, true} {
			fields := OmittableFields(p, ext, p == OTS)
			if err := CheckOmit(p, ext, p == OTS, fields); err != nil {
				t.Errorf("%s ext=%v: %v", p, ext, err)
			}
		}
	}
}

func TestParseBehaviourKeys(t *testing.T) {
	good := map[string]string{
		"@uploaded=crash-on-boot":                     "@uploaded",
		"elf:ABCDEF12=foreign-elf":                    "elf:abcdef12",
		"1.0.1=crash-loop":                            "1.0.1",
		"0.9=crash-to-factory":                        "0.9",
		"elf:" + strings.Repeat("a", 64) + "=healthy": "elf:" + strings.Repeat("a", 64),
	}
	for in, key := range good {
		k, _, err := ParseBehaviourSpec(in)
		if err != nil || k != key {
			t.Errorf("%q: %q %v", in, k, err)
		}
	}
	for _, in := range []string{"elf:abc=healthy", "elf:" + strings.Repeat("a", 65) + "=healthy", "elf:zzzzzzzz=healthy", "@later=healthy", strings.Repeat("v", 32) + "=healthy"} {
		if _, _, err := ParseBehaviourSpec(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// elfOf is the ELF SHA-256 an image's app description carries.
func elfOf(t *testing.T, img []byte) string {
	t.Helper()
	p, err := image.Parse(img)
	if err != nil || p.App == nil {
		t.Fatalf("parse image: %v", err)
	}
	return hex.EncodeToString(p.App.ELFSHA256[:])
}

func otaStatusOf(t *testing.T, d *Device) otaStatus {
	t.Helper()
	code, js, err := getGo(t, "http://"+d.OTAAddr()+"/ota/status")
	if err != nil || code != 200 {
		t.Fatalf("/ota/status: %d %v", code, err)
	}
	var s otaStatus
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestForeignELF: the device comes back on the version sent, telling
// another build's elf_sha256.
func TestForeignELF(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Extensions = true
	cfg.Behaviours = map[string]Behaviour{"1.0.1": ForeignELF}
	d := startDevice(t, cfg)
	img := testImage(t, "1.0.1")
	push(t, d, "1.0.1")
	st, err := d.WaitVersion(ctxFor(t, 10*time.Second), "1.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := otaStatusOf(t, d)
	if s.Version != "1.0.1" || s.State != StateValid || s.ELFSHA256 == "" || s.ELFSHA256 == elfOf(t, img) || st.ELFSHA256 != s.ELFSHA256 {
		t.Errorf("foreign elf: status %+v, state elf %s, sent elf %s", s, st.ELFSHA256, elfOf(t, img))
	}
}

// TestSameVersionRebuild: the device runs another build of the version
// sent; behaviours keyed @uploaded and elf: tell the two apart.
func TestSameVersionRebuild(t *testing.T) {
	img := testImage(t, "1.0.1")
	sent := elfOf(t, img)
	cases := []struct {
		name      string
		beh       map[string]Behaviour
		wantELF   string // "" = the pre-flight build's
		rollbacks int
	}{
		{"installs and keeps", nil, sent, 0},
		{"rolls back to the same-version build (@uploaded)", map[string]Behaviour{BehaveUploaded: CrashOnBoot}, "", 1},
		{"rolls back to the same-version build (elf key)", map[string]Behaviour{"elf:" + strings.ToUpper(sent[:12]): Unstable}, "", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(Seed)
			cfg.Extensions, cfg.Version, cfg.BuildSeed, cfg.Behaviours = true, "1.0.1", 7, c.beh
			d := startDevice(t, cfg)
			before := otaStatusOf(t, d)
			if before.Version != "1.0.1" || before.ELFSHA256 == sent || before.ELFSHA256 == "" {
				t.Fatalf("pre-flight: %+v, the sent build is %s", before, sent)
			}
			push(t, d, "1.0.1")
			st, err := d.WaitState(ctxFor(t, 10*time.Second), func(s State) bool {
				return s.Up && s.BootCount >= 2 && s.AppState != StatePendingVerify && s.AppState != StateNew && s.Rollbacks == c.rollbacks
			})
			if err != nil {
				t.Fatal(err)
			}
			want := c.wantELF
			if want == "" {
				want = before.ELFSHA256
			}
			if after := otaStatusOf(t, d); after.Version != "1.0.1" || after.ELFSHA256 != want || st.ELFSHA256 != want {
				t.Errorf("after: %+v, want elf %s", after, want)
			}
		})
	}
}

// TestThirdImage: a device updated once before (factory 0.9.0, running
// 1.0.0 from ota_0) whose new image crashes and erases otadata ends on the
// factory app; a plain crash goes back to 1.0.0.
func TestThirdImage(t *testing.T) {
	for _, c := range []struct {
		beh                     Behaviour
		version, running, event string
	}{
		{CrashToFactory, "0.9.0", "factory", "factory_reset"},
		{CrashOnBoot, "1.0.0", "ota_0", "aborted"},
	} {
		t.Run(string(c.beh), func(t *testing.T) {
			var ev eventLog
			cfg := testConfig(OTS)
			cfg.Extensions, cfg.FactoryVersion, cfg.OnEvent = true, "0.9.0", ev.add
			cfg.Behaviours = map[string]Behaviour{"1.0.1": c.beh}
			d := startDevice(t, cfg)
			if s := otaStatusOf(t, d); s.Version != "1.0.0" || s.Running != "ota_0" || s.State != StateValid {
				t.Fatalf("pre-flight: %+v", s)
			}
			if f := slot(d.State(), "factory"); f.Version != "0.9.0" {
				t.Fatalf("factory slot: %+v", f)
			}
			push(t, d, "1.0.1")
			st, err := d.WaitState(ctxFor(t, 10*time.Second), func(s State) bool { return s.Up && s.Rollbacks == 1 })
			if err != nil {
				t.Fatal(err)
			}
			if s := otaStatusOf(t, d); s.Version != c.version || s.Running != c.running || st.Version != c.version {
				t.Errorf("after the crash: %+v", s)
			}
			ev.waitCount(t, EventRollback, 1)
			if e, _ := ev.find(EventRollback); e.Reason != c.event || e.Version != c.version {
				t.Errorf("rollback event: %+v", e)
			}
		})
	}
}

// TestCrashLoop: the new image confirms itself, crashes before the network
// three times, and its boot counter takes the device back to the old image.
func TestCrashLoop(t *testing.T) {
	var ev eventLog
	cfg := testConfig(Seed)
	cfg.Extensions, cfg.OnEvent = true, ev.add
	cfg.Behaviours = map[string]Behaviour{"1.0.1": CrashLoop}
	d := startDevice(t, cfg)
	push(t, d, "1.0.1")
	st, err := d.WaitState(ctxFor(t, 10*time.Second), func(s State) bool { return s.Up && s.Rollbacks == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.0.0" || st.Running != "factory" || st.BootCount != 2+crashLoopCount {
		t.Errorf("after the loop: %s on %s, %d boots", st.Version, st.Running, st.BootCount)
	}
	if s := slot(st, "ota_0"); s.Version != "1.0.1" || s.State != StateUndefined && s.State != StateValid {
		t.Errorf("ota_0: %+v", s)
	}
	ev.waitCount(t, EventRollback, 1)
	if e, _ := ev.find(EventRollback); e.Reason != "boot_counter" {
		t.Errorf("rollback event: %+v", e)
	}
	ev.mu.Lock()
	crashes := 0
	for _, e := range ev.ev {
		if e.Event == EventReboot && e.Reason == "crash" {
			crashes++
		}
		if e.Event == EventReady && e.Version == "1.0.1" {
			t.Errorf("the crash-looping image reached the network: %+v", e)
		}
	}
	ev.mu.Unlock()
	if crashes != crashLoopCount {
		t.Errorf("%d crashes, want %d", crashes, crashLoopCount)
	}
	if s := otaStatusOf(t, d); s.Version != "1.0.0" {
		t.Errorf("status: %+v", s)
	}
}

// TestNoReboot: the upload is answered, the new image is the boot image,
// and the device keeps running the old one until something resets it.
func TestNoReboot(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Extensions = true
	cfg.Faults = []Fault{mustFault(t, "no-reboot")}
	d := startDevice(t, cfg)
	push(t, d, "1.0.1")
	// Long past the reboot delay and the boot time of the fast timing.
	time.Sleep(10 * (cfg.Timing.RebootDelayMax + cfg.Timing.BootTime))
	s := otaStatusOf(t, d)
	if st := d.State(); st.BootCount != 1 || s.Version != "1.0.0" || s.Running != "factory" || s.Boot != "ota_0" {
		t.Fatalf("after the 200: %+v, %d boots", s, st.BootCount)
	}
	if rec := lastUpload(t, d); rec.Outcome != "ok" || rec.Status != 200 || rec.Version != "1.0.1" {
		t.Errorf("record: %+v", rec)
	}
	d.Reboot()
	if _, err := d.WaitVersion(ctxFor(t, 10*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
}

func TestNoRebootEspota(t *testing.T) {
	cfg := testConfig(Arduino)
	cfg.Faults = []Fault{mustFault(t, "no-reboot")}
	d := startDevice(t, cfg)
	res, err := espotaPush(t, d.OTAAddr(), testImage(t, "1.0.1"), "")
	if err != nil || res.final != "OK" {
		t.Fatalf("push: %+v %v", res, err)
	}
	time.Sleep(10 * (cfg.Timing.RebootDelayMax + cfg.Timing.BootTime))
	if st := d.State(); st.BootCount != 1 || st.Version != "1.0.0" || st.Running != "app0" || st.Boot != "app1" {
		t.Fatalf("after OK: %s on %s, boot %s, %d boots", st.Version, st.Running, st.Boot, st.BootCount)
	}
}

// TestStatusError: the first reads of each status endpoint answer 500,
// then they answer normally.
func TestStatusError(t *testing.T) {
	for _, c := range []struct {
		spec string
		n    int
	}{{"status-error", 1}, {"status-error:2", 2}} {
		t.Run(c.spec, func(t *testing.T) {
			cfg := testConfig(OTS)
			cfg.Extensions = true
			cfg.Faults = []Fault{mustFault(t, c.spec)}
			d := startDevice(t, cfg)
			for _, url := range []string{"http://" + d.OTAAddr() + "/ota/status", "http://" + d.WebAddr() + "/api/status"} {
				for i := range c.n {
					code, body, err := getGo(t, url)
					if err != nil || code != 500 || body != defaultErrText[500] {
						t.Fatalf("%s read %d: %d %q %v", url, i+1, code, body, err)
					}
				}
				if code, _, err := getGo(t, url); err != nil || code != 200 {
					t.Fatalf("%s after the failures: %d %v", url, code, err)
				}
			}
		})
	}
}

// earlyClient sends the request headers and the first n bytes of body,
// then reads the answer: a device that answers early answers while the
// client still holds the rest. The connection is returned for the rest.
func earlyClient(t *testing.T, addr string, body []byte, n int) (*http.Response, string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", addr, len(body))
	if _, err := c.Write(body[:n]); err != nil {
		t.Fatalf("write %d bytes: %v", n, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer after %d of %d bytes: %v", n, len(body), err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), c
}

func TestEarlyAnswer(t *testing.T) {
	img := testImage(t, "1.0.1")
	cases := []struct {
		spec    string
		send    int    // bytes sent before waiting for the answer
		version string // what the device runs in the end
		outcome string
	}{
		{"early-answer@0%", 0, "1.0.1", "ok"},
		{"early-answer@30%", len(img) / 2, "1.0.1", "ok"},
		{"early-answer@30%:discard", len(img) / 2, "1.0.0", "discarded"},
		{"early-answer@0%:close", 0, "1.0.0", "aborted"},
		{"early-answer@30%:close", len(img) / 2, "1.0.0", "aborted"},
	}
	for _, c := range cases {
		t.Run(c.spec, func(t *testing.T) {
			cfg := testConfig(Seed)
			cfg.Extensions = true
			cfg.Timing.ErrorCloseDelay = 200 * time.Millisecond // so the close mode's answer is read before the RST
			cfg.Faults = []Fault{mustFault(t, c.spec)}
			d := startDevice(t, cfg)
			resp, text, conn := earlyClient(t, d.OTAAddr(), img, c.send)
			if resp.StatusCode != 200 || text != textSeedOK {
				t.Fatalf("early answer: %d %q", resp.StatusCode, text)
			}
			if !strings.HasSuffix(c.spec, ":close") {
				if _, err := conn.Write(img[c.send:]); err != nil {
					t.Fatalf("the rest: %v", err)
				}
			}
			st := waitUploads(t, d, 1)
			rec := st.Uploads[0]
			if rec.Outcome != c.outcome || rec.Status != 200 {
				t.Errorf("record: %+v", rec)
			}
			if c.version == "1.0.1" {
				if _, err := d.WaitVersion(ctxFor(t, 10*time.Second), "1.0.1"); err != nil {
					t.Fatal(err)
				}
				return
			}
			time.Sleep(10 * (cfg.Timing.RebootDelayMax + cfg.Timing.BootTime))
			if st := d.State(); st.Version != "1.0.0" || st.BootCount != 1 || !st.Up {
				t.Errorf("after: %s, %d boots, up %v", st.Version, st.BootCount, st.Up)
			}
		})
	}
}

// TestLoseAnswer: the device installs and restarts, and the client never
// gets the 200: the connection goes silent (then is reset when the device
// is back), or is reset at once.
func TestLoseAnswer(t *testing.T) {
	img := testImage(t, "1.0.1")
	for _, spec := range []string{"lose-answer", "lose-answer:reset"} {
		t.Run(spec, func(t *testing.T) {
			cfg := testConfig(Seed)
			cfg.Extensions = true
			cfg.Faults = []Fault{mustFault(t, spec)}
			d := startDevice(t, cfg)
			r := rawPost(t, d.OTAAddr(), "POST", "/update", nil, img)
			if r.readErr == nil || r.status != 0 {
				t.Fatalf("an answer came: %d %q", r.status, r.body)
			}
			if spec == "lose-answer:reset" && !errors.Is(r.readErr, io.ErrUnexpectedEOF) && !isReset(r.readErr) {
				t.Errorf("read: %v, want a reset", r.readErr)
			}
			if _, err := d.WaitVersion(ctxFor(t, 10*time.Second), "1.0.1"); err != nil {
				t.Fatal(err)
			}
			if rec := lastUpload(t, d); rec.Outcome != "ok" || rec.Status != 0 || rec.Version != "1.0.1" {
				t.Errorf("record: %+v", rec)
			}
		})
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset") || errors.Is(err, io.EOF))
}

// TestTrickleHTTP: the device reads the body a few bytes at a time; the
// upload cannot take less than size ÷ rate.
func TestTrickleHTTP(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Faults = []Fault{mustFault(t, "trickle:2KB/s")}
	d := startDevice(t, cfg)
	body := make([]byte, 3000)
	body[0] = 0xE9
	r := rawPost(t, d.OTAAddr(), "POST", "/update", nil, body)
	if r.status != 500 || r.body != textEndFailed {
		t.Fatalf("answer: %d %q %v", r.status, r.body, r.readErr)
	}
	// 3000 bytes at 2000 B/s in reads of 500: the last read starts 1.25 s in.
	if rec := lastUpload(t, d); rec.Bytes != 3000 || rec.Duration < time.Second {
		t.Errorf("record: %d bytes in %v", rec.Bytes, rec.Duration)
	}
}

// --- espota -----------------------------------------------------------------

// espotaOpen invites the device to upload img (no auth) and returns the
// connection it makes back.
func espotaOpen(t *testing.T, device string, img []byte) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u, err := net.Dial("udp", device)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	fmt.Fprintf(u, "0 %d %d %s\n", ln.Addr().(*net.TCPAddr).Port, len(img), md5hex(img))
	buf := make([]byte, 64)
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := u.Read(buf); err != nil || string(buf[:n]) != "OK" {
		t.Fatalf("invitation: %q %v", buf[:n], err)
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readSome reads what the device sent within wait.
func readSome(c net.Conn, wait time.Duration) (string, error) {
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestEarlyOK: espota's OK arrives while most of the image is still to be
// sent; install mode takes the rest and installs without a second OK.
func TestEarlyOK(t *testing.T) {
	img := testImage(t, "1.0.1")
	for _, c := range []struct {
		spec    string
		version string
	}{{"early-ok@30%", "1.0.1"}, {"early-ok@30%:close", "1.0.0"}} {
		t.Run(c.spec, func(t *testing.T) {
			cfg := testConfig(Arduino)
			cfg.Faults = []Fault{mustFault(t, c.spec)}
			d := startDevice(t, cfg)
			conn := espotaOpen(t, d.OTAAddr(), img)
			okAt := -1
			var after strings.Builder
			sent := 0
			for sent < len(img) {
				end := min(sent+1024, len(img))
				conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Write(img[sent:end]); err != nil {
					break // close mode: the device is gone
				}
				sent = end
				got, err := readSome(conn, 5*time.Second)
				if okAt >= 0 {
					after.WriteString(got)
				} else if strings.Contains(got, "OK") {
					okAt = sent
				}
				if err != nil {
					break
				}
			}
			if okAt < len(img)*30/100 || okAt >= len(img)*35/100 {
				t.Fatalf("OK after %d of %d bytes sent, want at about 30 %%", okAt, len(img))
			}
			if c.version == "1.0.0" {
				if sent == len(img) {
					t.Errorf("the device took all %d bytes after closing", sent)
				}
				st := waitUploads(t, d, 1)
				if st.Uploads[0].Outcome == "ok" || st.Version != "1.0.0" {
					t.Errorf("after: %+v", st.Uploads[0])
				}
				return
			}
			rest, _ := readSome(conn, 5*time.Second)
			if strings.Contains(after.String()+rest, "OK") {
				t.Errorf("a second OK: %q", after.String()+rest)
			}
			if _, err := d.WaitVersion(ctxFor(t, 10*time.Second), "1.0.1"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestChatter: the device stops taking data and keeps sending its last
// count, never OK; the update is aborted when the host gives up.
func TestChatter(t *testing.T) {
	img := testImage(t, "1.0.1")
	for _, spec := range []string{"chatter@50%:20ms", "chatter@100%:20ms"} {
		t.Run(spec, func(t *testing.T) {
			cfg := testConfig(Arduino)
			cfg.Faults = []Fault{mustFault(t, spec)}
			d := startDevice(t, cfg)
			conn := espotaOpen(t, d.OTAAddr(), img)
			// The host sends in lockstep until its writes stall (the device
			// takes nothing more) or the image is out.
			for sent := 0; sent < len(img); {
				end := min(sent+1024, len(img))
				conn.SetWriteDeadline(time.Now().Add(time.Second))
				n, err := conn.Write(img[sent:end])
				sent += n
				if err != nil {
					break
				}
				if _, err := readSome(conn, 5*time.Second); err != nil {
					t.Fatalf("no count after %d bytes: %v", sent, err)
				}
			}
			// Nothing more is taken, yet counts keep coming, and never OK.
			var got strings.Builder
			for range 5 {
				s, err := readSome(conn, 5*time.Second)
				if err != nil {
					t.Fatalf("chatter stopped: %v (had %q)", err, got.String())
				}
				got.WriteString(s)
			}
			if strings.Contains(got.String(), "OK") || strings.Trim(got.String(), "0123456789") != "" || got.Len() == 0 {
				t.Errorf("chatter: %q", got.String())
			}
			conn.Close()
			st := waitUploads(t, d, 1)
			rec := st.Uploads[0]
			point := int64(len(img))
			if strings.HasPrefix(spec, "chatter@50%") {
				point = int64(len(img)) / 2
			}
			if rec.Outcome != "aborted" || rec.Bytes < point || rec.Bytes > point+1460 || st.Version != "1.0.0" {
				t.Errorf("record: %+v (point %d), running %s", rec, point, st.Version)
			}
		})
	}
}

// TestTrickleEspota: counts come small and steadily, never the core's 1460.
func TestTrickleEspota(t *testing.T) {
	cfg := testConfig(Arduino)
	cfg.Faults = []Fault{mustFault(t, "trickle:2KB/s")}
	d := startDevice(t, cfg)
	img := testImage(t, "1.0.1")
	conn := espotaOpen(t, d.OTAAddr(), img)
	go func() {
		conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		conn.Write(img) // blocks while the device trickles; ends with the test
	}()
	start := time.Now()
	var counts []string
	var buf strings.Builder
	for len(counts) < 6 {
		s, err := readSome(conn, 5*time.Second)
		if err != nil {
			t.Fatalf("count %d: %v", len(counts)+1, err)
		}
		buf.WriteString(s)
		// Counts are run together: each is "500" here, so split them so.
		for strings.HasPrefix(buf.String(), "500") {
			counts = append(counts, "500")
			rest := strings.TrimPrefix(buf.String(), "500")
			buf.Reset()
			buf.WriteString(rest)
		}
		if buf.Len() > 0 && !strings.HasPrefix("500", buf.String()) {
			t.Fatalf("a count other than 500: %q", buf.String())
		}
	}
	// Six reads of 500 bytes at 2000 B/s: at least 1.25 s between the first and the last.
	if took := time.Since(start); took < time.Second {
		t.Errorf("6 counts in %v", took)
	}
	if slices.Contains(counts, "1460") {
		t.Errorf("counts %v", counts)
	}
}
