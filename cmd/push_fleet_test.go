//go:build linux

package cmd

import (
	"strings"
	"syscall"
	"testing"

	"github.com/ots-ota/ots-ota/image"
)

// fleetGroup is one sim process of the mixed fleet and what each of its
// devices must end as after the one push.
type fleetGroup struct {
	name     string
	simArgs  []string
	n        int
	base     string // third octet under 127.18.
	port     string // appended to the address ("" = push's own choice)
	protocol string
	outcome  string
	reason   string // "" = JSON null
	// message or warning text each device's result must carry.
	says string
}

// TestPushMixedFleet (issue 18): one `push --parallel 0 --json` to 30 devices
// of every family by address, each its own loopback address. The image is
// ESP32-S3 1.0.1 and --expect-version names that same version, so it only
// adds a version to compare for devices whose own words are no version
// (ESPEasy's Git Build): it changes nothing for the rest. ESP8266 devices
// get the ESP32 image: HTTPUpdateServer's OPTIONS tells the chip, so
// refused, nothing sent; ESP8266 ArduinoOTA tells no chip, so it is sent,
// with a warning naming port 8266. The child's peak RSS is logged.
func TestPushMixedFleet(t *testing.T) {
	dir := t.TempDir()
	fw, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "ots-fw-main", Version: "1.0.1", Size: 200 << 10})
	if err != nil {
		t.Fatal(err)
	}
	writeFirmware(t, dir, fw)

	groups := []fleetGroup{
		{name: "seed", simArgs: []string{"--personality", "seed", "--extensions", "--version", "1.0.0"}, n: 4, base: "1",
			port: "3232", protocol: "http", outcome: "updated", says: "runs 1.0.1"},
		{name: "ots", simArgs: []string{"--personality", "ots", "--version", "1.0.0"}, n: 4, base: "2",
			port: "3232", protocol: "http", outcome: "updated", says: "runs 1.0.1"},
		{name: "arduino", simArgs: []string{"--personality", "arduino", "--version", "1.0.0"}, n: 4, base: "3",
			port: "3232", protocol: "espota", outcome: "unverified", reason: "tells-nothing", says: "accepted the image"},
		{name: "esp8266 espota", simArgs: []string{"--personality", "esp8266", "--version", "1.0.0"}, n: 3, base: "4",
			port: "8266", protocol: "espota", outcome: "unverified", reason: "tells-nothing",
			says: "port 8266 is ESP8266's espota port, and an ESP8266 cannot boot an ESP32-family image"},
		{name: "httpupdateserver esp32", simArgs: []string{"--personality", "httpupdateserver"}, n: 4, base: "5",
			port: "80", protocol: "form", outcome: "unverified", reason: "tells-nothing"},
		{name: "httpupdateserver esp8266", simArgs: []string{"--personality", "httpupdateserver", "--chip", "esp8266"}, n: 3, base: "6",
			port: "80", protocol: "form", outcome: "refused", says: "image is built for esp32s3, the device is esp8266"},
		{name: "espeasy", simArgs: []string{"--personality", "espeasy", "--version", "1.0.0"}, n: 4, base: "7",
			port: "80", protocol: "form", outcome: "updated", says: "runs 1.0.1"},
		{name: "elegantota", simArgs: []string{"--personality", "elegantota"}, n: 2, base: "8",
			port: "80", protocol: "elegantota", outcome: "unverified", reason: "tells-nothing"},
		{name: "elegantota async", simArgs: []string{"--personality", "elegantota", "--async"}, n: 2, base: "9",
			port: "80", protocol: "elegantota", outcome: "unverified", reason: "tells-nothing"},
	}

	// Start every sim, then wait for all their devices to be ready.
	want := map[string]fleetGroup{} // address → group
	var targets []string
	sims := startFleetSims(t, dir, "127.18", groups, func(g fleetGroup, _ int, ip string) {
		target := ip
		if g.port == "8266" {
			target += ":8266" // by address: nothing else says 8266
		}
		targets = append(targets, target)
		want[ip+":"+g.port] = g
	})
	if len(targets) != 30 {
		t.Fatalf("%d targets, want 30", len(targets))
	}

	// The push, a process of its own so its peak RSS is its alone.
	// --verify-timeout bounds the wait of the devices that tell nothing;
	// ESPEasy is updated well inside it (a 1 s stability window).
	args := append([]string{"push", "--parallel", "0", "--json", "--expect-version", "1.0.1",
		"--verify-timeout", "8s", "--stability-window", "1s", "fw.bin"}, targets...)
	p := startOts(t, dir, args...)
	out, code := p.wait(t)
	if code != ExitFailed { // the refused ESP8266 HTTPUpdateServers
		t.Errorf("push exit %d, want %d; stderr:\n%s", code, ExitFailed, p.stderr)
	}
	if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		// Linux reports Maxrss in KiB.
		t.Logf("push to %d devices: peak RSS %.1f MiB (race %v)", len(targets), float64(ru.Maxrss)/1024, raceEnabled)
	} else {
		t.Errorf("no rusage for the push process")
	}

	checkFleetResults(t, out, want, func(g fleetGroup) string { return g.name }, func(line string, g fleetGroup) {
		checkFleetResult(t, line, g)
	})

	// The sims' own words (their --json checked against the contract too):
	// each device sent to printed upload_finished, the ArduinoOTA ones with
	// espota's OK; the refused devices never saw an upload start.
	stopSims(t, sims)
	for i, s := range sims {
		g := groups[i]
		started, finished := simUploads(s.out, g.protocol == "espota")
		if g.outcome == "refused" && started != 0 {
			t.Errorf("%s sims: %d uploads started, want none:\n%s", g.name, started, strings.Join(s.out, "\n"))
		} else if g.outcome != "refused" && finished != g.n {
			t.Errorf("%s sims: %d upload_finished events, want %d:\n%s", g.name, finished, g.n, strings.Join(s.out, "\n"))
		}
	}
}
