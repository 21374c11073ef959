package cmd

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim"
)

// TestPushWrongChipFamilyOverMDNS: the TXT board= an ArduinoOTA device
// advertises tells its chip, and push refuses an image of the other family
// before sending a byte, even with --force: an ESP32-S3 image to an ESP8266
// (board ESP8266_GENERIC), an ESP8266 sketch to an ESP32 (board esp32).
// Multicast only inside a private network namespace (OTS_OTA_MDNS_TESTS=1).
func TestPushWrongChipFamilyOverMDNS(t *testing.T) {
	lo := multicastLo(t)
	tm := sim.FastTiming()
	start := func(prefix string, ip [4]byte, cfg sim.Config) *sim.Device {
		cfg.Timing = &tm
		fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{N: 1, BaseIP: netip.AddrFrom4(ip),
			NamePrefix: prefix, MDNSInterface: lo, Template: cfg})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fl.Close() })
		return fl.Devices()[0]
	}
	e8266 := start("chip-e8266", [4]byte{127, 0, 74, 2}, sim.Config{Personality: sim.ESP8266})
	ard := start("chip-ard", [4]byte{127, 0, 74, 3}, sim.Config{Personality: sim.Arduino, Chip: "esp32"})
	sketch, err := image.Build(image.BuildOptions{Chip: image.ChipESP8266, Version: "2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	sketchFile := filepath.Join(t.TempDir(), "sketch.bin")
	if err := os.WriteFile(sketchFile, sketch, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "inv.yaml")
	inv := "inventory:\n  devices:\n    - name: e8266\n      address: 127.0.74.2\n      port: 8266\n    - name: ard\n      address: 127.0.74.3\n"
	if err := os.WriteFile(cfg, []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		fw, target, words string
		dev               *sim.Device
	}{
		{writeTestFirmware(t, "1.0.1"), "e8266", "image is built for esp32s3, the device is esp8266 (its board is ESP8266_GENERIC)", e8266},
		{sketchFile, "ard", "image is built for esp8266, the device is esp32 (its board is esp32)", ard},
	}
	for _, c := range cases {
		streams, out, errOut := TestStreams()
		code := Execute(context.Background(), []string{"push", "--config", cfg, "--interface", lo.Name, "--force", c.fw, c.target}, streams)
		if code != ExitFailed || !strings.Contains(out.String(), " refused ") || !strings.Contains(out.String(), c.words) ||
			!strings.Contains(out.String(), "--force does not send an image to another chip family") {
			t.Errorf("%s: exit %d\n%s\n%s", c.target, code, out, errOut)
		}
		if n := len(c.dev.State().Uploads); n != 0 {
			t.Errorf("%s: %d uploads reached the device", c.target, n)
		}
	}
}
