package tasmotafw

import (
	"testing"
	"time"
)

// TestMinimalURL: how Tasmota derives the minimal image's URL.
func TestMinimalURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://h/tasmota.bin":                    "http://h/tasmota-minimal.bin",
		"http://h/tasmota.bin.gz":                 "http://h/tasmota-minimal.bin.gz",
		"http://h/tasmota-DE.bin.gz":              "http://h/tasmota-minimal.bin.gz",
		"http://h:80/api/ard-uino/tasmota-DE.bin": "http://h:80/api/ard-uino/tasmota-minimal.bin",
		"http://h/tasmota":                        "http://h/tasmota-minimal",
		"http://127.0.0.1:9/tok-en/fw.bin":        "http://127.0.0.1:9/tok-en/fw-minimal.bin",
		"http://h/tasmota.ino.bin":                "http://h/tasmota-minimal.ino.bin",
	} {
		if got := MinimalURL(in); got != want {
			t.Errorf("%s: got %s, want %s", in, got, want)
		}
	}
}

func TestNewerVersion(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"15.5.0", "15.4.0", true},
		{"15.4.0", "15.4.0", false},
		{"15.4", "15.4.0", false},
		{"15.4.0.1", "15.4.0", true},
		{"15.10.0", "15.9.0", true},
		{"14.9.9", "15.0.0", false},
	} {
		if got := NewerVersion(c.a, c.b); got != c.want {
			t.Errorf("NewerVersion(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestHardwareAndUptime(t *testing.T) {
	for _, c := range []struct {
		esp8266 bool
		chip    string
		want    string
	}{
		{true, "esp8266", "ESP8266EX"},
		{false, "esp32", "ESP32-D0WD-V3"},
		{false, "esp32s3", "ESP32-S3"},
		{false, "esp32c3", "ESP32-C3"},
	} {
		if got := Hardware(c.esp8266, c.chip); got != c.want {
			t.Errorf("Hardware(%v, %q) = %q, want %q", c.esp8266, c.chip, got, c.want)
		}
	}
	if got := Uptime(49*time.Hour + 2*time.Minute + 3*time.Second); got != "2T01:02:03" {
		t.Errorf("Uptime = %q", got)
	}
}
