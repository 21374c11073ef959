package sim

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// The device shapes of issue 13, each driven by a plain client (net/http or
// raw TCP/UDP) and checked on the wire and in the device's state.

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
			cfg := simtest.Config(Seed)
			c.cfg(&cfg)
			_, err := core.Resolve(cfg)
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

// elfOf is the ELF SHA-256 an image's app description carries.
func elfOf(t *testing.T, img []byte) string {
	t.Helper()
	p, err := image.Parse(img)
	if err != nil || p.App == nil {
		t.Fatalf("parse image: %v", err)
	}
	return hex.EncodeToString(p.App.ELFSHA256[:])
}

// TestForeignELF: the device comes back on the version sent, telling
// another build's elf_sha256.
func TestForeignELF(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Extensions = true
	cfg.Behaviours = map[string]Behaviour{"1.0.1": ForeignELF}
	d := simtest.Start(t, cfg)
	img := simtest.Image(t, "1.0.1")
	simtest.Push(t, d, "1.0.1")
	st, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := simtest.OTAStatusOf(t, d)
	if s.Version != "1.0.1" || s.State != StateValid || s.ELFSHA256 == "" || s.ELFSHA256 == elfOf(t, img) || st.ELFSHA256 != s.ELFSHA256 {
		t.Errorf("foreign elf: status %+v, state elf %s, sent elf %s", s, st.ELFSHA256, elfOf(t, img))
	}
}

// TestSameVersionRebuild: the device runs another build of the version
// sent; behaviours keyed @uploaded and elf: tell the two apart.
func TestSameVersionRebuild(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
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
			cfg := simtest.Config(Seed)
			cfg.Extensions, cfg.Version, cfg.BuildSeed, cfg.Behaviours = true, "1.0.1", 7, c.beh
			d := simtest.Start(t, cfg)
			before := simtest.OTAStatusOf(t, d)
			if before.Version != "1.0.1" || before.ELFSHA256 == sent || before.ELFSHA256 == "" {
				t.Fatalf("pre-flight: %+v, the sent build is %s", before, sent)
			}
			simtest.Push(t, d, "1.0.1")
			st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s State) bool {
				return s.Up && s.BootCount >= 2 && s.AppState != StatePendingVerify && s.AppState != StateNew && s.Rollbacks == c.rollbacks
			})
			if err != nil {
				t.Fatal(err)
			}
			want := c.wantELF
			if want == "" {
				want = before.ELFSHA256
			}
			if after := simtest.OTAStatusOf(t, d); after.Version != "1.0.1" || after.ELFSHA256 != want || st.ELFSHA256 != want {
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
			var ev simtest.EventLog
			cfg := simtest.Config(OTS)
			cfg.Extensions, cfg.FactoryVersion, cfg.OnEvent = true, "0.9.0", ev.Add
			cfg.Behaviours = map[string]Behaviour{"1.0.1": c.beh}
			d := simtest.Start(t, cfg)
			if s := simtest.OTAStatusOf(t, d); s.Version != "1.0.0" || s.Running != "ota_0" || s.State != StateValid {
				t.Fatalf("pre-flight: %+v", s)
			}
			if f := simtest.Slot(d.State(), "factory"); f.Version != "0.9.0" {
				t.Fatalf("factory slot: %+v", f)
			}
			simtest.Push(t, d, "1.0.1")
			st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s State) bool { return s.Up && s.Rollbacks == 1 })
			if err != nil {
				t.Fatal(err)
			}
			if s := simtest.OTAStatusOf(t, d); s.Version != c.version || s.Running != c.running || st.Version != c.version {
				t.Errorf("after the crash: %+v", s)
			}
			ev.WaitCount(t, EventRollback, 1)
			if e, _ := ev.Find(EventRollback); e.Reason != c.event || e.Version != c.version {
				t.Errorf("rollback event: %+v", e)
			}
		})
	}
}

// TestCrashLoop: the new image confirms itself, crashes before the network
// three times, and its boot counter takes the device back to the old image.
func TestCrashLoop(t *testing.T) {
	var ev simtest.EventLog
	cfg := simtest.Config(Seed)
	cfg.Extensions, cfg.OnEvent = true, ev.Add
	cfg.Behaviours = map[string]Behaviour{"1.0.1": CrashLoop}
	d := simtest.Start(t, cfg)
	simtest.Push(t, d, "1.0.1")
	st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s State) bool { return s.Up && s.Rollbacks == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.0.0" || st.Running != "factory" || st.BootCount != 2+core.CrashLoopCount {
		t.Errorf("after the loop: %s on %s, %d boots", st.Version, st.Running, st.BootCount)
	}
	if s := simtest.Slot(st, "ota_0"); s.Version != "1.0.1" || s.State != StateUndefined && s.State != StateValid {
		t.Errorf("ota_0: %+v", s)
	}
	ev.WaitCount(t, EventRollback, 1)
	if e, _ := ev.Find(EventRollback); e.Reason != "boot_counter" {
		t.Errorf("rollback event: %+v", e)
	}
	crashes := 0
	for _, e := range ev.Events() {
		if e.Event == EventReboot && e.Reason == "crash" {
			crashes++
		}
		if e.Event == EventReady && e.Version == "1.0.1" {
			t.Errorf("the crash-looping image reached the network: %+v", e)
		}
	}
	if crashes != core.CrashLoopCount {
		t.Errorf("%d crashes, want %d", crashes, core.CrashLoopCount)
	}
	if s := simtest.OTAStatusOf(t, d); s.Version != "1.0.0" {
		t.Errorf("status: %+v", s)
	}
}
