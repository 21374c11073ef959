package discover

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim"
)

// upload sends an image the way curl does in the seed's docs (test helper:
// the product's uploader lives in package upload).
func upload(t *testing.T, d *sim.Device, version string) {
	t.Helper()
	img, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "ots-fw-main", Version: version})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+d.OTAAddr()+"/update", "application/octet-stream", bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("upload: HTTP %d", resp.StatusCode)
	}
}

// TestWatchSimReboot: a simulated device updated to a new version reboots
// and is announced again with its new TXT version; a stopped fleet's
// goodbyes remove all its devices.
func TestWatchSimReboot(t *testing.T) {
	ifi := mdnsLoopback(t)
	f := startFleet(t, ifi, 3, "127.43.6.2", "reboot", uniqueInstances("reboot"))
	logs := map[string]*eventLog{}
	var emits []func(Event)
	for i := 1; i <= 3; i++ {
		inst := fmt.Sprintf("reboot-%03d", i)
		logs[inst] = &eventLog{}
		emits = append(emits, logs[inst].add(inst))
	}
	watch(t, loCfg(ifi, "_ota._tcp"), func(e Event) {
		for _, f := range emits {
			f(e)
		}
	})
	for inst, l := range logs {
		waitFor(t, inst+" added", 3*time.Second, func() bool { return l.n() > 0 })
	}

	upload(t, f.Device("reboot-01"), "1.0.1")
	l := logs["reboot-001"]
	waitFor(t, "re-announcement with the new version", 10*time.Second, func() bool {
		e := l.last()
		return e.Kind != Removed && e.Device.TXT["version"] == "1.0.1"
	})
	// ESP-IDF sends no goodbye on esp_restart() and announces again at boot:
	// the watch sees a change, never a removal.
	if k := l.kinds(); !slices.Equal(k, []EventKind{Added, Changed}) {
		t.Errorf("reboot seen as %v, want [added changed]", k)
	}

	f.Close()
	for inst, l := range logs {
		waitFor(t, inst+" removed", 3*time.Second, func() bool { return l.last().Kind == Removed })
		if e := l.last(); e.Reason != "goodbye" {
			t.Errorf("%s: removal %+v", inst, e)
		}
	}
}

// TestWatchSimVanish: a device that reboots for longer than its records
// live (records shortened to 1 s with MDNSTTL) is removed when its SRV and
// A expire, unanswered refresh queries and all, and is added again when it
// announces itself at boot. Its neighbour, answering refreshes, stays.
func TestWatchSimVanish(t *testing.T) {
	ifi := mdnsLoopback(t)
	ft := sim.FastTiming()
	slow := ft
	slow.BootTime = 3 * time.Second
	f, err := sim.StartFleet(context.Background(), sim.FleetConfig{
		N: 2, BaseIP: netip.MustParseAddr("127.43.10.2"), NamePrefix: "vanish", MDNSInterface: ifi, WebPort: -1,
		MDNSTTL:  time.Second,
		Template: sim.Config{Personality: sim.Seed, Extensions: true, Timing: &ft},
		Configure: func(i int, c *sim.Config) {
			c.Instance = fmt.Sprintf("vanish-%03d", i+1)
			if i == 0 {
				c.Timing = &slow
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var gone, stays eventLog
	watchOne, watchTwo := gone.add("vanish-001"), stays.add("vanish-002")
	watch(t, loCfg(ifi, "_ota._tcp"), func(e Event) { watchOne(e); watchTwo(e) })
	waitFor(t, "both added", 5*time.Second, func() bool { return gone.n() > 0 && stays.n() > 0 })

	f.Device("vanish-01").Reboot()
	rebootAt := time.Now()
	waitFor(t, "removal by expiry", 3*time.Second, func() bool { return gone.last().Kind == Removed })
	if e := gone.last(); e.Reason != "expired" {
		t.Errorf("removal %+v, want expired", e)
	}
	t.Logf("removed %v after the reboot began (TTL 1 s)", time.Since(rebootAt).Round(10*time.Millisecond))
	waitFor(t, "re-announcement at boot", 8*time.Second, func() bool { return gone.last().Kind == Added })
	if k := gone.kinds(); !slices.Equal(k, []EventKind{Added, Removed, Added}) {
		t.Errorf("vanish-001 events %v", k)
	}
	if k := stays.kinds(); !slices.Equal(k, []EventKind{Added}) {
		t.Errorf("vanish-002 events %v: a device answering refreshes must stay", k)
	}
}
