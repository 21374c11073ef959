package discover

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestQueryMessagesSplitKnownAnswers(t *testing.T) {
	qs := []dns.Question{{Name: "_ota._tcp.local.", Qtype: dns.TypePTR, Qclass: dns.ClassINET}}
	var known []dns.RR
	for i := range 250 {
		known = append(known, &dns.PTR{Hdr: dns.RR_Header{Name: "_ota._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 4000},
			Ptr: fmt.Sprintf(`OTS\ Firmware\ Main-%d._ota._tcp.local.`, i)})
	}
	msgs := queryMessages(qs, known, 1472)
	if len(msgs) < 2 {
		t.Fatalf("%d messages for 250 known answers", len(msgs))
	}
	total := 0
	for i, m := range msgs {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 1472 {
			t.Errorf("message %d is %d bytes", i, len(b))
		}
		if last := i == len(msgs)-1; m.Truncated == last {
			t.Errorf("message %d: TC %v", i, m.Truncated)
		}
		if (i == 0) != (len(m.Question) == 1) {
			t.Errorf("message %d has %d questions", i, len(m.Question))
		}
		total += len(m.Answer)
	}
	if total != 250 {
		t.Errorf("%d known answers sent, want 250", total)
	}
	// On loopback (MTU 65536) all of them fit one 9000-byte query.
	if m := queryMessages(qs, known, maxQueryFor(&net.Interface{MTU: 65536}, false)); len(m) != 1 {
		t.Errorf("%d messages at 9000 bytes", len(m))
	}
	if m := queryMessages(qs, nil, 1472); len(m) != 1 || m[0].Truncated || len(m[0].Answer) != 0 {
		t.Errorf("no known answers: %+v", m)
	}
}

// TestAssembleLinkLocalZone: an AAAA fe80:: address gets the zone of the
// interface it was heard on; IPv4 sorts first.
func TestAssembleLinkLocalZone(t *testing.T) {
	s := offlineSession()
	s.ifNames[7] = "wlan0"
	inst := `Kitchen._ota._tcp.local.`
	m := new(dns.Msg)
	m.Response = true
	h := func(n string, t uint16, ttl uint32) dns.RR_Header {
		return dns.RR_Header{Name: n, Rrtype: t, Class: dns.ClassINET | classCacheFlush, Ttl: ttl}
	}
	m.Answer = []dns.RR{
		&dns.PTR{Hdr: dns.RR_Header{Name: "_ota._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 4500}, Ptr: inst},
		&dns.SRV{Hdr: h(inst, dns.TypeSRV, 120), Port: 3232, Target: "kitchen.local."},
		&dns.AAAA{Hdr: h("kitchen.local.", dns.TypeAAAA, 120), AAAA: net.ParseIP("fe80::1234")},
		&dns.A{Hdr: h("kitchen.local.", dns.TypeA, 120), A: net.IPv4(192, 168, 1, 41)},
		&dns.TXT{Hdr: h(inst, dns.TypeTXT, 4500), Txt: []string{""}},
	}
	now := time.Now()
	s.absorb(packet{msg: m, ifi: &net.Interface{Index: 7, Name: "wlan0"}, src: netip.MustParseAddrPort("192.168.1.41:5353"), when: now})
	var got []Event
	s.update(now, func(e Event) { got = append(got, e) })
	if len(got) != 1 || got[0].Kind != Added {
		t.Fatalf("events %+v", got)
	}
	d := got[0].Device
	if len(d.Addrs) != 2 || d.Addrs[0].String() != "192.168.1.41" || d.Addrs[1].String() != "fe80::1234%wlan0" || d.TXT != nil || d.Interfaces[0] != "wlan0" {
		t.Errorf("device %+v", d)
	}
	// SRV expiry removes it, though PTR and TXT live on (ESP-IDF: 4500 s).
	later := now.Add(121 * time.Second)
	s.cache.sweep(later)
	got = nil
	s.update(later, func(e Event) { got = append(got, e) })
	if len(got) != 1 || got[0].Kind != Removed || got[0].Reason != "expired" {
		t.Fatalf("after SRV expiry: %+v", got)
	}
}

// TestSharedHostName: two devices that claim one host name (a conflict no
// responder resolved) stay two devices, each with the address it announced
// itself; a response not from port 5353 is no mDNS answer (RFC 6762 §6).
// Review 68 #3 and #13.
func TestSharedHostName(t *testing.T) {
	s := offlineSession()
	h := func(n string, t uint16, ttl uint32) dns.RR_Header {
		return dns.RR_Header{Name: n, Rrtype: t, Class: dns.ClassINET | classCacheFlush, Ttl: ttl}
	}
	announce := func(svc, ip string, port uint16) *dns.Msg {
		inst := "ots-sim-01." + svc + ".local."
		m := new(dns.Msg)
		m.Response = true
		m.Answer = []dns.RR{
			&dns.PTR{Hdr: dns.RR_Header{Name: svc + ".local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 4500}, Ptr: inst},
			&dns.SRV{Hdr: h(inst, dns.TypeSRV, 120), Port: port, Target: "ots-sim-01.local."},
			&dns.A{Hdr: h("ots-sim-01.local.", dns.TypeA, 120), A: net.ParseIP(ip)},
		}
		return m
	}
	now := time.Now()
	lo := &net.Interface{Index: 1, Name: "lo"}
	s.absorb(packet{msg: announce("_ota._tcp", "127.0.0.2", 3232), ifi: lo, src: netip.MustParseAddrPort("127.0.0.2:5353"), when: now})
	s.absorb(packet{msg: announce("_arduino._tcp", "127.0.0.30", 3232), ifi: lo, src: netip.MustParseAddrPort("127.0.0.30:5353"), when: now})
	s.absorb(packet{msg: announce("_arduino._tcp", "127.0.0.99", 3232), ifi: lo, src: netip.MustParseAddrPort("127.0.0.99:40000"), when: now})
	var got []string
	s.update(now, func(e Event) { got = append(got, e.Device.Service+"="+fmt.Sprint(e.Device.Addrs)) })
	slices.Sort(got)
	if want := []string{"_arduino._tcp=[127.0.0.30]", "_ota._tcp=[127.0.0.2]"}; !slices.Equal(got, want) {
		t.Errorf("devices %q, want %q", got, want)
	}
	var ds []Device
	for _, d := range s.devices {
		ds = append(ds, d)
	}
	if ts := Merge(ds, nil); len(ts) != 2 {
		t.Errorf("Merge made %d targets of two devices sharing a host name: %+v", len(ts), ts)
	}
}
