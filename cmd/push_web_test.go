package cmd

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/fakedev"
)

func startWebFake(t *testing.T, cfg fakedev.WebConfig) *fakedev.WebDevice {
	t.Helper()
	// Silent long enough for two reads over a second (a restart).
	cfg.BootTime, cfg.RestartDelay = 1300*time.Millisecond, 300*time.Millisecond
	d, err := fakedev.StartWeb(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestPushProtocolWebUploaders: --protocol form and elegantota, and the
// inventory's protocol: form, are spoken: each device of the family (an
// independent fake) gets one upload over its own wire, with no probe, and
// ends unverified (the family tells no version). A URL with --protocol
// elegantota is ElegantOTA's page, not a raw HTTP upload. Protocol names
// are lower case.
func TestPushProtocolWebUploaders(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	t.Run("lower case", func(t *testing.T) {
		code, _, errOut := runPushCmd(t, "", "--protocol", "ESPHome", fw, "127.0.0.1")
		if code != ExitUsage || !strings.Contains(errOut, "lower case") || strings.Contains(errOut, "reserved") {
			t.Errorf("--protocol ESPHome: exit %d: %s", code, errOut)
		}
	})
	// An ESP8266 image of 4096 bytes or less (which its Updater answers
	// with ERROR[13], internal/fakedev/pushtest) never leaves: push's own
	// image checks find it truncated first.
	t.Run("tiny ESP8266 image", func(t *testing.T) {
		full, err := image.Build(image.BuildOptions{Chip: image.ChipESP8266})
		if err != nil {
			t.Fatal(err)
		}
		tiny := filepath.Join(t.TempDir(), "tiny.bin")
		if err := os.WriteFile(tiny, full[:4096], 0o644); err != nil {
			t.Fatal(err)
		}
		d := startWebFake(t, fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, ESP8266: true})
		code, _, errOut := runPushCmd(t, "", append(slices.Clone(pushFast), "--protocol", "form", tiny, fmt.Sprintf("127.0.0.1:%d", d.Port()))...)
		if code != ExitFailed || !strings.Contains(errOut, "truncated") || !strings.Contains(errOut, "nothing was sent") || d.Uploads() != 0 {
			t.Errorf("exit %d, %d uploads: %s", code, d.Uploads(), errOut)
		}
	})
	cases := []struct {
		name   string
		cfg    fakedev.WebConfig
		inv    string // inventory, %d = the device's port
		args   func(port int) []string
		starts int
	}{
		// A bare host: the upload, the label and verification all go to
		// the web port, never to the OTA port 3232.
		{name: "--protocol elegantota, a host and --web-port", cfg: fakedev.WebConfig{Family: fakedev.ElegantOTA},
			args: func(port int) []string {
				return []string{"--protocol", "elegantota", "--web-port", strconv.Itoa(port), "127.0.0.1"}
			}, starts: 1},
		{name: "--protocol form", cfg: fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, OriginCheck: true},
			args: func(port int) []string { return []string{"--protocol", "form", fmt.Sprintf("127.0.0.1:%d", port)} }},
		{name: "--protocol form, a URL", cfg: fakedev.WebConfig{Family: fakedev.ESPEasy},
			args: func(port int) []string {
				return []string{"--protocol", "form", fmt.Sprintf("http://127.0.0.1:%d/update", port)}
			}},
		{name: "inventory protocol: form", cfg: fakedev.WebConfig{Family: fakedev.HTTPUpdateServer, OriginCheck: true},
			inv:  "inventory:\n  devices:\n    - {name: web, address: 127.0.0.1, port: %d, protocol: form}",
			args: func(int) []string { return []string{"--inventory-only", "web"} }},
		{name: "--protocol elegantota, a URL", cfg: fakedev.WebConfig{Family: fakedev.ElegantOTA},
			args: func(port int) []string {
				return []string{"--protocol", "elegantota", fmt.Sprintf("http://127.0.0.1:%d/update", port)}
			}, starts: 1},
		{name: "inventory protocol: elegantota", cfg: fakedev.WebConfig{Family: fakedev.ElegantOTA, Async: true},
			inv:  "inventory:\n  devices:\n    - {name: web, address: 127.0.0.1, port: %d, protocol: elegantota}",
			args: func(int) []string { return []string{"--inventory-only", "web"} }, starts: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startWebFake(t, c.cfg)
			inv := ""
			if c.inv != "" {
				inv = fmt.Sprintf(c.inv, d.Port())
			}
			args := append(append(slices.Clone(pushFast), fw), c.args(d.Port())...)
			code, out, errOut := runPushCmd(t, inv, args...)
			if code != ExitOK || !strings.Contains(out, "unverified") || !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", d.Port())) {
				t.Errorf("exit %d, want 0, unverified at 127.0.0.1:%d:\n%s%s", code, d.Port(), out, errOut)
			}
			if d.Uploads() != 1 || d.Starts() != c.starts {
				t.Errorf("the device got %d uploads and %d /ota/start, want 1 and %d", d.Uploads(), d.Starts(), c.starts)
			}
		})
	}
}
