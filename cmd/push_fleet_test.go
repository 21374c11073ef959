//go:build linux

package cmd

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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
	if err := os.WriteFile(filepath.Join(dir, "fw.bin"), fw, 0o644); err != nil {
		t.Fatal(err)
	}

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
	var sims []*started
	for _, g := range groups {
		args := append([]string{"sim", "-n", fmt.Sprint(g.n), "--base-ip", "127.18." + g.base + ".2",
			"--fast", "--no-mdns", "--duration", "60s", "--json"}, g.simArgs...)
		sims = append(sims, startOts(t, dir, args...))
		for i := range g.n {
			ip := fmt.Sprintf("127.18.%s.%d", g.base, 2+i)
			target := ip
			if g.port == "8266" {
				target += ":8266" // by address: nothing else says 8266
			}
			targets = append(targets, target)
			want[ip+":"+g.port] = g
		}
	}
	for i, s := range sims {
		s.waitLines(t, `"event":"ready"`, groups[i].n)
	}
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

	type result struct {
		Type     string   `json:"type"`
		Address  string   `json:"address"`
		Protocol *string  `json:"protocol"`
		Outcome  string   `json:"outcome"`
		Reason   *string  `json:"reason"`
		Running  *string  `json:"running"`
		Bytes    *int     `json:"bytes"`
		Message  string   `json:"message"`
		Warnings []string `json:"warnings"`
	}
	seen := map[string]bool{}
	for _, line := range out {
		if !strings.HasPrefix(line, `{"type":"result"`) {
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("result line: %v\n%s", err, line)
		}
		g, ok := want[r.Address]
		if !ok || seen[r.Address] {
			t.Errorf("unexpected or repeated result for %q:\n%s", r.Address, line)
			continue
		}
		seen[r.Address] = true
		str := func(p *string) string {
			if p == nil {
				return "<null>"
			}
			return *p
		}
		reason := str(r.Reason)
		wantReason := g.reason
		if wantReason == "" {
			wantReason = "<null>"
		}
		if str(r.Protocol) != g.protocol || r.Outcome != g.outcome || reason != wantReason {
			t.Errorf("%s (%s): protocol %s, outcome %s, reason %s; want %s, %s, %s\n%s",
				r.Address, g.name, str(r.Protocol), r.Outcome, reason, g.protocol, g.outcome, wantReason, line)
			continue
		}
		if g.says != "" && !strings.Contains(r.Message+"\n"+strings.Join(r.Warnings, "\n"), g.says) {
			t.Errorf("%s (%s): result does not say %q:\n%s", r.Address, g.name, g.says, line)
		}
		switch g.outcome {
		case "updated":
			if str(r.Running) != "1.0.1" {
				t.Errorf("%s (%s): updated but running %s", r.Address, g.name, str(r.Running))
			}
		case "refused":
			if r.Bytes != nil {
				t.Errorf("%s (%s): refused but %d bytes sent", r.Address, g.name, *r.Bytes)
			}
		}
	}
	for addr, g := range want {
		if !seen[addr] {
			t.Errorf("no result for %s (%s)", addr, g.name)
		}
	}

	// The sims' own words (their --json checked against the contract too):
	// each device sent to printed upload_finished, the ArduinoOTA ones with
	// espota's OK; the refused devices never saw an upload start.
	for i, s := range sims {
		g := groups[i]
		if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		s.wait(t) // s.out: all it printed
		finished, started := 0, 0
		for _, line := range s.out {
			if strings.Contains(line, `"event":"upload_finished"`) && (g.protocol != "espota" || strings.Contains(line, `"text":"OK"`)) {
				finished++
			}
			if strings.Contains(line, `"event":"upload_started"`) {
				started++
			}
		}
		if g.outcome == "refused" && started != 0 {
			t.Errorf("%s sims: %d uploads started, want none:\n%s", g.name, started, strings.Join(s.out, "\n"))
		} else if g.outcome != "refused" && finished != g.n {
			t.Errorf("%s sims: %d upload_finished events, want %d:\n%s", g.name, finished, g.n, strings.Join(s.out, "\n"))
		}
	}
}
