package mdnsd

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// The three kinds of device in device-contract.md §1, as the simulator
// names them.
func seedHost() Host {
	return Host{
		Name:  "ots-sim-01",
		Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.2")},
		Services: []Service{
			{Instance: "OTS Firmware Main (ots-sim-01)", Type: "_ota._tcp", Port: 3232},
			{Instance: "OTS Firmware Main (ots-sim-01)", Type: "_http._tcp", Port: 80},
		},
	}
}

func otsHost() Host {
	return Host{
		Name:  "ots-sim-02",
		Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.3")},
		Services: []Service{
			{Instance: "OTS Firmware Main Controller (ots-sim-02)", Type: "_arduino._tcp", Port: 3232},
			{Instance: "OTS Firmware Main Controller (ots-sim-02)", Type: "_http._tcp", Port: 80},
		},
	}
}

func arduinoHost() Host {
	return Host{
		Name:  "ots-sim-03",
		Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.4"), netip.MustParseAddr("::1")},
		Services: []Service{{
			Instance: "esp32-ots-sim-03", Type: "_arduino._tcp", Port: 3232,
			TXT: []string{"board=esp32s3", "tcp_check=no", "ssh_upload=no", "auth_upload=yes"},
		}},
	}
}

func testZone(t testing.TB) *zone {
	t.Helper()
	z := newZone(uniformTTLs(120))
	for _, h := range []Host{seedHost(), otsHost(), arduinoHost()} {
		if _, err := z.add(h); err != nil {
			t.Fatalf("add %s: %v", h.Name, err)
		}
	}
	return z
}

func query(qs ...dns.Question) *dns.Msg {
	m := new(dns.Msg)
	m.Question = qs
	return m
}

func q(name string, qtype uint16) dns.Question {
	return dns.Question{Name: name, Qtype: qtype, Qclass: dns.ClassINET}
}

// describe renders a record without TTL and class: "name TYPE rdata".
func describe(rr dns.RR) string {
	h := rr.Header()
	data := strings.TrimPrefix(rr.String(), h.String())
	return h.Name + " " + dns.TypeToString[h.Rrtype] + " " + data
}

func describeAll(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, describe(rr))
	}
	return out
}

// roundTrip packs and unpacks the replies' messages, as a receiver would
// see them.
func roundTrip(t *testing.T, replies []reply) []*dns.Msg {
	t.Helper()
	var out []*dns.Msg
	for i, r := range replies {
		m := r.msg
		b, err := m.Pack()
		if err != nil {
			t.Fatalf("pack message %d: %v", i, err)
		}
		var u dns.Msg
		if err := u.Unpack(b); err != nil {
			t.Fatalf("unpack message %d: %v", i, err)
		}
		out = append(out, &u)
	}
	return out
}

func asReplies(msgs []*dns.Msg) []reply {
	var out []reply
	for _, m := range msgs {
		out = append(out, reply{msg: m})
	}
	return out
}

// sourceOf is the address the test zone's device answering m has: the
// zone's device addresses are 127.0.0.2-4 and appear in the first record
// naming a host.
func sourceOf(m *dns.Msg) netip.Addr {
	for _, rr := range append(m.Answer, m.Extra...) {
		s := describe(rr)
		for i, h := range []string{"ots-sim-01", "ots-sim-02", "ots-sim-03"} {
			if strings.Contains(s, h) {
				return netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 2)})
			}
		}
	}
	return netip.Addr{}
}

const (
	seedInst    = `OTS\ Firmware\ Main\ \(ots-sim-01\)`
	otsInst     = `OTS\ Firmware\ Main\ Controller\ \(ots-sim-02\)`
	arduinoInst = `esp32-ots-sim-03`
)

