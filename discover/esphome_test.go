package discover

import (
	"net/netip"
	"testing"

	"github.com/ots-ota/ots-ota/inventory"
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

// An ESPHome record matches a target by host or address whatever port the
// target names: the record's port is the API's, and the OTA port it implies
// is only the platform's default, which HOST:PORT or the inventory may
// override.
func TestESPHomeRecordMatchesAnyOTAPort(t *testing.T) {
	addr := netip.MustParseAddr("10.0.0.7")
	rec := Device{Instance: "plug", Host: "plug.local", Service: "_esphomelib._tcp", Port: 6053, Addrs: []netip.Addr{addr},
		TXT: map[string]string{"platform": "ESP32", "config_hash": "0000aaaa"}}
	for _, tg := range []Target{
		{Host: "10.0.0.7", Port: 4000, Addrs: []netip.Addr{addr}},
		{Host: "plug.local", Port: 4000},
		{Host: "10.0.0.7", Addrs: []netip.Addr{addr}},
	} {
		if i := matchDevice(tg, []Device{rec}); i != 0 {
			t.Errorf("target %s port %d: no record", tg.Host, tg.Port)
		}
	}
	// An _arduino._tcp record still needs the port.
	ard := Device{Instance: "x", Service: "_arduino._tcp", Port: 8266, Addrs: []netip.Addr{addr}}
	if i := matchDevice(Target{Host: "10.0.0.7", Port: 4000, Addrs: []netip.Addr{addr}}, []Device{ard}); i >= 0 {
		t.Error("an _arduino._tcp record on another port matched")
	}
	// The inventory's port overrides the platform default: one device.
	ts := Merge([]Device{rec}, []inventory.Device{{Name: "plug", Address: "10.0.0.7", Port: 4000, Protocol: "esphome"}})
	if len(ts) != 1 || ts[0].Port != 4000 || ts[0].TXT["config_hash"] != "0000aaaa" {
		t.Fatalf("merged %+v", ts)
	}
}
