package cmd

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim"
)

// TestPushGroupOverMDNS: an inventory group of ArduinoOTA devices. mDNS
// TXT tells espota and the running version; verification reads a fresh
// TXT record after the reboot. Multicast only inside a private network
// namespace (OTS_OTA_MDNS_TESTS=1, as .ci/run sets up).
func TestPushGroupOverMDNS(t *testing.T) {
	lo := multicastLo(t)
	tm := sim.FastTiming()
	tm.BootTime = 300 * time.Millisecond
	// Host names of their own: other tests' devices share this lo.
	fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{N: 2, BaseIP: netip.AddrFrom4([4]byte{127, 0, 73, 2}),
		NamePrefix: "push-mdns", MDNSInterface: lo,
		Template: sim.Config{Personality: sim.Arduino, Extensions: true, Timing: &tm, Project: "ots-fw-main"}})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	cfg := filepath.Join(t.TempDir(), "inv.yaml")
	inv := "inventory:\n  devices:\n    - name: ard1\n      address: 127.0.73.2\n    - name: ard2\n      address: 127.0.73.3\n  groups:\n    ards: [ard1, ard2]\n"
	if err := os.WriteFile(cfg, []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	streams, out, errOut := TestStreams()
	code := Execute(context.Background(), []string{"push", "--config", cfg, "--group", "ards", "--interface", lo.Name,
		"--stability-window", "300ms", writeTestFirmware(t, "1.0.1")}, streams)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, name := range []string{"ard1", "ard2"} {
		line := ""
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, name+" ") {
				line = l
			}
		}
		if !strings.Contains(line, " espota ") || !strings.Contains(line, "1.0.0 → 1.0.1") || !strings.Contains(line, " updated ") {
			t.Errorf("%s: %q\n%s", name, line, out)
		}
	}
	for _, d := range fl.Devices() {
		if v := d.State().Version; v != "1.0.1" {
			t.Errorf("%s runs %s", d.Name(), v)
		}
	}
}