func TestRespond(t *testing.T) {
	z := testZone(t)
	tests := []struct {
		name       string
		q          *dns.Msg
		ans, extra []string // over all packets
		packets    int      // 0 means 1
	}{
		{
			name: "PTR browse _ota._tcp",
			q:    query(q("_ota._tcp.local.", dns.TypePTR)),
			ans:  []string{"_ota._tcp.local. PTR " + seedInst + "._ota._tcp.local."},
			extra: []string{
				seedInst + "._ota._tcp.local. SRV 0 0 3232 ots-sim-01.local.",
				seedInst + `._ota._tcp.local. TXT ""`,
				"ots-sim-01.local. A 127.0.0.2",
			},
		},
		{
			name: "PTR browse _arduino._tcp: two devices",
			q:    query(q("_arduino._tcp.local.", dns.TypePTR)),
			ans: []string{
				"_arduino._tcp.local. PTR " + otsInst + "._arduino._tcp.local.",
				"_arduino._tcp.local. PTR " + arduinoInst + "._arduino._tcp.local.",
			},
			extra: []string{
				otsInst + "._arduino._tcp.local. SRV 0 0 3232 ots-sim-02.local.",
				otsInst + `._arduino._tcp.local. TXT ""`,
				"ots-sim-02.local. A 127.0.0.3",
				arduinoInst + "._arduino._tcp.local. SRV 0 0 3232 ots-sim-03.local.",
				arduinoInst + `._arduino._tcp.local. TXT "board=esp32s3" "tcp_check=no" "ssh_upload=no" "auth_upload=yes"`,
				"ots-sim-03.local. A 127.0.0.4",
				"ots-sim-03.local. AAAA ::1",
			},
			packets: 2, // one per device
		},
		{
			// Every device answers for its own types, from its own address.
			name: "service type enumeration",
			q:    query(q("_services._dns-sd._udp.local.", dns.TypePTR)),
			ans: []string{
				"_services._dns-sd._udp.local. PTR _ota._tcp.local.",
				"_services._dns-sd._udp.local. PTR _http._tcp.local.",
				"_services._dns-sd._udp.local. PTR _arduino._tcp.local.",
				"_services._dns-sd._udp.local. PTR _http._tcp.local.",
				"_services._dns-sd._udp.local. PTR _arduino._tcp.local.",
			},
			packets: 3,
		},
		{
			name:  "SRV carries the address",
			q:     query(q(seedInst+"._http._tcp.local.", dns.TypeSRV)),
			ans:   []string{seedInst + "._http._tcp.local. SRV 0 0 80 ots-sim-01.local."},
			extra: []string{"ots-sim-01.local. A 127.0.0.2"},
		},
		{
			name: "TXT of an ArduinoOTA device",
			q:    query(q(arduinoInst+"._arduino._tcp.local.", dns.TypeTXT)),
			ans:  []string{arduinoInst + `._arduino._tcp.local. TXT "board=esp32s3" "tcp_check=no" "ssh_upload=no" "auth_upload=yes"`},
		},
		{
			name: "empty TXT is one empty string",
			q:    query(q(seedInst+"._ota._tcp.local.", dns.TypeTXT)),
			ans:  []string{seedInst + `._ota._tcp.local. TXT ""`},
		},
		{
			name: "ANY on an instance",
			q:    query(q(otsInst+"._http._tcp.local.", dns.TypeANY)),
			ans: []string{
				otsInst + "._http._tcp.local. SRV 0 0 80 ots-sim-02.local.",
				otsInst + `._http._tcp.local. TXT ""`,
			},
			extra: []string{"ots-sim-02.local. A 127.0.0.3"},
		},
		{
			name: "A",
			q:    query(q("ots-sim-01.local.", dns.TypeA)),
			ans:  []string{"ots-sim-01.local. A 127.0.0.2"},
		},
		{
			name: "AAAA",
			q:    query(q("ots-sim-03.local.", dns.TypeAAAA)),
			ans:  []string{"ots-sim-03.local. AAAA ::1"},
		},
		{
			name: "ANY on a host",
			q:    query(q("ots-sim-03.local.", dns.TypeANY)),
			ans:  []string{"ots-sim-03.local. A 127.0.0.4", "ots-sim-03.local. AAAA ::1"},
		},
		{
			name: "reverse mapping",
			q:    query(q("3.0.0.127.in-addr.arpa.", dns.TypePTR)),
			ans:  []string{"3.0.0.127.in-addr.arpa. PTR ots-sim-02.local."},
		},
		{
			name: "case-insensitive host",
			q:    query(q("OTS-SIM-01.Local.", dns.TypeA)),
			ans:  []string{"ots-sim-01.local. A 127.0.0.2"},
		},
		{
			name: "case-insensitive type",
			q:    query(q("_OTA._TCP.LOCAL.", dns.TypePTR)),
			ans:  []string{"_ota._tcp.local. PTR " + seedInst + "._ota._tcp.local."},
			extra: []string{
				seedInst + "._ota._tcp.local. SRV 0 0 3232 ots-sim-01.local.",
				seedInst + `._ota._tcp.local. TXT ""`,
				"ots-sim-01.local. A 127.0.0.2",
			},
		},
		{
			name:  "case-insensitive instance, spelled without escapes",
			q:     query(q("ots firmware main (OTS-SIM-01)._OTA._tcp.local.", dns.TypeSRV)),
			ans:   []string{seedInst + "._ota._tcp.local. SRV 0 0 3232 ots-sim-01.local."},
			extra: []string{"ots-sim-01.local. A 127.0.0.2"},
		},
		{
			name: "several questions in one packet, repeats answered once",
			q: query(
				q("ots-sim-02.local.", dns.TypeA),
				q(seedInst+"._ota._tcp.local.", dns.TypeTXT),
				q("ots-sim-02.local.", dns.TypeA),
				q("OTS-SIM-02.local.", dns.TypeA),
			),
			ans: []string{
				"ots-sim-02.local. A 127.0.0.3",
				seedInst + `._ota._tcp.local. TXT ""`,
			},
			packets: 2,
		},
		{
			name: "SRV and A asked together: A is an answer, not repeated as additional",
			q:    query(q("ots-sim-01.local.", dns.TypeA), q(seedInst+"._ota._tcp.local.", dns.TypeSRV)),
			ans: []string{
				"ots-sim-01.local. A 127.0.0.2",
				seedInst + "._ota._tcp.local. SRV 0 0 3232 ots-sim-01.local.",
			},
		},
		{name: "unknown host", q: query(q("ots-sim-99.local.", dns.TypeA))},
		{name: "unknown service type", q: query(q("_printer._tcp.local.", dns.TypePTR))},
		{name: "unknown instance", q: query(q("Nope._ota._tcp.local.", dns.TypeSRV))},
		{name: "instance under the wrong type", q: query(q(arduinoInst+"._ota._tcp.local.", dns.TypeSRV))},
		{name: "IPv4-only host has no AAAA", q: query(q("ots-sim-01.local.", dns.TypeAAAA))},
		{name: "type we do not have on a known name", q: query(q("ots-sim-01.local.", dns.TypeMX))},
		{name: "SRV asked of a host name", q: query(q("ots-sim-01.local.", dns.TypeSRV))},
		{name: "PTR on a type asked as SRV", q: query(q("_ota._tcp.local.", dns.TypeSRV))},
		{name: "class CHAOS", q: query(dns.Question{Name: "ots-sim-01.local.", Qtype: dns.TypeA, Qclass: dns.ClassCHAOS})},
		{name: "no questions", q: query()},
		{name: "root name", q: query(q(".", dns.TypeANY))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			replies := z.respond(tt.q, false)
			if len(tt.ans) == 0 {
				if replies != nil {
					t.Fatalf("want no response, got %v", replies)
				}
				return
			}
			if want := max(tt.packets, 1); len(replies) != want {
				t.Fatalf("got %d messages, want %d", len(replies), want)
			}
			var ans, extra []string
			for i, m := range roundTrip(t, replies) {
				if !m.Response || !m.Authoritative || m.Id != 0 || len(m.Question) != 0 {
					t.Errorf("message %d header: response=%v aa=%v id=%d questions=%d; want true true 0 0",
						i, m.Response, m.Authoritative, m.Id, len(m.Question))
				}
				ans = append(ans, describeAll(m.Answer)...)
				extra = append(extra, describeAll(m.Extra)...)
				// A device answers from its own address (the enumeration
				// names no host: the devices answer in order).
				want := sourceOf(m)
				if tt.name == "service type enumeration" {
					want = netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 2)})
				}
				if from := replies[i].from; from != want {
					t.Errorf("message %d from %v, want %v", i, from, want)
				}
			}
			if !slices.Equal(ans, tt.ans) {
				t.Errorf("answers:\n got %q\nwant %q", ans, tt.ans)
			}
			if !slices.Equal(extra, tt.extra) {
				t.Errorf("additionals:\n got %q\nwant %q", extra, tt.extra)
			}
		})
	}
}

