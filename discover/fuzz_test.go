package discover

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func offlineSession() *session {
	return &session{
		cache:    newCache(),
		services: map[string]string{"_ota._tcp.local.": "_ota._tcp", "_arduino._tcp.local.": "_arduino._tcp"},
		ifNames:  map[int]string{1: "lo"},
		devices:  map[string]Device{},
		live:     map[string]bool{},
		asked:    map[nameType]*ask{},
	}
}

func seedPacket(f *testing.F, ttl uint32, txt ...string) {
	m := new(dns.Msg)
	m.Response = true
	inst := `OTS\ Firmware\ Main._ota._tcp.local.`
	m.Answer = []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: "_ota._tcp.local.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl}, Ptr: inst}}
	m.Extra = []dns.RR{
		&dns.SRV{Hdr: dns.RR_Header{Name: inst, Rrtype: dns.TypeSRV, Class: dns.ClassINET | classCacheFlush, Ttl: ttl}, Port: 3232, Target: "ots-fw-main.local."},
		&dns.TXT{Hdr: dns.RR_Header{Name: inst, Rrtype: dns.TypeTXT, Class: dns.ClassINET | classCacheFlush, Ttl: ttl}, Txt: txt},
		&dns.A{Hdr: dns.RR_Header{Name: "ots-fw-main.local.", Rrtype: dns.TypeA, Class: dns.ClassINET | classCacheFlush, Ttl: ttl}, A: net.IPv4(127, 0, 0, 2)},
		&dns.AAAA{Hdr: dns.RR_Header{Name: "ots-fw-main.local.", Rrtype: dns.TypeAAAA, Class: dns.ClassINET | classCacheFlush, Ttl: ttl}, AAAA: net.ParseIP("fe80::1")},
	}
	b, err := m.Pack()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
}

// FuzzAbsorb feeds arbitrary responses to the record cache and the device
// assembly: no panic, and every device it reports is complete.
func FuzzAbsorb(f *testing.F) {
	seedPacket(f, 120, "version=1.0.0", "board=esp32s3")
	seedPacket(f, 0)
	seedPacket(f, 4500, "")
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		s := offlineSession()
		now := time.Unix(1_700_000_000, 0)
		for i := range 3 {
			s.absorb(packet{msg: m, ifi: &net.Interface{Index: 1, Name: "lo"}, src: netip.MustParseAddrPort("192.168.1.41:5353"), when: now})
			s.update(now, func(e Event) {
				d := e.Device
				if e.Kind != Removed && (len(d.Addrs) == 0 || d.Host == "" || d.Service == "") {
					t.Fatalf("incomplete device reported: %+v", d)
				}
			})
			s.resolveQuestions(now)
			s.cache.refreshes(now, s.interested)
			s.cache.sweep(now)
			now = now.Add(time.Duration(i+1) * 61 * time.Second)
		}
	})
}
