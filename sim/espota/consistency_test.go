package espota

import (
	"slices"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestArduinoEventOrder: on arduino, initArduino marks the image valid when
// the app starts, so valid comes right before ready, after the boot; the
// crash of a boot loop names its version (review 68 #14).
func TestArduinoEventOrder(t *testing.T) {
	t.Run("healthy", func(t *testing.T) {
		var ev simtest.EventLog
		cfg := simtest.Config(ArduinoSketch)
		cfg.Timing.BootTime = 400 * time.Millisecond
		cfg.OnEvent = ev.Add
		d := simtest.Start(t, cfg)
		if res, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, "1.0.1"), ""); err != nil || res.Final != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
		ev.WaitCount(t, core.EventReady, 2)
		k := ev.Kinds()
		i := slices.Index(k, core.EventReboot)
		if i < 0 || len(k) < i+3 || !slices.Equal(k[i:i+3], []core.EventKind{core.EventReboot, core.EventValid, core.EventReady}) {
			t.Fatalf("events %q, want reboot, valid, ready", k)
		}
		evs := ev.Events()
		reboot, valid := evs[i].Time, evs[i+1].Time
		// The app starts after the boot: valid comes a boot time after the
		// reset, not with it.
		if valid.Sub(reboot) < cfg.Timing.BootTime/2 {
			t.Errorf("valid %v after the reboot, want about the %v boot time", valid.Sub(reboot), cfg.Timing.BootTime)
		}
	})
	t.Run("boot loop", func(t *testing.T) {
		var ev simtest.EventLog
		cfg := simtest.Config(ArduinoSketch)
		cfg.OnEvent = ev.Add
		cfg.Behaviours = map[string]core.Behaviour{"1.0.1": core.CrashOnBoot}
		d := simtest.Start(t, cfg)
		if res, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, "1.0.1"), ""); err != nil || res.Final != "OK" {
			t.Fatalf("%+v %v", res, err)
		}
		if _, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.Phase == core.PhaseDown }); err != nil {
			t.Fatal(err)
		}
		evs := ev.Events()
		var crash *core.Event
		for i := range evs {
			if e := &evs[i]; e.Event == core.EventReboot && e.Reason == "crash" {
				crash = e
			}
		}
		if crash == nil || crash.Version != "1.0.1" {
			t.Errorf("crash event %+v, want version 1.0.1", crash)
		}
	})
}