// Unique records carry the cache-flush bit, shared PTRs do not (RFC 6762
// §10.2); every record has the configured TTL.
func TestRespondClassAndTTL(t *testing.T) {
	z := testZone(t)
	var rrs []dns.RR
	for _, m := range roundTrip(t, z.respond(query(q("_arduino._tcp.local.", dns.TypePTR), q("3.0.0.127.in-addr.arpa.", dns.TypePTR)), false)) {
		rrs = append(rrs, m.Answer...)
		rrs = append(rrs, m.Extra...)
	}
	if len(rrs) != 10 {
		t.Errorf("got %d records, want 10", len(rrs))
	}
	for _, rr := range rrs {
		h := rr.Header()
		wantFlush := !(h.Rrtype == dns.TypePTR && strings.HasSuffix(h.Name, ".local."))
		if got := h.Class&classCacheFlush != 0; got != wantFlush {
			t.Errorf("%s: cache-flush %v, want %v", describe(rr), got, wantFlush)
		}
		if h.Class&^classCacheFlush != dns.ClassINET {
			t.Errorf("%s: class %d", describe(rr), h.Class)
		}
		if h.Ttl != 120 {
			t.Errorf("%s: TTL %d, want 120", describe(rr), h.Ttl)
		}
	}
}

func TestRespondLegacy(t *testing.T) {
	z := testZone(t)
	qm := query(q(seedInst+"._ota._tcp.local.", dns.TypeSRV))
	qm.Id = 0x1234
	replies := z.respond(qm, true)
	if len(replies) != 1 {
		t.Fatalf("got %d messages, want 1", len(replies))
	}
	if want := netip.MustParseAddr("127.0.0.2"); replies[0].from != want {
		t.Errorf("from %v, want %v", replies[0].from, want)
	}
	m := roundTrip(t, replies)[0]
	if m.Id != 0x1234 || m.Truncated {
		t.Errorf("ID %#x TC %v, want 0x1234 and no TC", m.Id, m.Truncated)
	}
	if len(m.Question) != 1 || m.Question[0] != qm.Question[0] {
		t.Errorf("question not echoed: %v", m.Question)
	}
	if len(m.Answer) != 1 || len(m.Extra) != 1 {
		t.Fatalf("got %d answers, %d additionals; want 1, 1", len(m.Answer), len(m.Extra))
	}
	for _, rr := range append(m.Answer, m.Extra...) {
		if h := rr.Header(); h.Ttl != 120 || h.Class != dns.ClassINET {
			t.Errorf("%s: TTL %d class %#x; want 120 (not capped, as ESP-IDF), IN without cache-flush", describe(rr), h.Ttl, h.Class)
		}
	}
	// The shared templates must be untouched by the legacy rewrite.
	if again := z.respond(qm, false); again[0].msg.Answer[0].Header().Ttl != 120 {
		t.Error("legacy response modified the stored record")
	}
}

