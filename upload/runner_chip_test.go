package upload_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
)

// TestRunChipFromBoard: the chip an ArduinoOTA device's TXT board= names is
// checked before any byte goes out. Another chip family is refused even
// with Force (an ESP8266 has no rollback); another chip of the family is
// refused unless Force; an unknown board is a warning.
func TestRunChipFromBoard(t *testing.T) {
	b, err := image.Build(image.BuildOptions{Chip: image.ChipESP8266, Version: "1.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	sketch := upload.NewFirmware("sketch.bin", b, false)
	esp32 := simFirmware(t, "1.0.1") // esp32s3
	cases := []struct {
		name    string
		p       sim.Personality
		chip    string
		board   string // what TXT board= tells (the sims advertise it over mDNS)
		fw      *upload.Firmware
		force   bool
		want    upload.Outcome
		words   string
		uploads int
	}{
		{"esp32 image to esp8266, forced", sim.ESP8266, "", "ESP8266_GENERIC", esp32, true, upload.OutcomeRefused, "the device is esp8266 (its board is ESP8266_GENERIC); --force does not", 0},
		{"esp8266 sketch to esp32, forced", sim.Arduino, "esp32", "esp32", sketch, true, upload.OutcomeRefused, "image is built for esp8266, the device is esp32", 0},
		{"esp32s3 image to esp32c3 board", sim.Arduino, "esp32c3", "XIAO_ESP32C3", esp32, false, upload.OutcomeRefused, "the device is esp32c3 (its board is XIAO_ESP32C3)", 0},
		{"esp8266 sketch to esp8266", sim.ESP8266, "", "ESP8266_GENERIC", sketch, false, upload.OutcomeUnverified, "", 1},
		{"unknown board", sim.Arduino, "esp32s3", "my_board", esp32, false, upload.OutcomeUnverified, "", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			fl := startFleet(t, 1, func(_ int, cfg *sim.Config) {
				cfg.Personality, cfg.Chip, cfg.Board = c.p, c.chip, c.board
			})
			o := espotaRunOptions(t)
			o.Force = c.force
			o.Observer = &upload.DeviceObserver{Timeout: 200 * time.Millisecond, TXT: func(context.Context, upload.Target) map[string]string {
				return map[string]string{"board": c.board, "tcp_check": "no", "ssh_upload": "no", "auth_upload": "no"}
			}}
			r := upload.Run(context.Background(), c.fw, targetsOf(fl), o)[0]
			if r.Outcome != c.want || !strings.Contains(r.Message, c.words) {
				t.Fatalf("%s: %s", r.Outcome, r.Message)
			}
			if n := len(fl.Devices()[0].State().Uploads); n != c.uploads {
				t.Errorf("%d uploads reached the device, want %d", n, c.uploads)
			}
			if c.board == "my_board" && (len(r.Warnings) == 0 || !strings.Contains(r.Warnings[0], `board "my_board" names no chip`)) {
				t.Errorf("warnings %q", r.Warnings)
			}
		})
	}
}

// TestRunNoChipToldOnESP8266Port: an ESP32 image to an espota device that
// tells no chip, addressed by IP on 8266 (no TXT board): sent, with a
// warning that names the risk (issue 15: port 8266 is no chip fact).
func TestRunNoChipToldOnESP8266Port(t *testing.T) {
	fl := startFleet(t, 1, func(_ int, cfg *sim.Config) { cfg.Personality = sim.ESP8266 })
	o := espotaRunOptions(t)
	ts := targetsOf(fl)
	ts[0].Protocol = upload.Espota
	r := upload.Run(context.Background(), simFirmware(t, "1.0.1"), ts, o)[0]
	if ts[0].Port != 8266 {
		t.Fatalf("the esp8266 sim listens on %d", ts[0].Port)
	}
	if len(r.Warnings) == 0 || !strings.Contains(strings.Join(r.Warnings, " "), "port 8266 is ESP8266's espota port") {
		t.Fatalf("%s (%s), warnings %q", r.Outcome, r.Message, r.Warnings)
	}
}

// TestRunChipFromInventory: the inventory's chip: is chip evidence where
// the device tells none: an ESP32 image to an inventory esp8266 is refused
// before a byte goes out, --force or not.
func TestRunChipFromInventory(t *testing.T) {
	fl := startFleet(t, 1, func(_ int, cfg *sim.Config) { cfg.Personality = sim.ESP8266 })
	o := espotaRunOptions(t)
	o.Force = true
	ts := targetsOf(fl)
	ts[0].Protocol, ts[0].Chip = upload.Espota, "esp8266"
	r := upload.Run(context.Background(), simFirmware(t, "1.0.1"), ts, o)[0]
	if r.Outcome != upload.OutcomeRefused || !strings.Contains(r.Message, "the inventory says chip esp8266") {
		t.Fatalf("%s (%s)", r.Outcome, r.Message)
	}
	if n := len(fl.Devices()[0].State().Uploads); n != 0 {
		t.Errorf("%d uploads reached the device", n)
	}
}
