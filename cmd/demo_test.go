package cmd

import (
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/embedbroker"
)

// TestDemoLeavesNothing: after the demo every port it printed is free again,
// TCP and UDP (espota) alike, the embedded broker's too; the rollouts
// updated every plug and every ESPHome node, each in three waves that passed.
// Its text output shows each step and the command a user types for it
// (this is the one text run: demo.txtar runs --json).
func TestDemoLeavesNothing(t *testing.T) {
	streams, out, errOut := TestStreams()
	if code := Execute(context.Background(), []string{"demo", "--no-color"}, streams); code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, re := range []string{
		`^==> 1\. Build the firmware images`,
		`^\$ ots-ota inspect `,
		`^\$ OTS_OTA_PASSWORD=… ots-ota push `,
		`^attic +127\.0\.0\.1:[0-9]+ +http .*rolled-back`,
		`^kitchen .*updated`,
		`^hall .*updated`,
		`^garage .*espota`,
		`^==> [0-9]+\. Start an MQTT broker, 6 simulated Tasmota plugs and 3 ESPHome nodes`,
		`^\$ ots-ota rollout tasmota32\.bin --family tasmota .*--canary 1 --waves 50%,100%`,
		`^6 device\(s\): 6 updated`,
		`^\$ ots-ota rollout sensor\.bin --family esphome .*--canary 1 --waves 50%,100%`,
		`^3 device\(s\): 3 updated`,
		// The quick devices' waits are said, with the real defaults.
		`--stability-window 300ms --discover-wait 300ms \(--check-wait 10s for the nodes\); with real devices keep the defaults`,
	} {
		if !regexp.MustCompile(`(?m)` + re).MatchString(out.String()) {
			t.Errorf("no line matches %s:\n%s", re, out)
		}
	}
	if !regexp.MustCompile(`(?m)^attic .*rolled-back`).MatchString(out.String()) {
		t.Errorf("no rolled-back row:\n%s", out)
	}
	addrs := regexp.MustCompile(`(?m)^  \w+ +OTA (127\.0\.0\.1:\d+) +web (\S+)`).FindAllStringSubmatch(out.String(), -1)
	if len(addrs) != 4 {
		t.Fatalf("want 4 device lines, got %d:\n%s", len(addrs), out)
	}
	for _, m := range addrs {
		for _, a := range m[1:] {
			if a == "-" {
				continue
			}
			ln, err := net.Listen("tcp", a)
			if err != nil {
				t.Errorf("TCP %s still taken after the demo: %v", a, err)
			} else {
				ln.Close()
			}
			pc, err := net.ListenPacket("udp", a)
			if err != nil {
				t.Errorf("UDP %s still taken after the demo: %v", a, err)
			} else {
				pc.Close()
			}
		}
	}
	plugs := regexp.MustCompile(`(?m)^plug_[0-9A-F]{6} +plug_[0-9A-F]{6} +tasmota-mqtt +15\.4\.0 → 15\.5\.0 +updated `).FindAllString(out.String(), -1)
	if len(plugs) != demoPlugs {
		t.Errorf("%d plugs updated by the rollout, want %d:\n%s", len(plugs), demoPlugs, out)
	}
	nodes := regexp.MustCompile(`(?m)^sensor-\d +sensor-\d +esphome-mqtt +1\.0\.0 → 1\.1\.0 +updated `).FindAllString(out.String(), -1)
	if len(nodes) != demoNodes {
		t.Errorf("%d ESPHome nodes updated by the rollout, want %d:\n%s", len(nodes), demoNodes, out)
	}
	if n := strings.Count(errOut.String(), ": passed\n"); n != 6 {
		t.Errorf("%d waves passed, want 6 (per rollout, the canary and two waves):\n%s", n, errOut)
	}
	m := regexp.MustCompile(`(?m)^  broker +mqtt://(127\.0\.0\.1:\d+) `).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no broker line:\n%s", out)
	}
	if ln, err := net.Listen("tcp", m[1]); err != nil {
		t.Errorf("the broker's %s still taken after the demo: %v", m[1], err)
	} else {
		ln.Close()
	}
	if strings.Contains(out.String()+errOut.String(), demoToken) || strings.Contains(out.String()+errOut.String(), demoPassword) {
		t.Error("a demo secret reached the output")
	}
}

// TestDemoPullLinesRun: the sim commands the demo prints for its pulling
// devices run as printed (against the demo's embedded broker instead of
// mosquitto on 1883).
func TestDemoPullLinesRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := embedbroker.Start(ctx, embedbroker.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ran := 0
	for _, line := range demoPullLines {
		args, ok := strings.CutPrefix(strings.TrimSuffix(line, " &"), "ots-ota ")
		if !ok {
			continue // the broker's line
		}
		args = strings.ReplaceAll(args, demoBrokerShown, b.URL())
		streams, out, errOut := TestStreams()
		if code := Execute(ctx, append(strings.Fields(args), "--duration", "1s"), streams); code != ExitOK {
			t.Errorf("%s: exit %d\n%s\n%s", line, code, out, errOut)
		}
		if !strings.Contains(out.String(), "started ") {
			t.Errorf("%s: no fleet started:\n%s", line, out)
		}
		ran++
	}
	if ran != 2 {
		t.Errorf("%d sim lines ran, want 2 (plugs and nodes)", ran)
	}
}
