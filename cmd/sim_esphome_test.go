package cmd

import (
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim"
)

// TestSimESPHome: the esphome personalities' flags as sim checks them
// before it binds anything, and a device of each.
func TestSimESPHome(t *testing.T) {
	runSimFlagCases(t, []simFlagCase{
		{[]string{"--personality", "seed", "--esphome", "version=1"}, ExitUsage, "--esphome does not apply to --personality seed"},
		{[]string{"--personality", "esphome", "--esphome", "colour=red"}, ExitUsage, `unknown key "colour"`},
		{[]string{"--personality", "esphome", "--esphome", "fail=88"}, ExitUsage, "error byte 88 comes from ESP8266 builds only"},
		{[]string{"--personality", "esphome-esp8266", "--esphome", "fail=89"}, ExitUsage, "error byte 89 comes from ESP32 builds only"},
		{[]string{"--personality", "esphome", "--esphome", "mode=2024", "--esphome", "auth=sha256"}, ExitUsage, "MD5 only"},
		{[]string{"--personality", "esphome", "--fault", "lose-ok"}, ExitUsage, "not on ESPHome's native OTA"},
		{[]string{"--personality", "esphome-esp8266", "--chip", "esp32"}, ExitUsage, "runs on an ESP8266"},
		{[]string{"--personality", "esphome", "--base-ip", "127.0.9.130", "--ota-port", "13330", "--esphome", "project=acme.lamp"}, 0,
			"127.0.9.130:13330  -    esphome"},
		{[]string{"--personality", "esphome-esp8266", "--base-ip", "127.0.9.131", "--ota-port", "13331", "--password", "pw",
			"--esphome", "auth=md5", "--esphome", "version=1"}, 0, "127.0.9.131:13331  -    esphome-esp8266"},
	})
}

// TestSimESPHomeJSON: an ESPHome node's events fit sim.json (its protocol
// and personality words, its error byte in text, no HTTP status).
func TestSimESPHomeJSON(t *testing.T) {
	for _, e := range []sim.Event{
		{Event: sim.EventUploadFailed, Time: time.Now(), Device: "ots-sim-1", Personality: sim.ESPHome, Protocol: "esphome",
			Remote: "127.0.0.1:5000", Size: 1000, Bytes: 500, Text: "error byte 83", Reason: "fault"},
		{Event: sim.EventAuthFailed, Time: time.Now(), Device: "ots-sim-1", Personality: sim.ESPHome8266, Protocol: "esphome",
			Text: "error byte 82", Reason: "wrong password"},
	} {
		if err := checkLine("sim.json", []byte(mustLine(t, simLineOf(e)))); err != nil {
			t.Errorf("%s: %v", e.Event, err)
		}
	}
}
