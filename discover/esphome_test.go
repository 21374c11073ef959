package discover

import (
	"net/netip"
	"testing"
)

// An _esphomelib._tcp record names the native API port; the target's port
// is the OTA port of the platform TXT names (docs/protocols/esphome.md).
func TestESPHomeOTAPort(t *testing.T) {
	addr := netip.MustParseAddr("10.0.0.7")
	for _, c := range []struct {
		d    Device
		want int
	}{
		{Device{Service: "_esphomelib._tcp", Port: 6053, TXT: map[string]string{"platform": "ESP32"}}, 3232},
		{Device{Service: "_esphomelib._tcp", Port: 6053, TXT: map[string]string{"platform": "ESP8266"}}, 8266},
		{Device{Service: "_esphomelib._tcp", Port: 6053, TXT: map[string]string{"platform": "RP2"}}, 0},
		{Device{Service: "_esphomelib._tcp", Port: 6053}, 0},
		{Device{Service: "_arduino._tcp", Port: 8266}, 8266},
	} {
		c.d.Addrs = []netip.Addr{addr}
		if got := c.d.OTAPort(); got != c.want {
			t.Errorf("%s %v: OTA port %d, want %d", c.d.Service, c.d.TXT, got, c.want)
		}
		if got := FromDevice(c.d).Port; got != c.want {
			t.Errorf("%s %v: target port %d, want %d", c.d.Service, c.d.TXT, got, c.want)
		}
		if got := c.d.Target(); got.Port != c.want || got.Service != c.d.Service {
			t.Errorf("%s: devinfo target %+v", c.d.Service, got)
		}
	}
	// An inventory entry with the OTA port merges with the record.
	d := Device{Instance: "plug", Service: "_esphomelib._tcp", Port: 6053, Addrs: []netip.Addr{addr}, TXT: map[string]string{"platform": "ESP32"}}
	ts := Merge([]Device{d}, nil)
	if len(ts) != 1 || ts[0].Port != 3232 || ts[0].Service != "_esphomelib._tcp" {
		t.Fatalf("merged %+v", ts)
	}
}
