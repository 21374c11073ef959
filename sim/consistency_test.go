package sim

import (
	"slices"
	"testing"
	"time"
)

// TestUptimeFirstStart: uptime counts from reset at the first start as after
// a reboot, so a device up just now has run one boot time (review 68 #14).
func TestUptimeFirstStart(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Timing.BootTime = 3 * time.Second
	d := startDevice(t, cfg)
	if up := d.State().Uptime; up < 3*time.Second || up > 4*time.Second {
		t.Errorf("uptime right after start %v, want the 3 s boot time", up)
	}
}

// TestArduinoEventOrder: on arduino, initArduino marks the image valid when
// the app starts, so valid comes right before ready, after the boot; the
// crash of a boot loop names its version (review 68 #14).
func TestArduinoEventOrder(t *testing.T) {
	t.Run("healthy", func(t *testing.T) {
		var ev eventLog
		cfg := testConfig(Arduino)
		cfg.Timing.BootTime = 400 * time.Millisecond
		cfg.OnEvent = ev.add
		d := startDevice(t, cfg)
		if res, err := espotaPush(t, d.OTAAddr(), testImage(t, "1.0.1"), ""); err != nil || res.final != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
		ev.waitCount(t, EventReady, 2)
		k := ev.kinds()
		i := slices.Index(k, EventReboot)
		if i < 0 || len(k) < i+3 || !slices.Equal(k[i:i+3], []EventKind{EventReboot, EventValid, EventReady}) {
			t.Fatalf("events %q, want reboot, valid, ready", k)
		}
		ev.mu.Lock()
		reboot, valid := ev.ev[i].Time, ev.ev[i+1].Time
		ev.mu.Unlock()
		// The app starts after the boot: valid comes a boot time after the
		// reset, not with it.
		if valid.Sub(reboot) < cfg.Timing.BootTime/2 {
			t.Errorf("valid %v after the reboot, want about the %v boot time", valid.Sub(reboot), cfg.Timing.BootTime)
		}
	})
	t.Run("boot loop", func(t *testing.T) {
		var ev eventLog
		cfg := testConfig(Arduino)
		cfg.OnEvent = ev.add
		cfg.Behaviours = map[string]Behaviour{"1.0.1": CrashOnBoot}
		d := startDevice(t, cfg)
		if res, err := espotaPush(t, d.OTAAddr(), testImage(t, "1.0.1"), ""); err != nil || res.final != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
		if _, err := d.WaitState(ctxFor(t, 10*time.Second), func(s State) bool { return s.Phase == PhaseDown }); err != nil {
			t.Fatal(err)
		}
		ev.mu.Lock()
		defer ev.mu.Unlock()
		var crash *Event
		for i := range ev.ev {
			if e := &ev.ev[i]; e.Event == EventReboot && e.Reason == "crash" {
				crash = e
			}
		}
		if crash == nil || crash.Version != "1.0.1" {
			t.Errorf("crash event %+v, want version 1.0.1", crash)
		}
	})
}
