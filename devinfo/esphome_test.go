package devinfo

import (
	"context"
	"strings"
	"testing"
)

// An ESPHome record as 2026 firmware announces it (docs/protocols/esphome.md).
var esphomeRecord = []string{
	"friendly_name=Kitchen Plug", "version=2026.7.0", "config_hash=0A1B2C3D", "mac=aabbccddeeff",
	"platform=ESP32", "board=esp32dev", "network=wifi", "api_encryption=Noise_NNpsk0_25519_ChaChaPoly_SHA256",
	"project_name=acme.plug", "project_version=2.4.1",
}

func TestParseESPHomeTXT(t *testing.T) {
	e := ParseESPHomeTXT(ParseTXT(esphomeRecord))
	want := ESPHomeTXT{Release: "2026.7.0", Platform: "ESP32", Board: "esp32dev", MAC: "aabbccddeeff", ConfigHash: "0a1b2c3d",
		ProjectName: "acme.plug", ProjectVersion: "2.4.1", APIEncryption: "Noise_NNpsk0_25519_ChaChaPoly_SHA256",
		FriendlyName: "Kitchen Plug", Network: "wifi"}
	if *e != want {
		t.Fatalf("got %+v\nwant %+v", *e, want)
	}
	for _, bad := range []string{"config_hash=0a1b2c3", "config_hash=0a1b2c3g", "config_hash=", "config_hash=0a1b2c3d4"} {
		if h := ParseESPHomeTXT(ParseTXT([]string{bad})).ConfigHash; h != "" {
			t.Errorf("%s: config hash %q kept", bad, h)
		}
	}
	if ParseESPHomeTXT(nil) != nil {
		t.Error("no record parsed as one")
	}
}

// TXT version is the ESPHome release, never the firmware's version: the
// version fact is project_version, or unknown.
func TestQueryESPHomeReadsNoReleaseAsVersion(t *testing.T) {
	for _, c := range []struct {
		name    string
		txt     []string
		version string
		chip    string
	}{
		{"project version", esphomeRecord, "2.4.1", ""},
		{"no project", []string{"version=2026.7.0", "platform=ESP8266", "config_hash=0a1b2c3d"}, "", "esp8266"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Port 1 on an address nothing answers: a query that sent
			// anything would note a failure.
			f, err := Query(context.Background(), Target{Host: "192.0.2.1", Port: 1, TXT: ParseTXT(c.txt), Service: ESPHomeService}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if f.Version.Value != c.version || f.Version.Known() && f.Version.Source != FromTXT {
				t.Errorf("version %+v, want %q from txt", f.Version, c.version)
			}
			if f.Version.Value == "2026.7.0" {
				t.Error("the ESPHome release read as the firmware's version")
			}
			if !f.Version.Known() && !strings.Contains(f.VersionNote, "ESPHome release") {
				t.Errorf("note %q does not say why", f.VersionNote)
			}
			if f.Chip.Value != c.chip || f.Board.Known() || f.Protocol.Value != ProtoESPHome || !f.Reachable || len(f.Notes) > 0 {
				t.Errorf("chip %+v board %+v protocol %+v reachable %v notes %v", f.Chip, f.Board, f.Protocol, f.Reachable, f.Notes)
			}
			if f.ESPHome == nil || f.ESPHome.Release != "2026.7.0" {
				t.Errorf("record %+v", f.ESPHome)
			}
		})
	}
}

func FuzzParseESPHomeTXT(f *testing.F) {
	f.Add(strings.Join(esphomeRecord, "\x00"))
	f.Add("config_hash=DEADBEEF\x00version=\x1b[2J")
	f.Fuzz(func(t *testing.T, s string) {
		e := ParseESPHomeTXT(ParseTXT(strings.Split(s, "\x00")))
		for _, v := range []string{e.Release, e.Platform, e.Board, e.MAC, e.ProjectName, e.ProjectVersion, e.APIEncryption, e.FriendlyName, e.Network} {
			checkClean(t, "esphome txt", v)
		}
		if h := e.ConfigHash; h != "" && (len(h) != 8 || strings.Trim(h, "0123456789abcdef") != "") {
			t.Fatalf("config hash %q", h)
		}
		if p := ESPHomeOTAPort(e.Platform); p != 0 && p != 3232 && p != 8266 {
			t.Fatalf("port %d", p)
		}
	})
}
