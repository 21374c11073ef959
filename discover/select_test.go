package discover

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ots-ota/ots-ota/inventory"
)

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]Target{
		"192.168.1.4":         {Name: "192.168.1.4", Host: "192.168.1.4", Addrs: []netip.Addr{netip.MustParseAddr("192.168.1.4")}},
		"ots.local":           {Name: "ots.local", Host: "ots.local"},
		"ots.local:8266":      {Name: "ots.local:8266", Host: "ots.local", Port: 8266},
		"[fe80::1%eth0]:3232": {Name: "[fe80::1%eth0]:3232", Host: "fe80::1%eth0", Port: 3232, Addrs: []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}},
		"fe80::1":             {Name: "fe80::1", Host: "fe80::1", Addrs: []netip.Addr{netip.MustParseAddr("fe80::1")}},
	} {
		got, err := ParseTarget(in)
		if err != nil || got.Name != want.Name || got.Host != want.Host || got.Port != want.Port || len(got.Addrs) != len(want.Addrs) ||
			(len(got.Addrs) > 0 && got.Addrs[0] != want.Addrs[0]) {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "http://ots.local/update", "ots.local:0", "ots.local:99999", "a b"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) accepted", bad)
		}
	}
}

// TestSelectInventoryOnly needs no network: names come from the inventory
// and the (fake) system resolver.
func TestSelectInventoryOnly(t *testing.T) {
	inv := &inventory.Inventory{
		Devices: []inventory.Device{
			{Name: "kitchen", Address: "10.0.0.3", Port: 3232, Protocol: "espota"},
			{Name: "hall", Address: "hall.example"},
			{Name: "attic", Address: "attic.local"},
			{Name: "kitchen-again", Address: "10.0.0.3", Port: 3232},
		},
		Groups: map[string][]string{"down": {"kitchen", "hall"}},
	}
	var lookups atomic.Int32
	res := &Resolver{LookupOS: func(_ context.Context, h string) ([]netip.Addr, error) {
		lookups.Add(1)
		if h == "hall.example" {
			return []netip.Addr{netip.MustParseAddr("10.0.0.4")}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: h, IsNotFound: true}
	}}
	sel, err := Select(context.Background(), Selection{Group: "down", Args: []string{"attic", "kitchen-again", "10.0.0.9:8266"},
		InventoryOnly: true, Inventory: inv, Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	// kitchen-again has kitchen's address and port: one device.
	if len(sel) != 4 {
		t.Fatalf("selected %+v", sel)
	}
	if sel[0].Target.Name != "kitchen" || sel[0].Target.Protocol != "espota" || sel[0].Err != nil {
		t.Errorf("kitchen %+v", sel[0])
	}
	if sel[1].Target.Name != "hall" || sel[1].Target.Addrs[0].String() != "10.0.0.4" {
		t.Errorf("hall %+v", sel[1])
	}
	var re *ResolveError
	if sel[2].Target.Name != "attic" || !errors.As(sel[2].Err, &re) || strings.Contains(sel[2].Err.Error(), "mDNS") {
		t.Errorf("attic %+v", sel[2])
	}
	if sel[3].Target.Port != 8266 || sel[3].Target.Addrs[0].String() != "10.0.0.9" {
		t.Errorf("address target %+v", sel[3])
	}
	if n := lookups.Load(); n != 2 {
		t.Errorf("%d lookups", n)
	}

	if _, err := Select(context.Background(), Selection{InventoryOnly: true, Inventory: inv}); !errors.Is(err, ErrNoTargets) {
		t.Errorf("nothing named: %v", err)
	}
	if _, err := Select(context.Background(), Selection{Group: "up", InventoryOnly: true, Inventory: inv}); err == nil {
		t.Error("unknown group accepted")
	}
}

// TestSelectAll merges a browse with the inventory.
func TestSelectAll(t *testing.T) {
	ifi := mdnsLoopback(t)
	startFleet(t, ifi, 2, "127.43.8.2", "selall", uniqueInstances("selall"))
	inv := &inventory.Inventory{Devices: []inventory.Device{
		{Name: "named-one", Address: "127.43.8.3", Auth: inventory.AuthRef{Env: "X"}},
		{Name: "elsewhere", Address: "127.43.8.99"},
	}}
	sel, err := Select(context.Background(), Selection{All: true, Inventory: inv, Config: loCfg(ifi, "_ota._tcp"), BrowseTimeout: 1500e6})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Selected{}
	for _, s := range sel {
		byName[s.Target.Name] = s
	}
	if s, ok := byName["named-one"]; !ok || s.Target.TXT["version"] != "1.0.0" || len(s.Target.Sources) != 2 || s.Target.Auth.Env != "X" {
		t.Errorf("merged device %+v", s)
	}
	if _, ok := byName["selall-001"]; !ok {
		t.Errorf("browsed device missing: %+v", sel)
	}
	if s, ok := byName["elsewhere"]; !ok || s.Target.Sources[0] != "inventory" {
		t.Errorf("inventory device %+v", s)
	}
	// Named .local devices get their TXT from a browse that stops once all are seen.
	sel, err = Select(context.Background(), Selection{Args: []string{"selall-02.local"}, Config: loCfg(ifi, "_ota._tcp"), BrowseTimeout: 5e9})
	if err != nil || len(sel) != 1 || sel[0].Err != nil || sel[0].Target.TXT["version"] != "1.0.0" || sel[0].Target.Addrs[0].String() != "127.43.8.3" {
		t.Fatalf("named: %+v %v", sel, err)
	}
}

// TestSelectCached: --all --cached takes the devices of the last discover
// from the cache file, without a browse.
func TestSelectCached(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("LocalAppData", dir)
	cached := []Device{{Instance: "OTS Firmware Main", Service: "_ota._tcp", Host: "ots-fw-main.local", Port: 3232,
		Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.7")}, TXT: map[string]string{"version": "1.2.3"}}}
	if err := SaveCache(cached); err != nil {
		t.Fatal(err)
	}
	inv := &inventory.Inventory{Devices: []inventory.Device{{Name: "lab", Address: "10.0.0.7"}, {Name: "far", Address: "10.9.9.9"}}}
	// No interfaces: a browse would fail; the cache needs none.
	sel, err := Select(context.Background(), Selection{All: true, Cached: true, Inventory: inv,
		Config: Config{Interfaces: []*net.Interface{{Name: "none0", Index: 999, Flags: net.FlagUp | net.FlagMulticast}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(sel) != 2 || sel[0].Target.Name != "lab" || sel[0].Target.TXT["version"] != "1.2.3" || sel[1].Target.Name != "far" {
		t.Fatalf("selected %+v", sel)
	}
}

// TestCheckArgs: every malformed argument is a bad target (a usage error),
// found before any browse, and inventory names pass (review 68 #5).
func TestCheckArgs(t *testing.T) {
	inv := &inventory.Inventory{Devices: []inventory.Device{{Name: "kitchen", Address: "10.0.0.3"}}}
	for _, bad := range []string{"127.0.0.2:abc", "", " ", "[::1", "127.0.0.2:0", "127.0.0.2:99999", ":3232", "a/b"} {
		err := CheckArgs([]string{"kitchen", bad, "127.0.0.5"}, inv)
		if !errors.Is(err, ErrBadTarget) || strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckArgs(%q) = %v, want a one-line bad target", bad, err)
		}
		_, err = Select(context.Background(), Selection{Args: []string{bad}, InventoryOnly: true, Inventory: inv})
		if !errors.Is(err, ErrBadTarget) {
			t.Errorf("Select(%q) = %v, want a bad target", bad, err)
		}
	}
	if err := CheckArgs([]string{"kitchen", "ots.local:8266", "10.0.0.9", "[::1]:3232"}, inv); err != nil {
		t.Error(err)
	}
}

// TestSelectGivenTwice: targets merge only on the same address and port,
// and the merge is told, not silent (review 68 #11).
func TestSelectGivenTwice(t *testing.T) {
	sel, err := Select(context.Background(), Selection{
		Args: []string{"127.0.0.2", "127.0.0.2", "127.0.0.2:8266", "127.0.0.2:3232", "127.0.0.3:8266"}, InventoryOnly: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sel {
		got = append(got, s.Target.Name+"="+strings.Join(s.Target.Given, ","))
	}
	want := []string{"127.0.0.2=127.0.0.2,127.0.0.2", "127.0.0.2:8266=", "127.0.0.2:3232=", "127.0.0.3:8266="}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("selected %q, want %q", got, want)
	}
}

// TestSelectNameAndAddress: a name and an address of one device are one
// target, merged on the resolved addresses (issue 14), not the text.
func TestSelectNameAndAddress(t *testing.T) {
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		if host == "devbox" {
			return []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, errors.New("no such host")
	}
	sel, err := Select(context.Background(), Selection{
		Args: []string{"devbox:3232", "127.0.0.1:3232", "nowhere:3232"}, InventoryOnly: true,
		Resolver: &Resolver{LookupOS: lookup},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sel) != 2 || strings.Join(sel[0].Target.Given, ",") != "devbox:3232,127.0.0.1:3232" || sel[1].Err == nil {
		t.Errorf("selected %+v, want devbox given twice and nowhere unresolved", sel)
	}
}

// TestSelectAllLeavesWebOnlyHosts: a host seen only as _http._tcp (a
// printer) is never swept into --all: not from the cache a discover
// --service _http._tcp left, not as what a named address gets enriched
// with, and not into the inventory by --save (issue 17). Named as a
// service of its own it takes part, still marked _http._tcp, so that the
// detection table sends it nothing without a family fingerprint.
func TestSelectAllLeavesWebOnlyHosts(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("LocalAppData", dir)
	ota := Device{Instance: "OTS Firmware Main", Service: "_ota._tcp", Host: "ots-fw-main.local", Port: 3232,
		Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.7")}}
	printer := Device{Instance: "LaserJet Pro", Service: "_http._tcp", Host: "laserjet.local", Port: 80,
		Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.8")}}
	wled := Device{Instance: "wled-a1b2c3", Service: "_wled._tcp", Host: "wled-a1b2c3.local", Port: 80,
		Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, TXT: map[string]string{"mac": "aabbcca1b2c3"}}
	if err := SaveCache([]Device{ota, printer, wled}); err != nil {
		t.Fatal(err)
	}
	noNet := []*net.Interface{{Name: "none0", Index: 999, Flags: net.FlagUp | net.FlagMulticast}}
	sel, err := Select(context.Background(), Selection{All: true, Cached: true, Args: []string{"10.0.0.8"}, Config: Config{Interfaces: noNet}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sel {
		got = append(got, s.Target.Name+"/"+s.Target.Service+"/"+strconv.Itoa(s.Target.Port))
	}
	// The WLED is swept in by its own service (issue 19), the printer only
	// as the address named.
	if want := "OTS Firmware Main/_ota._tcp/3232 wled-a1b2c3/_wled._tcp/80 10.0.0.8//0"; strings.Join(got, " ") != want {
		t.Errorf("--all --cached took %q, want %q (the printer named by address, not as its web service)", got, want)
	}
	sel, err = Select(context.Background(), Selection{All: true, Cached: true,
		Config: Config{Interfaces: noNet, Services: []string{"_ota._tcp", "_arduino._tcp", "_http._tcp"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(sel) != 2 || sel[1].Target.Name != "LaserJet Pro" || sel[1].Target.Service != "_http._tcp" {
		t.Errorf("with _http._tcp named as a service: %+v", sel)
	}
	if entries := InventoryEntries([]Device{ota, printer}, func(netip.Addr) string { return "http" }); len(entries) != 1 || entries[0].Address != "10.0.0.7" {
		t.Errorf("--save would write %+v, want the OTS device alone", entries)
	}
}

// TestBrowseWebOnlyHostIsNoDevice: _http._tcp is browsed for web ports
// only; a host that advertises nothing else is no device of a default
// browse.
func TestBrowseWebOnlyHostIsNoDevice(t *testing.T) {
	ifi := mdnsLoopback(t)
	r := newResponderFor(t, ifi, "_http._tcp", "LaserJet-t17", "laserjet-t17", netip.MustParseAddr("127.43.17.2"))
	r.set(func(r *splitResponder) { r.port = 80 })
	startFleet(t, ifi, 1, "127.43.17.3", "webonly", uniqueInstances("webonly"))
	ds, err := Browse(context.Background(), loCfg(ifi), BrowseOptions{Timeout: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(ours(ds, "webonly")) != 1 {
		t.Fatalf("the fleet's device is missing: %+v", ds)
	}
	if n := r.count(dns.TypePTR); n == 0 {
		t.Fatalf("the browse asked no PTR of _http._tcp: the test shows nothing")
	}
	if len(ours(ds, "LaserJet")) != 0 {
		t.Errorf("a host seen only as _http._tcp became a device: %+v", ours(ds, "LaserJet"))
	}
	ds, err = Browse(context.Background(), loCfg(ifi, "_ota._tcp", "_http._tcp"), BrowseOptions{Timeout: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := ours(ds, "LaserJet"); len(got) != 1 || got[0].Service != "_http._tcp" || got[0].Port != 80 {
		t.Errorf("named as a service, the printer is %+v", got)
	}
}

// TestBrowseWLED: a default browse asks for _wled._tcp beside the others
// (issue 19) and keeps the device with its TXT mac; it is a device of its
// own, swept into --all.
func TestBrowseWLED(t *testing.T) {
	ifi := mdnsLoopback(t)
	r := newResponderFor(t, ifi, "_wled._tcp", "wled-t19a1b2", "wled-t19a1b2", netip.MustParseAddr("127.43.19.2"))
	r.set(func(r *splitResponder) { r.port, r.txt = 80, []string{"mac=aabbcc19a1b2"} })
	ds, err := Browse(context.Background(), loCfg(ifi), BrowseOptions{Timeout: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if n := r.count(dns.TypePTR); n == 0 {
		t.Fatal("the default browse asked no PTR of _wled._tcp")
	}
	got := ours(ds, "wled-t19")
	if len(got) != 1 || got[0].Service != "_wled._tcp" || got[0].Port != 80 || got[0].TXT["mac"] != "aabbcc19a1b2" {
		t.Fatalf("the WLED is %+v", got)
	}
	if sw := Sweepable(got, nil); len(sw) != 1 {
		t.Errorf("--all leaves the WLED out: %+v", sw)
	}
}

// TestSelectMQTTOnly: an inventory device without an address (reached
// over MQTT only) is left out of --group and --all, each one told to the
// caller, and refused, as a bad target, when named.
func TestSelectMQTTOnly(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("LocalAppData", dir)
	if err := SaveCache(nil); err != nil {
		t.Fatal(err)
	}
	inv := &inventory.Inventory{
		Devices: []inventory.Device{{Name: "lab", Address: "10.0.0.7"}, {Name: "barn", MQTTTopic: "barn_pump"}},
		Groups:  map[string][]string{"all": {"lab", "barn"}, "far": {"barn"}},
	}
	noIf := Config{Interfaces: []*net.Interface{{Name: "none0", Index: 999, Flags: net.FlagUp | net.FlagMulticast}}}
	for _, s := range []Selection{{Group: "all", InventoryOnly: true}, {All: true, Cached: true, Config: noIf}} {
		var told []string
		s.Inventory = inv
		s.MQTTOnly = func(d inventory.Device) { told = append(told, d.Name) }
		sel, err := Select(context.Background(), s)
		if err != nil || len(sel) != 1 || sel[0].Target.Name != "lab" || !slices.Equal(told, []string{"barn"}) {
			t.Errorf("group %q all %v: %+v %v, told %v", s.Group, s.All, sel, err, told)
		}
	}
	// A group of such devices only: nothing selected, no error (the
	// caller says why).
	sel, err := Select(context.Background(), Selection{Group: "far", InventoryOnly: true, Inventory: inv})
	if err != nil || len(sel) != 0 {
		t.Errorf("group far: %+v %v", sel, err)
	}
	_, err = Select(context.Background(), Selection{Args: []string{"barn"}, InventoryOnly: true, Inventory: inv})
	if !errors.Is(err, ErrBadTarget) || !strings.Contains(err.Error(), "barn has no address in the inventory: it is reached over MQTT only") {
		t.Errorf("named: %v", err)
	}
	if ts := Merge(nil, inv.Devices); len(ts) != 1 || ts[0].Name != "lab" {
		t.Errorf("Merge: %+v", ts)
	}
}
