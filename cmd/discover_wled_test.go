package cmd

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/ots-ota/ots-ota/discover"
)

// A _wled._tcp device is listed as wled (its service names the family,
// issue 19) with its TXT mac, whatever the port probe adds; its --json
// line keeps to discover's schema. Other services keep the probe's word.
func TestDiscoverRowWLED(t *testing.T) {
	wled := discover.Target{Name: "wled-a1b2c3", Host: "wled-a1b2c3.local", Port: 80, Service: "_wled._tcp",
		Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, TXT: map[string]string{"mac": "aabbcca1b2c3"}, Sources: []string{"mdns"}}
	r := rowOf(wled)
	ok := true
	r.Reachable = &ok
	if r.Protocol != "wled" || r.TXT["mac"] != "aabbcca1b2c3" {
		t.Fatalf("row %+v", r)
	}
	line, err := json.Marshal(deviceLineOf(r))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkLine("discover.json", line); err != nil {
		t.Errorf("%s: %v", line, err)
	}
	for svc, want := range map[string]string{"_ota._tcp": "", "_arduino._tcp": "", "_http._tcp": "", "_esphomelib._tcp": "esphome", "_WLED._tcp.local.": "wled"} {
		if got := serviceProtocol(svc); got != want {
			t.Errorf("serviceProtocol(%q) = %q, want %q", svc, got, want)
		}
	}
	inv := rowOf(discover.Target{Name: "x", Service: "_wled._tcp", Protocol: "espota", Sources: []string{"mdns", "inventory"}})
	if inv.Protocol != "espota" {
		t.Errorf("the inventory's protocol lost to the service: %+v", inv)
	}
}