// bigZone registers n hosts with a seed-style pair of services each.
func bigZone(t testing.TB, n int) *zone {
	t.Helper()
	z := newZone(uniformTTLs(120))
	for i := range n {
		name := fmt.Sprintf("ots-sim-%03d", i+1)
		inst := fmt.Sprintf("OTS Firmware Main (%s)", name)
		h := Host{
			Name:  name,
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{127, 0, byte((i + 2) >> 8), byte(i + 2)})},
			Services: []Service{
				{Instance: inst, Type: "_ota._tcp", Port: 3232, TXT: []string{"version=1.2.3", "chip=esp32s3"}},
				{Instance: inst, Type: "_http._tcp", Port: 80},
			},
		}
		if _, err := z.add(h); err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
	}
	return z
}

// A legacy querier gets one conventional reply per device, trimmed to 512
// bytes or its EDNS0 size; TC is set only when answers had to go.
func TestRespondLegacySize(t *testing.T) {
	z := newZone(uniformTTLs(120))
	var big []string
	for _, c := range "abcd" {
		big = append(big, string(c)+"="+strings.Repeat("x", 240))
	}
	h := Host{Name: "fat", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.5")}}
	for i := range 3 {
		h.Services = append(h.Services, Service{Instance: fmt.Sprint("fat ", i), Type: "_ota._tcp", Port: 3232, TXT: big})
	}
	if _, err := z.add(h); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		qtype       uint16
		qname       string
		edns        int
		answers, tc bool
	}{
		{"PTR, 512: additionals dropped, no TC", dns.TypePTR, "_ota._tcp.local.", 0, true, false},
		{"TXT, 512: answer too big, TC", dns.TypeTXT, `fat\ 0._ota._tcp.local.`, 0, false, true},
		{"TXT, EDNS 1232: fits", dns.TypeTXT, `fat\ 0._ota._tcp.local.`, 1232, true, false},
		{"ANY, EDNS 600: some answers, TC", dns.TypeANY, `fat\ 1._ota._tcp.local.`, 600, true, true},
		{"PTR, EDNS 9999: capped at the mDNS limit", dns.TypePTR, "_ota._tcp.local.", 9999, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			qm := query(q(tt.qname, tt.qtype))
			qm.Id = 7
			limit := 512
			if tt.edns > 0 {
				qm.SetEdns0(uint16(tt.edns), false)
				limit = min(tt.edns, maxPayload)
			}
			replies := z.respond(qm, true)
			if len(replies) != 1 {
				t.Fatalf("got %d messages, want 1", len(replies))
			}
			b, err := replies[0].msg.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > limit {
				t.Errorf("packed %d bytes, limit %d", len(b), limit)
			}
			m := roundTrip(t, replies)[0]
			if m.Truncated != tt.tc || (len(m.Answer) > 0) != tt.answers {
				t.Errorf("TC=%v answers=%d; want TC=%v answers=%v", m.Truncated, len(m.Answer), tt.tc, tt.answers)
			}
			if opt := m.IsEdns0(); (opt != nil) != (tt.edns > 0) {
				t.Errorf("OPT present=%v, query had EDNS0=%v", opt != nil, tt.edns > 0)
			}
		})
	}
}

