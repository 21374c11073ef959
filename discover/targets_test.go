package discover

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/inventory"
)

func TestMerge(t *testing.T) {
	a := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }
	found := []Device{
		{Instance: "OTS Firmware Main Controller", Service: "_arduino._tcp", Host: "ots-a.local", Port: 3232, Addrs: a("10.0.0.2"), WebPort: 80},
		{Instance: "OTS Firmware Main Controller", Service: "_ota._tcp", Host: "ots-a.local", Port: 3232, Addrs: a("10.0.0.2"), TXT: map[string]string{"version": "1.0.0"}},
		{Instance: "sketch", Service: "_arduino._tcp", Host: "sketch.local", Port: 3232, Addrs: a("10.0.0.3")},
	}
	inv := []inventory.Device{
		{Name: "kitchen", Address: "10.0.0.3", Protocol: "espota", Auth: inventory.AuthRef{Env: "K"}}, // = sketch
		{Name: "hall", Address: "ots-a.local", Port: 3232},                                            // = ots-a by host name
		{Name: "workshop", Address: "10.20.0.7"},                                                      // inventory only
	}
	ts := Merge(found, inv)
	if len(ts) != 3 {
		t.Fatalf("targets %+v", ts)
	}
	if ts[0].Name != "hall" || ts[0].Service != "_ota._tcp" || ts[0].TXT["version"] != "1.0.0" || ts[0].WebPort != 80 || len(ts[0].Sources) != 2 {
		t.Errorf("hall %+v", ts[0])
	}
	if ts[1].Name != "kitchen" || ts[1].Protocol != "espota" || ts[1].Auth.Env != "K" || ts[1].Port != 3232 {
		t.Errorf("kitchen %+v", ts[1])
	}
	if ts[2].Name != "workshop" || ts[2].Addrs[0].String() != "10.20.0.7" || ts[2].Sources[0] != "inventory" {
		t.Errorf("workshop %+v", ts[2])
	}
	if it := ts[2].Info(); it.Host != "10.20.0.7" || it.WebPort != 0 {
		t.Errorf("inventory info target %+v", it)
	}
	if it := FromDevice(found[2]).Info(); it.WebPort != -1 || it.Host != "10.0.0.3" {
		t.Errorf("mdns info target %+v", it)
	}
}

func TestCacheFile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("LocalAppData", dir)
	if ds, _, err := LoadCache(); err != nil || ds != nil {
		t.Fatalf("empty cache: %v %v", ds, err)
	}
	in := []Device{{Instance: "a", Service: "_ota._tcp", Host: "a.local", Port: 3232, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}}}
	if err := SaveCache(in); err != nil {
		t.Fatal(err)
	}
	ds, saved, err := LoadCache()
	if err != nil || len(ds) != 1 || ds[0].Host != "a.local" || time.Since(saved) > time.Minute {
		t.Fatalf("%+v %v %v", ds, saved, err)
	}
	p, _ := CachePath()
	if rel, err := filepath.Rel(dir, p); err != nil || rel[:2] == ".." {
		t.Errorf("cache at %s, outside %s", p, dir)
	}
}

func TestSameDevice(t *testing.T) {
	as := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	tests := []struct {
		name   string
		addrs  [][]netip.Addr
		ports  []int
		want   [][]int
		shared []string
	}{
		{"a name and its address", [][]netip.Addr{as("127.0.0.1", "::1"), as("127.0.0.1")}, []int{3232, 3232}, [][]int{{0, 1}}, []string{"127.0.0.1"}},
		{"other port", [][]netip.Addr{as("127.0.0.1"), as("127.0.0.1")}, []int{3232, 8266}, [][]int{{0}, {1}}, []string{"", ""}},
		{"unresolved stays apart", [][]netip.Addr{nil, as("10.0.0.1"), nil}, []int{3232, 3232, 3232}, [][]int{{0}, {1}, {2}}, []string{"", "", ""}},
		{"through a third", [][]netip.Addr{as("10.0.0.1"), as("10.0.0.2"), as("10.0.0.2", "10.0.0.1")}, []int{80, 80, 80}, [][]int{{0, 1, 2}}, []string{"10.0.0.1"}},
		{"v4-mapped", [][]netip.Addr{as("::ffff:10.0.0.1"), as("10.0.0.1")}, []int{1, 1}, [][]int{{0, 1}}, []string{"10.0.0.1"}},
		{"disjoint", [][]netip.Addr{as("10.0.0.1"), as("10.0.0.2"), as("10.0.0.1")}, []int{1, 1, 1}, [][]int{{0, 2}, {1}}, []string{"10.0.0.1", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SameDevice(tt.addrs, tt.ports)
			if len(got) != len(tt.want) {
				t.Fatalf("groups %+v, want %v", got, tt.want)
			}
			for i, g := range got {
				if !slices.Equal(g.Items, tt.want[i]) {
					t.Errorf("group %d = %v, want %v", i, g.Items, tt.want[i])
				}
				if sh := tt.shared[i]; sh == "" && g.Shared.IsValid() || sh != "" && g.Shared.String() != sh {
					t.Errorf("group %d shared %v, want %q", i, g.Shared, sh)
				}
			}
		})
	}
}
