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