// Each of 250 devices answers a browse in its own packet, with its SRV, TXT
// and address alongside, from its own address.
func TestRespondBrowse250(t *testing.T) {
	z := bigZone(t, 250)
	replies := z.respond(query(q("_ota._tcp.local.", dns.TypePTR)), false)
	if len(replies) != 250 {
		t.Fatalf("got %d messages, want 250", len(replies))
	}
	for i, m := range roundTrip(t, replies) {
		host := fmt.Sprintf("ots-sim-%03d", i+1)
		inst := `OTS\ Firmware\ Main\ \(` + host + `\)._ota._tcp.local.`
		want := []string{"_ota._tcp.local. PTR " + inst}
		wantExtra := []string{
			inst + " SRV 0 0 3232 " + host + ".local.",
			inst + ` TXT "version=1.2.3" "chip=esp32s3"`,
			host + ".local. A " + replies[i].from.String(),
		}
		if got := describeAll(m.Answer); !slices.Equal(got, want) {
			t.Errorf("message %d answers %q, want %q", i, got, want)
		}
		if got := describeAll(m.Extra); !slices.Equal(got, wantExtra) {
			t.Errorf("message %d additionals %q, want %q", i, got, wantExtra)
		}
	}
}

// split on its own: many groups over several packets, none over the
// limit, every answer once with its additionals in the same packet.
func TestSplit(t *testing.T) {
	z := bigZone(t, 250)
	gs := z.answers(query(q("_ota._tcp.local.", dns.TypePTR)))
	for _, limit := range []int{maxPayload, 1500, 600} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			msgs := split(gs, limit, nil)
			seen := make(map[string]bool)
			for i, m := range msgs {
				b, err := m.Pack()
				if err != nil {
					t.Fatal(err)
				}
				if len(b) > limit {
					t.Errorf("message %d: %d bytes > %d", i, len(b), limit)
				}
				extra := make(map[string]bool)
				for _, rr := range m.Extra {
					extra[describe(rr)] = true
				}
				for _, rr := range m.Answer {
					p := rr.(*dns.PTR)
					if seen[p.Ptr] {
						t.Errorf("%s answered twice", p.Ptr)
					}
					seen[p.Ptr] = true
					host := strings.TrimSuffix(strings.TrimPrefix(p.Ptr, `OTS\ Firmware\ Main\ \(`), `\)._ota._tcp.local.`)
					if want := p.Ptr + " SRV 0 0 3232 " + host + ".local."; !extra[want] {
						t.Errorf("message %d: %q lacks additional %q", i, p.Ptr, want)
					}
				}
			}
			if len(seen) != 250 {
				t.Errorf("%d distinct instances, want 250", len(seen))
			}
			t.Logf("limit %d: 250 instances in %d packets", limit, len(msgs))
		})
	}
	// Shared additionals are not repeated within a packet: two services of
	// one host need its A record once.
	gs = z.answers(query(q(`OTS\ Firmware\ Main\ \(ots-sim-001\)._ota._tcp.local.`, dns.TypeSRV),
		q(`OTS\ Firmware\ Main\ \(ots-sim-001\)._http._tcp.local.`, dns.TypeSRV)))
	msgs := split(gs, maxPayload, nil)
	if len(msgs) != 1 || len(msgs[0].Answer) != 2 || len(msgs[0].Extra) != 1 {
		t.Errorf("got %d messages, first with %d answers and %d additionals; want 1, 2, 1",
			len(msgs), len(msgs[0].Answer), len(msgs[0].Extra))
	}
}

