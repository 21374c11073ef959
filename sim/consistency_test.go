package sim

import (
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestUptimeFirstStart: uptime counts from reset at the first start as after
// a reboot, so a device up just now has run one boot time (review 68 #14).
func TestUptimeFirstStart(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Timing.BootTime = 3 * time.Second
	d := simtest.Start(t, cfg)
	if up := d.State().Uptime; up < 3*time.Second || up > 4*time.Second {
		t.Errorf("uptime right after start %v, want the 3 s boot time", up)
	}
}

// TestPullPersonalities: the pulling personalities have names of their own,
// which the device core does not know (the CLI starts them apart: a name
// the core took too would start the wrong thing).
func TestPullPersonalities(t *testing.T) {
	seen := map[Personality]bool{}
	for _, p := range Personalities() {
		seen[p] = true
	}
	want := []Personality{TasmotaMQTT, ESPHomePull}
	if got := PullPersonalities(); len(got) != len(want) {
		t.Fatalf("pull personalities %v, want %v", got, want)
	}
	for i, p := range PullPersonalities() {
		if p != want[i] || seen[p] {
			t.Errorf("%q: listed twice or out of order (%v)", p, PullPersonalities())
		}
		seen[p] = true
		if _, err := ParsePersonality(string(p)); err == nil {
			t.Errorf("the device core takes %q", p)
		}
	}
}
