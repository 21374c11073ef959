package discover

import (
	"bytes"
	"fmt"
	"net/http"
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
	t.Logf("reboot seen as %v", l.kinds())

	f.Close()
	for inst, l := range logs {
		waitFor(t, inst+" removed", 3*time.Second, func() bool { return l.last().Kind == Removed })
		if e := l.last(); e.Reason != "goodbye" {
			t.Errorf("%s: removal %+v", inst, e)
		}
	}
}
