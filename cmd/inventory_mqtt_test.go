package cmd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/internal/fakedev"
)

// runWithConfig runs ots-ota with a config file holding configYAML.
func runWithConfig(t *testing.T, configYAML string, args ...string) (int, string, string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "cfg.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	streams, out, errOut := TestStreams()
	code := Execute(context.Background(), append([]string{"--config", cfg}, args...), streams)
	return code, out.String(), errOut.String()
}

// TestInventoryMQTTOnly: an inventory device with an mqtt_topic and no
// address (reached over the broker only, by rollout) is a valid entry;
// push, info and discover leave it out of a group or the inventory with
// one line, and refuse it, exit 2, when it is named.
func TestInventoryMQTTOnly(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	d := startFake(t, fakedev.HTTPConfig{OTAStatus: true})
	inv := fmt.Sprintf(`inventory:
  devices:
    - {name: kitchen, address: 127.0.0.1, port: %d}
    - {name: barn-plug, mqtt_topic: barn_plug}
  groups:
    both: [kitchen, barn-plug]
    far: [barn-plug]`, d.Port())
	const left = "ots-ota: barn-plug: no address (reached over MQTT only); "

	code, out, errOut := runWithConfig(t, inv, append(append([]string{"push"}, pushFast...), "--inventory-only", "--group", "both", fw)...)
	if code != ExitOK || !strings.Contains(errOut, left+"not pushed\n") || !strings.Contains(out, "kitchen") || strings.Contains(out, "barn-plug") {
		t.Errorf("push --group: exit %d\n%s\n%s", code, out, errOut)
	}
	if n := d.Uploads(); n != 1 {
		t.Errorf("kitchen got %d uploads, want 1", n)
	}

	code, out, errOut = runWithConfig(t, inv, append(append([]string{"push"}, pushFast...), "--inventory-only", "--group", "far", fw)...)
	if code != ExitFailed || !strings.Contains(errOut, left+"not pushed\n") ||
		!strings.Contains(errOut, "no devices to update: 1 inventory device(s) have no address (reached over MQTT only); update them with ots-ota rollout") {
		t.Errorf("push --group of MQTT-only devices: exit %d\n%s\n%s", code, out, errOut)
	}

	const refused = "barn-plug has no address in the inventory: it is reached over MQTT only (ots-ota rollout updates it); give it address: to reach it directly"
	for _, args := range [][]string{
		append(append([]string{"push"}, pushFast...), "--inventory-only", fw, "kitchen", "barn-plug"),
		{"info", "--inventory-only", "barn-plug"},
	} {
		code, out, errOut = runWithConfig(t, inv, args...)
		if code != ExitUsage || !strings.Contains(errOut, "ots-ota: error: "+refused+"\n") {
			t.Errorf("%s naming it: exit %d, want 2 and the one line\n%s\n%s", args[0], code, out, errOut)
		}
	}
	if n := d.Uploads(); n != 1 {
		t.Errorf("a refused push sent something: %d uploads", n)
	}

	code, out, errOut = runWithConfig(t, inv, "info", "--inventory-only", "--group", "both")
	if code != ExitOK || !strings.Contains(errOut, left+"not queried\n") || !strings.Contains(out, "kitchen") || strings.Contains(out, "barn-plug") {
		t.Errorf("info --group: exit %d\n%s\n%s", code, out, errOut)
	}

	code, out, errOut = runWithConfig(t, inv, "discover", "--inventory-only", "--no-probe")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != ExitOK || !strings.Contains(errOut, left+"not listed\n") || len(lines) != 2 || !strings.HasPrefix(lines[1], "kitchen ") ||
		slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "barn-plug") }) {
		t.Errorf("discover --inventory-only: exit %d\n%s\n%s", code, out, errOut)
	}
}
