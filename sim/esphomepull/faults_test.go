package esphomepull

import (
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testbroker"
)

// TestFaults: one fleet, one node per fault, each told INSTALL once it
// sees the update (auto-install needs none); what each shows on the wire.
func TestFaults(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	srv := serve(t)
	img := buildImage(t, "2.0.0", 80<<10)
	srv.put("/fw.bin", img)
	srv.put("/manifest.json", manifestFor("2.0.0", "ESP32-S3", "/fw.bin", img))
	srv.put("/quirk.json", manifestFor("2.0.0", "ESP32-S3", "/fw/http-light.bin", img))
	w := watch(t, b, "#")
	url := srv.url("/manifest.json")
	node := func(name string, faults ...Fault) Device {
		return Device{Name: name, ManifestURL: url, Faults: faults}
	}
	devs := fast(
		node("ok"),
		node("cut", FaultDownloadCut),
		node("md5", FaultMD5Mismatch),
		node("crash", FaultCrashOnBoot),
		node("gone", FaultNeverComesBack),
		// A download of two seconds at 40 KiB/s: the link drops halfway and
		// comes back (100 ms) while it goes on.
		Device{Name: "drop", ManifestURL: url, Faults: []Fault{FaultBrokerDrop}, FlashRate: 40 << 10},
		node("silent", FaultSilent),
		node("unreachable", FaultManifestUnreachable),
		node("wrong", FaultWrongVersion),
		node("auto", FaultAutoInstall),
		// wrong-version with the automation: a reflash after every boot.
		Device{Name: "loop", ManifestURL: url, Faults: []Fault{FaultWrongVersion, FaultAutoInstall}, WrongVersion: "2.0.0-dev"},
		Device{Name: "quirk", ManifestURL: srv.url("/quirk.json")},
	)
	f, ev := startFleet(t, Config{Broker: b.URL(), Devices: devs})
	for _, d := range devs {
		if d.Name == "unreachable" {
			if c := ev.wait(t, d.Name, EventCheckFailed, 1); !strings.Contains(c.Text, "cannot fetch the manifest") || !strings.Contains(c.URL, ":1/") {
				t.Errorf("unreachable: %+v", c)
			}
		} else {
			ev.wait(t, d.Name, EventChecked, 1)
		}
		if d.Name != "auto" && d.Name != "loop" {
			w.Publish(d.Name+"/update/firmware/command", "INSTALL", false)
		}
	}

	t.Run("ok", func(t *testing.T) {
		ev.wait(t, "ok", EventChecked, 2)
		expectNode(t, w, "ok", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0", "offline", "online", "/", "2.0.0/2.0.0")
	})
	t.Run("download-cut", func(t *testing.T) {
		// One state as the install starts, one as it fails (AVAILABLE
		// again): the same JSON; no reboot, no retry.
		if e := ev.wait(t, "cut", EventUpgradeFailed, 1); !strings.Contains(e.Text, "ended early") {
			t.Errorf("%+v", e)
		}
		expectNode(t, w, "cut", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0", "1.0.0/2.0.0")
		if f.Running("cut") != "1.0.0" || f.Installs("cut") != 1 {
			t.Errorf("runs %s after %d installs", f.Running("cut"), f.Installs("cut"))
		}
	})
	t.Run("md5-mismatch", func(t *testing.T) {
		if e := ev.wait(t, "md5", EventUpgradeFailed, 1); !strings.Contains(e.Text, "MD5 mismatch") {
			t.Errorf("%+v", e)
		}
		expectNode(t, w, "md5", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0", "1.0.0/2.0.0")
		if f.Running("md5") != "1.0.0" {
			t.Errorf("runs %s", f.Running("md5"))
		}
	})
	t.Run("crash-on-boot", func(t *testing.T) {
		// The new image boots (online, the empty state), crashes before
		// its first check (the will: offline), the old one boots and
		// tells 1.0.0 again.
		ev.wait(t, "crash", EventRolledBack, 1)
		ev.wait(t, "crash", EventChecked, 2)
		expectNode(t, w, "crash", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0", "offline", "online", "/", "offline", "online", "/", "1.0.0/2.0.0")
		if f.Running("crash") != "1.0.0" {
			t.Errorf("runs %s", f.Running("crash"))
		}
	})
	t.Run("never-comes-back", func(t *testing.T) {
		ev.wait(t, "gone", EventGone, 1)
		time.Sleep(20 * 50 * time.Millisecond) // twenty boot times
		expectNode(t, w, "gone", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0", "offline")
	})
	t.Run("broker-drop", func(t *testing.T) {
		ev.wait(t, "drop", EventChecked, 2)
		// The will mid-download, the reconnect's online and state (still
		// the same JSON), then the reboot as usual.
		expectNode(t, w, "drop", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0", "offline", "online", "1.0.0/2.0.0",
			"offline", "online", "/", "2.0.0/2.0.0")
		if !ev.has("drop", EventLinkDown) || f.Running("drop") != "2.0.0" {
			t.Errorf("runs %s; events %v", f.Running("drop"), ev.of("drop"))
		}
	})
	t.Run("silent", func(t *testing.T) {
		ev.wait(t, "silent", EventChecked, 2)
		expectNode(t, w, "silent", "online", "offline", "online")
		if f.Running("silent") != "2.0.0" {
			t.Errorf("runs %s", f.Running("silent"))
		}
	})
	t.Run("manifest-unreachable", func(t *testing.T) {
		if c := ev.wait(t, "unreachable", EventCommand, 1); !strings.Contains(c.Text, "ignored") {
			t.Errorf("%+v", c)
		}
		expectNode(t, w, "unreachable", "online", "/")
	})
	t.Run("wrong-version", func(t *testing.T) {
		ev.wait(t, "wrong", EventChecked, 2)
		expectNode(t, w, "wrong", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0", "offline", "online", "/", "2.0.0-other/2.0.0")
	})
	t.Run("auto-install", func(t *testing.T) {
		ev.wait(t, "auto", EventChecked, 2)
		expectNode(t, w, "auto", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0", "offline", "online", "/", "2.0.0/2.0.0")
		if f.Installs("auto") != 1 {
			t.Errorf("%d installs", f.Installs("auto"))
		}
	})
	t.Run("wrong-version+auto-install", func(t *testing.T) {
		ev.wait(t, "loop", EventUpgrade, 3)
		expectInOrder(t, w, "loop", "1.0.0/2.0.0", "offline", "online", "/", "2.0.0-dev/2.0.0", "2.0.0-dev/2.0.0", "offline", "online", "/", "2.0.0-dev/2.0.0")
	})
	t.Run("path-with-http", func(t *testing.T) {
		// "/fw/http-light.bin" is taken as a URL, then refused: no GET,
		// the state stays installing (INSTALL does nothing) until the next
		// check.
		if e := ev.wait(t, "quirk", EventUpgradeFailed, 1); !strings.Contains(e.Text, "URL not set") {
			t.Errorf("%+v", e)
		}
		w.Publish("quirk/update/firmware/command", "INSTALL", false)
		if c := ev.wait(t, "quirk", EventCommand, 2); !strings.Contains(c.Text, "ignored: the state is installing") {
			t.Errorf("%+v", c)
		}
		expectNode(t, w, "quirk", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0")
	})
	if n := srv.count("/fw/http-light.bin"); n != 0 {
		t.Errorf("%d GETs of the quirk's path", n)
	}
}
