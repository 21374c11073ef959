//go:build linux

package cmd

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/image"
)

// esphomeFleetGroup is one sim process of the ESPHome fleet and what each
// of its devices must end as.
type esphomeFleetGroup struct {
	name    string
	simArgs []string
	n       int
	port    string
	outcome string
	reason  string // "" = JSON null
	running string // "" = JSON null
	tries   int
	says    string // text the result's message must carry
}

// TestPushESPHomeFleet (issue 20): one `push --parallel 0 --json
// --expect-version 1.0.1` to 50 ESPHome sim devices, by their mDNS names:
// protocol versions 1 and 2, plain and extended answers, no password, MD5
// and SHA-256 challenges (one password for all that have one), 2024
// timing, and ESP8266 builds. Devices whose TXT project_version then
// matches end updated; the others end as the verdict table says: a build
// announcing another project_version rolled-back, a YAML without
// esphome: project: unverified, faults failed, Noise refused before any
// image byte, the ESP8266 builds refused for the ESP32 image. Each
// device's outcome is asserted, and the sims' own logs.
func TestPushESPHomeFleet(t *testing.T) {
	multicastLo(t)
	dir := t.TempDir()
	fw, err := image.Build(image.BuildOptions{Chip: image.ChipESP32, Project: "ots-fw-main", Version: "1.0.1", Size: 80 << 10})
	if err != nil {
		t.Fatal(err)
	}
	writeFirmware(t, dir, fw)
	const pw = "fleet-ota-s3cret"
	esp32 := func(args ...string) []string {
		return append([]string{"--personality", "esphome", "--chip", "esp32", "--esphome", "project=acme.node"}, args...)
	}
	withPW := func(args ...string) []string { return append(args, "--password", pw) }
	groups := []esphomeFleetGroup{
		{name: "v2 extended, no password", simArgs: esp32(), n: 10, port: "3232", outcome: "updated", running: "1.0.1", tries: 1},
		{name: "v2 plain, MD5", simArgs: withPW(esp32("--esphome", "extended=false", "--esphome", "auth=md5")...), n: 6, port: "3232",
			outcome: "updated", running: "1.0.1", tries: 1},
		{name: "v1 plain, 2024 MD5", simArgs: withPW(esp32("--esphome", "version=1", "--esphome", "extended=false", "--esphome", "mode=2024", "--esphome", "auth=md5")...),
			n: 6, port: "3232", outcome: "updated", running: "1.0.1", tries: 1},
		{name: "v1 extended, SHA-256", simArgs: withPW(esp32("--esphome", "version=1", "--esphome", "auth=sha256")...), n: 6, port: "3232",
			outcome: "updated", running: "1.0.1", tries: 1},
		{name: "v2 extended, SHA-256, one flash write failure", simArgs: withPW(esp32("--esphome", "auth=sha256", "--esphome", "fail=83", "--esphome", "fail-count=1")...),
			n: 4, port: "3232", outcome: "updated", running: "1.0.1", tries: 2},
		{name: "ESP8266, SHA-256 or MD5", simArgs: withPW("--personality", "esphome-esp8266", "--chip", "esp8266", "--esphome", "project=acme.node", "--esphome", "auth=sha256-md5"),
			n: 6, port: "8266", outcome: "refused", says: "ESP8266"},
		{name: "build announcing another project_version", simArgs: esp32("--esphome", "identity=1.0.1:1.0.1-rc1:0badc0de"), n: 4, port: "3232",
			outcome: "rolled-back", running: "1.0.1-rc1", tries: 1, says: "1.0.1-rc1"},
		{name: "no room (81)", simArgs: withPW(esp32("--esphome", "fail=81", "--esphome", "auth=md5")...), n: 4, port: "3232",
			outcome: "failed", tries: 1, says: "0x81"},
		{name: "Noise required", simArgs: esp32("--esphome", "noise=required"), n: 2, port: "3232", outcome: "refused", tries: 1, says: "Noise"},
		{name: "no esphome: project:", simArgs: []string{"--personality", "esphome", "--chip", "esp32"}, n: 2, port: "3232",
			outcome: "unverified", reason: "tells-nothing", tries: 1},
	}

	want := map[string]esphomeFleetGroup{} // address → group
	var targets []string
	var sims []*started
	for i, g := range groups {
		base := fmt.Sprintf("127.21.%d.", i+1)
		args := append([]string{"sim", "-n", fmt.Sprint(g.n), "--base-ip", base + "2", "--fast", "--boot-time", "2s",
			"--version", "1.0.0", "--duration", "60s", "--json"}, g.simArgs...)
		sims = append(sims, startOts(t, dir, args...))
		for k := range g.n {
			ip := fmt.Sprintf("%s%d", base, 2+k)
			targets = append(targets, "ots-sim-"+strings.ReplaceAll(ip, ".", "-")+".local")
			want[ip+":"+g.port] = g
		}
	}
	for i, s := range sims {
		s.waitLines(t, `"event":"ready"`, groups[i].n)
	}
	if len(targets) != 50 {
		t.Fatalf("%d targets, want 50", len(targets))
	}

	args := append([]string{"push", "--parallel", "0", "--json", "--interface", "lo", "--password", pw, "--expect-version", "1.0.1",
		"--verify-timeout", "30s", "--stability-window", "1s", "fw.bin"}, targets...)
	p := startOts(t, dir, args...)
	out, code := p.wait(t)
	if code != ExitFailed {
		t.Errorf("push exit %d, want %d; stderr:\n%s", code, ExitFailed, p.stderr)
	}

	type result struct {
		Address  string  `json:"address"`
		Protocol *string `json:"protocol"`
		Outcome  string  `json:"outcome"`
		Reason   *string `json:"reason"`
		Running  *string `json:"running"`
		Tries    int     `json:"tries"`
		Bytes    *int    `json:"bytes"`
		Message  string  `json:"message"`
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	for _, line := range out {
		if strings.Contains(line, pw) {
			t.Errorf("the password was printed: %s", line)
		}
	}
	checkFleetResults(t, out, want, func(g esphomeFleetGroup) string { return g.name }, func(line string, g esphomeFleetGroup) {
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("result line: %v\n%s", err, line)
		}
		if str(r.Protocol) != "esphome" && g.outcome != "refused" || r.Outcome != g.outcome || str(r.Reason) != g.reason || str(r.Running) != g.running {
			t.Errorf("%s (%s): protocol %q, outcome %s, reason %q, running %q; want esphome, %s, %q, %q\n%s",
				r.Address, g.name, str(r.Protocol), r.Outcome, str(r.Reason), str(r.Running), g.outcome, g.reason, g.running, line)
			return
		}
		if g.tries != 0 && r.Tries != g.tries {
			t.Errorf("%s (%s): %d tries, want %d\n%s", r.Address, g.name, r.Tries, g.tries, line)
		}
		if g.says != "" && !strings.Contains(r.Message, g.says) {
			t.Errorf("%s (%s): result does not say %q:\n%s", r.Address, g.name, g.says, line)
		}
		if (g.outcome == "refused" || g.says == "Noise") && r.Bytes != nil {
			t.Errorf("%s (%s): %d image bytes sent, want none\n%s", r.Address, g.name, *r.Bytes, line)
		}
	})

	// The sims' own words: every device that took the image finished it
	// once (upload_finished); the refused and Noise devices saw no upload.
	stopSims(t, sims)
	for i, s := range sims {
		g := groups[i]
		started, finished := simUploads(s.out, false)
		switch g.outcome {
		case "refused":
			if started != 0 {
				t.Errorf("%s: %d uploads started, want none", g.name, started)
			}
		case "failed":
			if finished != 0 || g.says == "Noise" && started != 0 {
				t.Errorf("%s: %d uploads started, %d finished", g.name, started, finished)
			}
		default:
			if finished != g.n {
				t.Errorf("%s: %d upload_finished events, want %d:\n%s", g.name, finished, g.n, strings.Join(s.out, "\n"))
			}
		}
	}
}
