package mdnsd

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

func TestMangle(t *testing.T) {
	for in, want := range map[string]string{
		"ots-sim-01":                     "ots-sim-2", // ESP-IDF reads the numeric suffix and adds one
		"ots-sim-2":                      "ots-sim-3",
		"esp32":                          "esp32-2",
		"esp32-ots":                      "esp32-ots-2",
		"OTS Firmware Main (ots-sim-01)": "OTS Firmware Main (ots-sim-01)-2",
		"name-":                          "name-1",
	} {
		if got := mangle(in); got != want {
			t.Errorf("mangle(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCollision: the greater address or SRV wins, identical records are no
// conflict (a responder's own packets loop back), as in ESP-IDF.
func TestCollision(t *testing.T) {
	z := newZone(espIDFTTLs)
	e, err := z.add(Host{Name: "ots-sim-01", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.20")},
		Services: []Service{{Instance: "ots-sim-01", Type: "_ota._tcp", Port: 3232}}})
	if err != nil {
		t.Fatal(err)
	}
	a := func(name, ip string) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET | classCacheFlush}, A: net.ParseIP(ip)}
	}
	srv := func(target string) dns.RR {
		return &dns.SRV{Hdr: dns.RR_Header{Name: "ots-sim-01._ota._tcp.local.", Rrtype: dns.TypeSRV, Class: dns.ClassINET}, Port: 3232, Target: target}
	}
	tests := []struct {
		name     string
		rr       dns.RR
		hostLost bool
		svcLost  int
	}{
		{"own address", a("ots-sim-01.local.", "127.0.0.20"), false, 0},
		{"lower address", a("ots-sim-01.local.", "127.0.0.3"), false, 0},
		{"higher address", a("OTS-SIM-01.local.", "127.0.0.30"), true, 0},
		{"denial", a("ots-sim-01.local.", "0.0.0.0"), true, 0},
		{"other name", a("ots-sim-02.local.", "127.0.0.30"), false, 0},
		{"own SRV", srv("ots-sim-01.local."), false, 0},
		{"longer SRV target", srv("ots-sim-010.local."), false, 1},
		{"shorter SRV target", srv("ots-sim-1.local."), false, 0},
		{"greater SRV target", srv("ots-sim-02.local."), false, 1},
	}
	for _, tt := range tests {
		var hostLost bool
		var svcLost []int
		for h, l := range z.collisions([]dns.RR{tt.rr}) {
			if h != e {
				t.Fatalf("%s: a loss for another host %s", tt.name, h.label)
			}
			hostLost, svcLost = l.host, l.svcs
		}
		if hostLost != tt.hostLost || len(svcLost) != tt.svcLost {
			t.Errorf("%s: host lost %v, services lost %v; want %v, %d", tt.name, hostLost, svcLost, tt.hostLost, tt.svcLost)
		}
	}
}

// FuzzCollisions: arbitrary packets never panic the conflict check, and it
// only ever names hosts of the zone.
func FuzzCollisions(f *testing.F) {
	z := testZone(f)
	for _, e := range z.all() {
		b, err := z.probe(e, true).Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var m dns.Msg
		if m.Unpack(pkt) != nil {
			return
		}
		hosts := z.all()
		for e, l := range z.collisions(append(append(m.Answer, m.Ns...), m.Extra...)) {
			if !slices.Contains(hosts, e) {
				t.Fatalf("loss for a host not in the zone: %+v", l)
			}
			for _, i := range l.svcs {
				if i < 0 || i >= len(e.spec.Services) {
					t.Fatalf("service index %d of %d", i, len(e.spec.Services))
				}
			}
		}
	})
}
