package cmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/image"
)

// TestSimWebUploaders: the web-uploader personalities' flags, on ESP32 and
// ESP8266, as sim checks them before it binds anything, and a fleet of each.
func TestSimWebUploaders(t *testing.T) {
	runSimFlagCases(t, []simFlagCase{
		{[]string{"--personality", "espeasy", "--async"}, ExitUsage, "--async does not apply to --personality espeasy: only ElegantOTA has an async build"},
		{[]string{"--personality", "httpupdateserver", "--chip", "esp8266", "--no-origin-check"}, ExitUsage, "checks no Origin"},
		{[]string{"--personality", "elegantota", "--chip", "esp8266", "--rollback-later"}, ExitUsage, "an ESP8266 has no rollback"},
		{[]string{"--personality", "espeasy", "--username", "admin"}, ExitUsage, "--username does not apply to --personality espeasy"},
		{[]string{"--personality", "seed", "--no-loop"}, ExitUsage, "--no-loop does not apply to --personality seed"},
		{[]string{"--personality", "seed", "--chip", "esp8266"}, ExitUsage, "an ESP8266 runs the esp8266, httpupdateserver, espeasy, elegantota, wled, tasmota or esphome-esp8266 personality"},
		{[]string{"--personality", "nope"}, ExitUsage, "have: seed, ots, arduino, esp8266, httpupdateserver, espeasy, elegantota, esphome, esphome-esp8266, wled, tasmota, tasmota-mqtt and esphome-pull"},
		{[]string{"--personality", "elegantota", "--fault", "no-connect-back"}, ExitUsage, "acts on espota sessions only"},
		{[]string{"--personality", "httpupdateserver", "--behave", "1.0.1=unstable"}, ExitUsage, "add --rollback-later"},
		{[]string{"--personality", "espeasy", "--chip", "esp8266", "--behave", "1.0.1=crash-loop"}, ExitUsage, "cannot happen on the espeasy personality"},
		{[]string{"--personality", "httpupdateserver", "--chip", "esp8266", "--base-ip", "127.0.9.120", "--ota-port", "13320"}, 0,
			"127.0.9.120:13320  -    httpupdateserver"},
		{[]string{"--personality", "elegantota", "--async", "--username", "admin", "--password", "pw", "--base-ip", "127.0.9.121", "--ota-port", "13321"}, 0,
			"127.0.9.121:13321  -    elegantota"},
		{[]string{"--personality", "espeasy", "--base-ip", "127.0.9.122", "--ota-port", "13322", "--slot-size", "2M"}, 0,
			"127.0.9.122:13322  -    espeasy"},
		{[]string{"--personality", "wled", "--password", "x"}, ExitUsage, "--password does not apply to --personality wled"},
		{[]string{"--personality", "wled", "--language", "de"}, ExitUsage, "--language does not apply to --personality wled: only Tasmota's pages are translated"},
		{[]string{"--personality", "tasmota", "--ota-lock"}, ExitUsage, "--ota-lock does not apply to --personality tasmota: only WLED has an OTA lock"},
		{[]string{"--personality", "wled", "--subnet", "nope"}, ExitUsage, "not a network"},
		{[]string{"--personality", "wled", "--ota-lock", "--subnet", "127.0.0.0/16", "--base-ip", "127.0.9.123", "--ota-port", "13323"}, 0,
			"127.0.9.123:13323  -    wled"},
		{[]string{"--personality", "wled", "--chip", "esp8266", "--version", "0.15.5", "--base-ip", "127.0.9.124", "--ota-port", "13324"}, 0,
			"127.0.9.124:13324  -    wled"},
		{[]string{"--personality", "tasmota", "--chip", "esp8266", "--language", "de", "--base-ip", "127.0.9.125", "--ota-port", "13325"}, 0,
			"127.0.9.125:13325  -    tasmota"},
		{[]string{"--personality", "tasmota", "--safeboot", "--fault", "status-during-upgrade", "--base-ip", "127.0.9.126", "--ota-port", "13326"}, 0,
			"127.0.9.126:13326  -    tasmota"},
	})
}

// simFlagCase is one short sim run (no mDNS, 100 ms) and how it ends.
type simFlagCase struct {
	args []string
	code int
	want string // in stderr (exit 2) or stdout (exit 0)
}

// runSimFlagCases runs each case as a subtest: its exit code, and its
// words in stderr (a usage error) or stdout (a device listed).
func runSimFlagCases(t *testing.T, cases []simFlagCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			streams, out, errOut := TestStreams()
			args := append([]string{"sim", "--no-mdns", "--fast", "--duration", "100ms"}, c.args...)
			code := Execute(context.Background(), args, streams)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, out, errOut)
			}
			got := errOut.String()
			if c.code == 0 {
				got = out.String()
			}
			if !strings.Contains(got, c.want) {
				t.Errorf("want %q in\n%s", c.want, got)
			}
		})
	}
}

// TestSimImageWLED: sim image --wled-release writes an image with WLED's
// release metadata ("WSTS" in memory order), which stays a valid image.
func TestSimImageWLED(t *testing.T) {
	out := filepath.Join(t.TempDir(), "wled.bin")
	streams, _, errOut := TestStreams()
	args := []string{"sim", "image", "--chip", "esp32", "--version", "16.0.2", "--wled-release", "ESP32", "-o", out}
	if code := Execute(context.Background(), args, streams); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := image.Parse(b)
	if err != nil || !img.ChecksumOK || !img.DigestOK || !bytes.Contains(b, []byte("STSW")) {
		t.Fatalf("image: %v", err)
	}
	streams, _, errOut = TestStreams()
	args = []string{"sim", "image", "--chip", "esp8266", "--wled-release", strings.Repeat("R", 48), "-o", out}
	if code := Execute(context.Background(), args, streams); code != ExitUsage || !strings.Contains(errOut.String(), "--wled-release") ||
		!strings.Contains(errOut.String(), "shorter than 48 bytes") {
		t.Errorf("a release name too long: exit %d: %s", code, errOut)
	}
}
