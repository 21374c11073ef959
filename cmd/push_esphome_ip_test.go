package cmd

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// esphomeResponder serves _esphomelib._tcp records on the loopback for the
// tests of this file.
func esphomeResponder(t *testing.T) (*mdnsd.Responder, string) {
	t.Helper()
	lo := multicastLo(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, err := mdnsd.New(mdnsd.Config{Interface: lo})
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { r.Close() })
	go r.Serve(ctx)
	return r, lo.Name
}

func writeESP8266Firmware(t *testing.T, v string) string {
	t.Helper()
	data, err := image.Build(image.BuildOptions{Chip: image.ChipESP8266, Version: v, Size: 200_000})
	if err != nil {
		t.Fatal(err)
	}
	fw := filepath.Join(t.TempDir(), "firmware.bin")
	if err := os.WriteFile(fw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return fw
}

// A device named by its address gets its ESPHome record too: the platform
// screen runs before anything is sent, and verification reads the new TXT.
func TestPushESPHomeByAddress(t *testing.T) {
	r, lo := esphomeResponder(t)
	dev := startESPHomeDevice(t, r, &esphomeTestDevice{name: "ip-plug", addr: netip.MustParseAddr("127.0.84.2"), compress: true,
		txt:  []string{"version=2026.7.0", "platform=ESP8266", "config_hash=0000bbbb", "project_name=acme.plug", "project_version=2.4.0"},
		next: []string{"version=2026.7.0", "platform=ESP8266", "config_hash=0000cccc", "project_name=acme.plug", "project_version=2.4.1"}}, 8266)
	common := []string{"--interface", lo, "--protocol", "esphome", "--stability-window", "1s", "--verify-timeout", "40s"}

	// An ESP32 image to an ESP8266: refused, nothing sent.
	code, out, errOut := runPushCmd(t, "", append(common, writeTestFirmware(t, "2.4.1"), "127.0.84.2")...)
	if code != ExitFailed || !strings.Contains(out, "refused") || len(dev.payloads()) != 0 {
		t.Fatalf("ESP32 image: exit %d, %d uploads\n%s\n%s", code, len(dev.payloads()), out, errOut)
	}
	// Its own image: sent, and seen running through the new record.
	code, out, errOut = runPushCmd(t, "", append(common, "--expect-version", "2.4.1", writeESP8266Firmware(t, "2.4.1"), "127.0.84.2")...)
	if code != ExitOK || !strings.Contains(out, " updated ") || len(dev.payloads()) != 1 {
		t.Fatalf("ESP8266 image: exit %d, %d uploads\n%s\n%s", code, len(dev.payloads()), out, errOut)
	}
}

// An ESPHome device on an OTA port of its own (HOST:PORT, the inventory's
// port:) keeps its record: the platform screen and verification still run.
func TestPushESPHomeOTAPortOverride(t *testing.T) {
	r, lo := esphomeResponder(t)
	dev := startESPHomeDevice(t, r, &esphomeTestDevice{name: "port-plug", addr: netip.MustParseAddr("127.0.84.3"),
		txt:  []string{"version=2026.7.0", "platform=ESP32", "config_hash=0000aaaa", "project_name=acme.plug", "project_version=1.0.0"},
		next: []string{"version=2026.7.0", "platform=ESP32", "config_hash=0000dddd", "project_name=acme.plug", "project_version=1.0.1"}}, 4000)
	common := []string{"--interface", lo, "--stability-window", "1s", "--verify-timeout", "40s"}

	// An ESP8266 image to an ESP32 on port 4000: refused, nothing sent.
	code, out, errOut := runPushCmd(t, "", append(common, "--protocol", "esphome", writeESP8266Firmware(t, "1.0.1"), "127.0.84.3:4000")...)
	if code != ExitFailed || !strings.Contains(out, "refused") || len(dev.payloads()) != 0 {
		t.Fatalf("ESP8266 image: exit %d, %d uploads\n%s\n%s", code, len(dev.payloads()), out, errOut)
	}
	// By the inventory's port: sent, and seen running.
	inv := "inventory:\n  devices:\n    - name: port-plug\n      address: 127.0.84.3\n      port: 4000\n      protocol: esphome\n"
	code, out, errOut = runPushCmd(t, inv, append(common, "--expect-version", "1.0.1", writeTestFirmware(t, "1.0.1"), "port-plug")...)
	if code != ExitOK || !strings.Contains(out, " updated ") || len(dev.payloads()) != 1 {
		t.Fatalf("inventory port: exit %d, %d uploads\n%s\n%s", code, len(dev.payloads()), out, errOut)
	}
}

// --expect-config-hash is ESPHome's: with a --protocol no ESPHome device
// speaks it exits 2 before any work; with auto or esphome it goes on.
func TestExpectConfigHashNeedsESPHome(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	for _, p := range []string{"espota", "http", "tasmota"} {
		code, _, errOut := runPushCmd(t, "", "--dry-run", "--protocol", p, "--expect-config-hash", "1a2b3c4d", fw, "127.0.0.1")
		if code != ExitUsage || !strings.Contains(errOut, "--expect-config-hash") || !strings.Contains(errOut, "ESPHome") || !strings.Contains(errOut, p) {
			t.Errorf("--protocol %s: exit %d: %s", p, code, errOut)
		}
	}
	for _, p := range []string{"auto", "esphome"} {
		if code, _, errOut := runPushCmd(t, "", "--dry-run", "--protocol", p, "--expect-config-hash", "1a2b3c4d", "--browse-timeout", "100ms", fw, "127.0.0.1"); code == ExitUsage {
			t.Errorf("--protocol %s: exit 2: %s", p, errOut)
		}
	}
}

// push --all that found only ESPHome devices, left out by design, says so
// and how to include them, not "no devices found".
func TestPushAllOnlyESPHomeLeftOut(t *testing.T) {
	r, lo := esphomeResponder(t)
	dev := startESPHomeDevice(t, r, &esphomeTestDevice{name: "lone-plug", addr: netip.MustParseAddr("127.0.84.4"),
		txt: []string{"version=2026.7.0", "platform=ESP32", "config_hash=0000aaaa"}}, 3232)
	code, out, errOut := runPushCmd(t, "", "--interface", lo, "--all", writeTestFirmware(t, "1.0.1"))
	if code != ExitFailed || len(dev.payloads()) != 0 || !strings.Contains(errOut, "1 ESPHome device(s) found were left out") ||
		!strings.Contains(errOut, "--protocol esphome") || strings.Contains(errOut, "no devices found") {
		t.Fatalf("exit %d, %d uploads\n%s\n%s", code, len(dev.payloads()), out, errOut)
	}
}

// An ESPHome device with no record and no port is tried at 3232, then at
// 8266: the result names the port the image went to.
func TestPushESPHomeFallbackPortShown(t *testing.T) {
	_, lo := esphomeResponder(t)
	// No record: the OTA port alone listens.
	dev := &esphomeTestDevice{t: t, name: "bare", addr: netip.MustParseAddr("127.0.84.5")}
	ln, err := net.Listen("tcp", "127.0.84.5:8266")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dev.serve(c)
		}
	}()
	code, out, errOut := runPushCmd(t, "", "--interface", lo, "--protocol", "esphome", "--browse-timeout", "300ms", "--json",
		writeESP8266Firmware(t, "1.0.1"), "127.0.84.5")
	if len(dev.payloads()) != 1 || !strings.Contains(out, `"address":"127.0.84.5:8266"`) || strings.Contains(out, `"type":"result","address":"127.0.84.5:3232"`) {
		t.Fatalf("exit %d, %d uploads\n%s\n%s", code, len(dev.payloads()), out, errOut)
	}
	var result string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `"type":"result"`) {
			result = l
		}
	}
	if !strings.Contains(result, `"address":"127.0.84.5:8266"`) {
		t.Errorf("result line: %s", result)
	}
}