func TestKnownAnswerSuppression(t *testing.T) {
	z := testZone(t)
	known := func(ttl uint32) *dns.Msg {
		m := query(q("_arduino._tcp.local.", dns.TypePTR))
		m.Answer = []dns.RR{&dns.PTR{
			Hdr: dns.RR_Header{Name: "_ARDUINO._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl},
			Ptr: "OTS Firmware Main Controller (ots-sim-02)._arduino._tcp.local.",
		}}
		return m
	}
	msgs := roundTrip(t, z.respond(known(100), false))
	if len(msgs) != 1 {
		t.Fatalf("known answer with TTL 100: %d messages, want 1", len(msgs))
	}
	if got, want := describeAll(msgs[0].Answer), []string{"_arduino._tcp.local. PTR " + arduinoInst + "._arduino._tcp.local."}; !slices.Equal(got, want) {
		t.Errorf("known answer with TTL 100: got %q, want %q", got, want)
	}
	// Below half the true TTL the querier is about to lose it: answer anyway.
	if msgs := z.respond(known(59), false); len(msgs) != 2 {
		t.Errorf("known answer with TTL 59 suppressed")
	}
	// All known: nothing to say.
	all := known(120)
	all.Answer = append(all.Answer, &dns.PTR{
		Hdr: dns.RR_Header{Name: "_arduino._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 120},
		Ptr: arduinoInst + "._arduino._tcp.local.",
	})
	if msgs := z.respond(all, false); msgs != nil {
		t.Errorf("every answer known, got %d messages", len(msgs))
	}
}

func TestAddValidation(t *testing.T) {
	good := func() Host { return seedHost() }
	tests := []struct {
		name   string
		mutate func(*Host)
		want   string // substring of the error
	}{
		{"empty name", func(h *Host) { h.Name = "" }, "empty host name"},
		{"dot in name", func(h *Host) { h.Name = "a.b" }, "only letters"},
		{"space in name", func(h *Host) { h.Name = "a b" }, "only letters"},
		{"leading hyphen", func(h *Host) { h.Name = "-a" }, "start or end"},
		{"long name", func(h *Host) { h.Name = strings.Repeat("a", 64) }, "longer than 63"},
		{"no addresses", func(h *Host) { h.Addrs = nil }, "no addresses"},
		{"invalid address", func(h *Host) { h.Addrs = []netip.Addr{{}} }, "invalid address"},
		{"bad type", func(h *Host) { h.Services[0].Type = "ota._tcp" }, "service type"},
		{"bad protocol", func(h *Host) { h.Services[0].Type = "_ota._sctp" }, "protocol"},
		{"long type", func(h *Host) { h.Services[0].Type = "_abcdefghijklmnop._tcp" }, "1 to 15"},
		{"empty instance", func(h *Host) { h.Services[0].Instance = "" }, "empty instance"},
		{"control char", func(h *Host) { h.Services[0].Instance = "a\nb" }, "control character"},
		{"long instance", func(h *Host) { h.Services[0].Instance = strings.Repeat("x", 64) }, "longer than 63"},
		{"bad UTF-8", func(h *Host) { h.Services[0].Instance = "a\xffb" }, "UTF-8"},
		{"port 0", func(h *Host) { h.Services[0].Port = 0 }, "port 0"},
		{"empty TXT item", func(h *Host) { h.Services[0].TXT = []string{"a=b", ""} }, "empty TXT"},
		{"TXT without key", func(h *Host) { h.Services[0].TXT = []string{"=b"} }, "empty key"},
		{"TXT item too long", func(h *Host) { h.Services[0].TXT = []string{strings.Repeat("k", 256)} }, "longer than 255"},
		{"TXT too big", func(h *Host) {
			h.Services[0].TXT = []string{strings.Repeat("a", 250), strings.Repeat("b", 250), strings.Repeat("c", 250),
				strings.Repeat("d", 250), strings.Repeat("e", 250), strings.Repeat("f", 250)}
		}, "more than 1300"},
		{"same instance twice", func(h *Host) { h.Services[1].Type = "_ota._tcp" }, "listed twice"},
		{"too many addresses", func(h *Host) {
			for i := range 17 {
				h.Addrs = append(h.Addrs, netip.AddrFrom4([4]byte{127, 1, 0, byte(i)}))
			}
		}, "at most 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := good()
			h.Services = slices.Clone(h.Services)
			tt.mutate(&h)
			_, err := newZone(uniformTTLs(120)).add(h)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestAddAccepts(t *testing.T) {
	z := newZone(uniformTTLs(120))
	h := Host{
		Name:  "Ots-Sim-7.local.", // suffix tolerated, case kept
		Addrs: []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.9")},
		Services: []Service{
			{Instance: "Dots. and \\ back \"quote\" ünïcode", Type: "_ota._tcp.local.", Port: 1, TXT: []string{`path=\x`, "flag"}},
		},
	}
	if _, err := z.add(h); err != nil {
		t.Fatal(err)
	}
	m := roundTrip(t, z.respond(query(q("_ota._tcp.local.", dns.TypePTR)), false))[0]
	p := m.Answer[0].(*dns.PTR)
	inst, err := instanceLabel(p.Ptr)
	if err != nil {
		t.Fatal(err)
	}
	if inst != h.Services[0].Instance {
		t.Errorf("instance on the wire %q, want %q", inst, h.Services[0].Instance)
	}
	var txt *dns.TXT
	var a *dns.A
	for _, rr := range m.Extra {
		switch rr := rr.(type) {
		case *dns.TXT:
			txt = rr
		case *dns.A:
			a = rr
		}
	}
	if txt == nil || !slices.Equal(txt.Txt, []string{`path=\\x`, "flag"}) {
		t.Errorf("TXT %v, want path=\\\\x (escaped backslash) and flag", txt)
	}
	if a == nil || a.Hdr.Name != "Ots-Sim-7.local." || a.A.String() != "127.0.0.9" {
		t.Errorf("A record %v, want Ots-Sim-7.local. 127.0.0.9 (unmapped)", a)
	}
	// The same instance name under another type is a different instance.
	if _, err := z.add(Host{Name: "other", Addrs: h.Addrs, Services: []Service{{Instance: h.Services[0].Instance, Type: "_http._tcp", Port: 80}}}); err != nil {
		t.Errorf("same instance name, other type: %v", err)
	}
}

// instanceLabel decodes the first label of a presentation-format name.
func instanceLabel(name string) (string, error) {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(name, buf, 0, nil, false)
	if err != nil {
		return "", err
	}
	if n < 1 || int(buf[0])+1 > n {
		return "", fmt.Errorf("bad name %q", name)
	}
	return string(buf[1 : 1+buf[0]]), nil
}

func TestAddDuplicatesAndRemove(t *testing.T) {
	z := testZone(t)
	dupHost := seedHost()
	dupHost.Name = "OTS-SIM-01"
	dupHost.Services = nil
	if _, err := z.add(dupHost); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Errorf("duplicate host name (other case): %v", err)
	}
	dupInst := otsHost()
	dupInst.Name = "ots-sim-09"
	dupInst.Services[0].Instance = "ots firmware main controller (OTS-SIM-02)"
	if _, err := z.add(dupInst); err == nil || !strings.Contains(err.Error(), "already registered by host ots-sim-02") {
		t.Errorf("duplicate instance name: %v", err)
	}
	// A failed add leaves nothing behind.
	if z.lookup("ots-sim-09") != nil {
		t.Error("failed add registered the host")
	}

	e, gone := z.remove("ots-sim-01")
	if e == nil {
		t.Fatal("remove of a registered host returned nil")
	}
	// ots-sim-01 was the only _ota._tcp device; _http._tcp lives on.
	if got := describeAll(gone); !slices.Equal(got, []string{"_services._dns-sd._udp.local. PTR _ota._tcp.local."}) {
		t.Errorf("enumeration records gone: %q", got)
	}
	for _, qq := range []dns.Question{
		q("ots-sim-01.local.", dns.TypeA),
		q("_ota._tcp.local.", dns.TypePTR),
		q(seedInst+"._http._tcp.local.", dns.TypeSRV),
		q("2.0.0.127.in-addr.arpa.", dns.TypePTR),
	} {
		if msgs := z.respond(query(qq), false); msgs != nil {
			t.Errorf("%s %s still answered after remove", qq.Name, dns.TypeToString[qq.Qtype])
		}
	}
	m := roundTrip(t, z.respond(query(q("_http._tcp.local.", dns.TypePTR)), false))[0]
	if got := describeAll(m.Answer); !slices.Equal(got, []string{"_http._tcp.local. PTR " + otsInst + "._http._tcp.local."}) {
		t.Errorf("_http._tcp after remove: %q", got)
	}
	if e, _ := z.remove("ots-sim-01"); e != nil {
		t.Error("second remove found the host again")
	}
	// A rebooting device comes back under the same names.
	if _, err := z.add(seedHost()); err != nil {
		t.Errorf("re-add after remove: %v", err)
	}
}

func TestGoodbyeRecords(t *testing.T) {
	z := testZone(t)
	e := z.lookup("ots-sim-03")
	msgs := roundTrip(t, asReplies(split(z.records(e, true), maxPayload, goodbyeForm)))
	var got []string
	for _, m := range msgs {
		for _, rr := range m.Answer {
			if rr.Header().Ttl != 0 {
				t.Errorf("%s: TTL %d, want 0", describe(rr), rr.Header().Ttl)
			}
			got = append(got, describe(rr))
		}
	}
	want := []string{
		"_arduino._tcp.local. PTR " + arduinoInst + "._arduino._tcp.local.",
		arduinoInst + "._arduino._tcp.local. SRV 0 0 3232 ots-sim-03.local.",
		arduinoInst + `._arduino._tcp.local. TXT "board=esp32s3" "tcp_check=no" "ssh_upload=no" "auth_upload=yes"`,
		"ots-sim-03.local. A 127.0.0.4",
		"ots-sim-03.local. AAAA ::1",
		"4.0.0.127.in-addr.arpa. PTR ots-sim-03.local.",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa. PTR ots-sim-03.local.",
		"_services._dns-sd._udp.local. PTR _arduino._tcp.local.",
	}
	if !slices.Equal(got, want) {
		t.Errorf("goodbye records:\n got %q\nwant %q", got, want)
	}
	if e.svcs[0].srv.Header().Ttl != 120 {
		t.Error("goodbye modified the stored record")
	}
}
