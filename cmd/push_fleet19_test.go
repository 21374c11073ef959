//go:build linux

package cmd

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/sim/wled"
)

// TestPushMixedFleet19 (issue 19): one `push --group fleet --parallel 0
// --json` to 40 devices of four families (OTS, ArduinoOTA, WLED and
// Tasmota), each named in the inventory with its protocol, as a user
// writes it. One run sends one image and compares one --expect-version
// with what every device tells; the image here is the ESP32 OTS build
// 1.0.1 carrying WLED's release metadata (release ESP32, version 1.0.1),
// so that the families which take it can all be seen updated in the one
// run: OTS by its app descriptor, WLED by /json/info ver, Tasmota by the
// numeric part of Status 0's Version (the sims report the image they run).
// The devices the image is not for are refused with nothing sent: a WLED
// of another release (both named) and ESP8266 Tasmota (chip). README
// "Mixed fleets" says how a real fleet of several firmwares is updated:
// one run per firmware, each with its image and its --expect-version.
func TestPushMixedFleet19(t *testing.T) {
	t.Parallel() // its own addresses (127.19.x); mostly waiting on devices
	dir := t.TempDir()
	fw, err := image.Build(image.BuildOptions{Chip: image.ChipESP32, Project: "ots-fw-main", Version: "1.0.1", Size: 200 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if fw, err = wled.AddMetadata(fw, "1.0.1", "ESP32"); err != nil {
		t.Fatal(err)
	}
	writeFirmware(t, dir, fw)

	// Boot times long enough for the restart to be seen: Tasmota's 2 s TCP
	// connects, WLED's uptime in whole seconds.
	groups := []fleetGroup{
		{name: "seed", simArgs: []string{"--personality", "seed", "--chip", "esp32", "--extensions", "--version", "1.0.0"}, n: 6, base: "1",
			port: "3232", protocol: "http", outcome: "updated", says: "runs 1.0.1"},
		{name: "ots", simArgs: []string{"--personality", "ots", "--chip", "esp32", "--version", "1.0.0"}, n: 6, base: "2",
			port: "3232", protocol: "http", outcome: "updated", says: "runs 1.0.1"},
		{name: "arduino", simArgs: []string{"--personality", "arduino", "--chip", "esp32", "--version", "1.0.0"}, n: 5, base: "3",
			port: "3232", protocol: "espota", outcome: "unverified", reason: "tells-nothing", says: "accepted the image"},
		{name: "esp8266 espota", simArgs: []string{"--personality", "esp8266", "--version", "1.0.0"}, n: 3, base: "4",
			port: "8266", protocol: "espota", outcome: "unverified", reason: "tells-nothing",
			says: "port 8266 is ESP8266's espota port, and an ESP8266 cannot boot an ESP32-family image"},
		{name: "wled 16", simArgs: []string{"--personality", "wled", "--chip", "esp32", "--subnet", "127.0.0.0/8", "--boot-time", "1500ms"}, n: 6, base: "5",
			port: "80", protocol: "wled", outcome: "updated", says: "runs 1.0.1"},
		{name: "wled 0.15", simArgs: []string{"--personality", "wled", "--chip", "esp32", "--version", "0.15.5", "--boot-time", "1500ms"}, n: 3, base: "6",
			port: "80", protocol: "wled", outcome: "updated", says: "runs 1.0.1"},
		{name: "wled ethernet", simArgs: []string{"--personality", "wled", "--chip", "esp32", "--release", "ESP32_Ethernet", "--subnet", "127.0.0.0/8"}, n: 2, base: "7",
			port: "80", protocol: "wled", outcome: "refused", says: `the device runs release "ESP32_Ethernet" (WLED 16.0.1)`},
		{name: "tasmota esp32", simArgs: []string{"--personality", "tasmota", "--chip", "esp32", "--boot-time", "2500ms"}, n: 6, base: "8",
			port: "80", protocol: "tasmota", outcome: "updated", says: "runs 1.0.1"},
		{name: "tasmota esp8266", simArgs: []string{"--personality", "tasmota", "--chip", "esp8266"}, n: 3, base: "9",
			port: "80", protocol: "tasmota", outcome: "refused", says: "the device is esp8266"},
	}

	want := map[string]fleetGroup{} // address → group
	var inv strings.Builder
	inv.WriteString("inventory:\n  devices:\n")
	var names []string
	start := time.Now()
	sims := startFleetSims(t, dir, "127.19", groups, func(g fleetGroup, i int, ip string) {
		name := fmt.Sprintf("%s-%d", strings.ReplaceAll(g.name, " ", "-"), i)
		fmt.Fprintf(&inv, "    - {name: %s, address: %s, port: %s, protocol: %s}\n", name, ip, g.port, g.protocol)
		names = append(names, name)
		want[ip+":"+g.port] = g
	})
	fmt.Fprintf(&inv, "  groups:\n    fleet: [%s]\n", strings.Join(names, ", "))
	if err := os.MkdirAll(filepath.Join(dir, "ots-ota"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ots-ota", "config.yaml"), []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("40 devices ready in %s", time.Since(start).Round(time.Millisecond))
	if len(names) != 40 {
		t.Fatalf("%d devices, want 40", len(names))
	}

	// --verify-timeout is generous for a loaded machine: a Tasmota device is
	// read only once its restart was seen through 2-second TCP connects.
	// Every device ends long before it when all goes well (≈ 6 s).
	p := startOts(t, dir, "push", "--group", "fleet", "--inventory-only", "--parallel", "0", "--json", "--expect-version", "1.0.1",
		"--verify-timeout", "40s", "--stability-window", "1s", "fw.bin")
	began := time.Now()
	out, code := p.wait(t)
	t.Logf("push to %d devices of four families: %s (race %v)", len(names), time.Since(began).Round(time.Millisecond), raceEnabled)
	if code != ExitFailed { // the refused devices
		t.Errorf("push exit %d, want %d; stderr:\n%s", code, ExitFailed, p.stderr)
	}

	checkFleetResults(t, out, want, func(g fleetGroup) string { return g.name }, func(line string, g fleetGroup) {
		checkFleetResult(t, line, g)
	})

	// The sims' own words: every device sent to finished one upload (the
	// ArduinoOTA ones with espota's OK), the refused ones saw none start;
	// no Tasmota device met a Status request while it installed, nor
	// failed a Referer check.
	stopSims(t, sims)
	for i, s := range sims {
		g := groups[i]
		started, finished := simUploads(s.out, g.protocol == "espota")
		bad := 0
		for _, line := range s.out {
			if strings.Contains(line, `"event":"auth_failed"`) || strings.Contains(line, `"event":"fault"`) {
				bad++
			}
		}
		if g.outcome == "refused" && started != 0 || g.outcome != "refused" && finished != g.n || bad != 0 {
			t.Errorf("%s sims: %d uploads started, %d finished, %d auth failures or faults:\n%s", g.name, started, finished, bad, strings.Join(s.out, "\n"))
		}
	}
}

// TestSimSchemaPersonalities: sim --json's closed enum of personalities
// (docs/schema/sim.json) names every personality the sim runs; a new one
// left out fails every --json run of it against the contract.
func TestSimSchemaPersonalities(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(schemaDir(), "sim.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Defs struct {
			Event struct {
				Properties struct {
					Personality struct {
						Enum []any `json:"enum"`
					} `json:"personality"`
				} `json:"properties"`
			} `json:"event"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	enum := fmt.Sprint(doc.Defs.Event.Properties.Personality.Enum)
	for _, p := range sim.Personalities() {
		if !slices.Contains(doc.Defs.Event.Properties.Personality.Enum, any(string(p))) {
			t.Errorf("personality %q is not in sim.json's enum %s", p, enum)
		}
	}
}
