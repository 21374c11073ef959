package mdnsd

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// discard is a logger that drops everything.
func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandleRouting(t *testing.T) {
	z := testZone(t)
	mdnsSrc := netip.MustParseAddrPort("127.0.0.1:5353")
	ephemeral := netip.MustParseAddrPort("127.0.0.1:40000")

	qm := query(q("ots-sim-01.local.", dns.TypeA))
	qu := query(dns.Question{Name: "ots-sim-01.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET | classUnicast})
	mixed := query(qu.Question[0], q("ots-sim-02.local.", dns.TypeA))
	resp := query(q("ots-sim-01.local.", dns.TypeA))
	resp.Response = true
	notify := query(q("ots-sim-01.local.", dns.TypeA))
	notify.Opcode = dns.OpcodeNotify
	rcode := query(q("ots-sim-01.local.", dns.TypeA))
	rcode.Rcode = dns.RcodeServerFailure
	legacy := query(q("ots-sim-01.local.", dns.TypeA))
	legacy.Id = 0xbeef

	tests := []struct {
		name       string
		pkt        []byte
		src        netip.AddrPort
		unicastDst bool
		want       int            // packets
		to         netip.AddrPort // zero: multicast
		id         uint16
	}{
		{"QM query: multicast", pack(t, qm), mdnsSrc, false, 1, netip.AddrPort{}, 0},
		{"QU query: unicast to querier", pack(t, qu), mdnsSrc, false, 1, mdnsSrc, 0},
		{"QU and QM mixed: multicast, one packet per device", pack(t, mixed), mdnsSrc, false, 2, netip.AddrPort{}, 0},
		{"direct unicast query: unicast", pack(t, qm), mdnsSrc, true, 1, mdnsSrc, 0},
		{"legacy: unicast, same ID", pack(t, legacy), ephemeral, false, 1, ephemeral, 0xbeef},
		{"response ignored", pack(t, resp), mdnsSrc, false, 0, netip.AddrPort{}, 0},
		{"other opcode ignored", pack(t, notify), mdnsSrc, false, 0, netip.AddrPort{}, 0},
		{"non-zero rcode ignored", pack(t, rcode), mdnsSrc, false, 0, netip.AddrPort{}, 0},
		{"garbage ignored", []byte{1, 2, 3}, mdnsSrc, false, 0, netip.AddrPort{}, 0},
		{"empty ignored", nil, mdnsSrc, false, 0, netip.AddrPort{}, 0},
		{"unknown name: silence", pack(t, query(q("x.local.", dns.TypeA))), mdnsSrc, false, 0, netip.AddrPort{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := z.handle(tt.pkt, tt.src, tt.unicastDst, discard())
			if len(out) != tt.want {
				t.Fatalf("got %d packets, want %d", len(out), tt.want)
			}
			for _, o := range out {
				if want := netip.MustParseAddr("127.0.0.2"); tt.want == 1 && o.from != want {
					t.Errorf("sent from %v, want the device's %v", o.from, want)
				}
				if o.to != tt.to {
					t.Errorf("sent to %v, want %v", o.to, tt.to)
				}
				var m dns.Msg
				if err := m.Unpack(o.msg); err != nil {
					t.Fatalf("unpack reply: %v", err)
				}
				if m.Id != tt.id {
					t.Errorf("ID %#x, want %#x", m.Id, tt.id)
				}
				if len(m.Answer) == 0 {
					t.Error("reply without answers")
				}
			}
		})
	}
}

func TestNewRequiresMulticastInterface(t *testing.T) {
	// These fail before any socket is opened.
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Interface is required") {
		t.Errorf("nil interface: %v", err)
	}
	down := &net.Interface{Index: 99, Name: "fake0", Flags: net.FlagMulticast}
	if _, err := New(Config{Interface: down}); err == nil || !strings.Contains(err.Error(), "down") {
		t.Errorf("down interface: %v", err)
	}
	noMC := &net.Interface{Index: 99, Name: "fake0", Flags: net.FlagUp | net.FlagLoopback}
	if _, err := New(Config{Interface: noMC}); !errors.Is(err, ErrNoMulticast) {
		t.Errorf("interface without MULTICAST: %v, want ErrNoMulticast", err)
	}
}

func TestLoopbackInterface(t *testing.T) {
	// Only reads the interface list; sends nothing.
	ifi, err := LoopbackInterface()
	if err != nil {
		if errors.Is(err, ErrNoMulticast) && !strings.Contains(err.Error(), "multicast") {
			t.Errorf("error lacks a hint: %v", err)
		}
		t.Skipf("no usable loopback interface here: %v", err)
	}
	if ifi.Flags&(net.FlagLoopback|net.FlagUp|net.FlagMulticast) != net.FlagLoopback|net.FlagUp|net.FlagMulticast {
		t.Errorf("%s flags %v: want loopback, up, multicast", ifi.Name, ifi.Flags)
	}
}

func TestInterfacePrefixes(t *testing.T) {
	ifi, err := LoopbackInterface()
	if err != nil {
		t.Skipf("no usable loopback interface here: %v", err)
	}
	ps, err := interfacePrefixes(ifi)
	if err != nil {
		t.Fatal(err)
	}
	in := func(s string) bool {
		for _, p := range ps {
			if p.Contains(netip.MustParseAddr(s)) {
				return true
			}
		}
		return false
	}
	if !in("127.0.0.250") || in("192.0.2.1") {
		t.Errorf("loopback prefixes %v: want 127.0.0.250 inside, 192.0.2.1 outside", ps)
	}
}

func TestNameKey(t *testing.T) {
	tests := []struct {
		a, b  string
		equal bool
	}{
		{`OTS\ Firmware\ Main._ota._tcp.local.`, "ots firmware main._OTA._tcp.local", true},
		{`a\.b._ota._tcp.local.`, "a.b._ota._tcp.local.", false}, // escaped dot is inside the label
		{`\079TS._ota._tcp.local.`, "OTS._ota._tcp.local.", true},
		{"ÄB.local.", "äb.local.", false}, // only ASCII folds
	}
	for _, tt := range tests {
		ka, ok1 := nameKey(tt.a)
		kb, ok2 := nameKey(tt.b)
		if !ok1 || !ok2 {
			t.Fatalf("nameKey(%q)=%v nameKey(%q)=%v", tt.a, ok1, tt.b, ok2)
		}
		if (ka == kb) != tt.equal {
			t.Errorf("%q vs %q: equal=%v, want %v", tt.a, tt.b, ka == kb, tt.equal)
		}
	}
	for _, bad := range []string{"", strings.Repeat("a", 64) + ".local.", strings.Repeat("abcdefg.", 40)} {
		if _, ok := nameKey(bad); ok {
			t.Errorf("nameKey(%.30q...) accepted", bad)
		}
	}
}

func TestEscapeLabelMatchesUnpack(t *testing.T) {
	// Our escaping must equal what miekg/dns produces for the same label on
	// the wire, or instance names would not match across the two paths.
	for _, label := range []string{"plain", "OTS Firmware Main (ots-sim-01)", `a.b\c"d;e@f'g`, "tab\there", "ünï", "\x7f\x00"} {
		wire := append([]byte{byte(len(label))}, label...)
		wire = append(wire, 0)
		want, _, err := dns.UnpackDomainName(wire, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := escapeLabel(label) + "."; got != want {
			t.Errorf("escapeLabel(%q) = %q, unpack gives %q", label, got, want)
		}
	}
}

func FuzzHandle(f *testing.F) {
	add := func(m *dns.Msg, port uint16) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, port, false)
	}
	add(query(q("_ota._tcp.local.", dns.TypePTR)), 5353)
	add(query(q("_services._dns-sd._udp.local.", dns.TypePTR)), 5353)
	add(query(q(seedInst+"._ota._tcp.local.", dns.TypeANY), q("ots-sim-03.local.", dns.TypeAAAA)), 40000)
	add(query(dns.Question{Name: "ots-sim-01.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET | classUnicast}), 5353)
	ka := query(q("_arduino._tcp.local.", dns.TypePTR))
	ka.Answer = []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: "_arduino._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 120}, Ptr: arduinoInst + "._arduino._tcp.local."}}
	add(ka, 5353)
	edns := query(q("_http._tcp.local.", dns.TypePTR))
	edns.SetEdns0(1232, false)
	add(edns, 53)
	f.Add([]byte{}, uint16(5353), false)
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, uint16(5353), true) // self-pointing name
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0}, uint16(5353), false)                // 65535 questions claimed

	z := testZone(f)
	f.Fuzz(func(t *testing.T, pkt []byte, port uint16, unicastDst bool) {
		src := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
		for _, o := range z.handle(pkt, src, unicastDst, discard()) {
			var m dns.Msg
			if err := m.Unpack(o.msg); err != nil {
				t.Fatalf("reply does not unpack: %v", err)
			}
			if len(o.msg) > maxPayload {
				t.Fatalf("reply of %d bytes", len(o.msg))
			}
			if !m.Response || len(m.Answer) == 0 {
				t.Fatalf("reply response=%v answers=%d", m.Response, len(m.Answer))
			}
		}
	})
}

// BenchmarkBrowse250 answers a "_ota._tcp" browse with 250 devices
// registered, packing every response packet: the work the responder does
// per browse query.
func BenchmarkBrowse250(b *testing.B) {
	z := bigZone(b, 250)
	pkt := pack(b, query(q("_ota._tcp.local.", dns.TypePTR)))
	src := netip.MustParseAddrPort("127.0.0.1:5353")
	var packets, bytes int
	b.ReportAllocs()
	for b.Loop() {
		out := z.handle(pkt, src, false, discard())
		packets, bytes = len(out), 0
		for _, o := range out {
			bytes += len(o.msg)
		}
	}
	b.ReportMetric(float64(packets), "packets/op")
	b.ReportMetric(float64(bytes), "wirebytes/op")
}

// BenchmarkAdd250 registers 250 devices with two services each.
func BenchmarkAdd250(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		bigZone(b, 250)
	}
}
