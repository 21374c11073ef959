package discover

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"

	"github.com/ots-ota/ots-ota/sim"
)

// splitResponder is a test responder for one device that sends every record
// in a packet of its own, the way a responder short of buffer space (or a
// sequence of later answers) does. With lazy set it answers a PTR query
// with the PTR alone, so the browser must ask for SRV, TXT and A itself.
type splitResponder struct {
	t        testing.TB
	pc       *ipv4.PacketConn
	conn     net.PacketConn
	service  string // "_ota._tcp.local."
	instance string // "Split Device._ota._tcp.local."
	host     string // "split-dev.local."
	addr     netip.Addr
	port     uint16

	mu      sync.Mutex
	ttl     uint32
	txt     []string
	lazy    bool
	silent  bool           // answer nothing (a device that vanished)
	gap     time.Duration  // between the packets of one answer
	queries map[uint16]int // questions received about our names, by type
	asked   []dns.Question // all of them, in order
	times   []time.Duration
	done    chan struct{}
	start   time.Time
}

func newSplitResponder(t testing.TB, ifi *net.Interface, instance, host string, addr netip.Addr) *splitResponder {
	t.Helper()
	return newResponderFor(t, ifi, "_ota._tcp", instance, host, addr)
}

// newResponderFor advertises a service type of the test's own, which no
// other test on the shared loopback interface answers for.
func newResponderFor(t testing.TB, ifi *net.Interface, service, instance, host string, addr netip.Addr) *splitResponder {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "224.0.0.251:5353")
	if err != nil {
		t.Fatal(err)
	}
	pc := ipv4.NewPacketConn(conn)
	if err := pc.JoinGroup(ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251)}); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetMulticastInterface(ifi)
	_ = pc.SetMulticastLoopback(true)
	_ = pc.SetMulticastTTL(255)
	r := &splitResponder{t: t, pc: pc, conn: conn, service: service + ".local.", instance: instance + "." + service + ".local.", host: host + ".local.",
		addr: addr, port: 3232, ttl: 120, gap: 30 * time.Millisecond, txt: []string{"version=1.0.0"},
		queries: map[uint16]int{}, done: make(chan struct{}), start: time.Now()}
	go r.serve()
	t.Cleanup(func() { conn.Close(); <-r.done })
	return r
}

func (r *splitResponder) set(f func(r *splitResponder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *splitResponder) count(qtype uint16) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queries[qtype]
}

func (r *splitResponder) records() (ptr, srv, txt, a dns.RR) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := func(name string, t uint16, flush bool) dns.RR_Header {
		cls := uint16(dns.ClassINET)
		if flush {
			cls |= classCacheFlush
		}
		return dns.RR_Header{Name: name, Rrtype: t, Class: cls, Ttl: r.ttl}
	}
	ptr = &dns.PTR{Hdr: h(r.service, dns.TypePTR, false), Ptr: r.instance}
	srv = &dns.SRV{Hdr: h(r.instance, dns.TypeSRV, true), Port: r.port, Target: r.host}
	txt = &dns.TXT{Hdr: h(r.instance, dns.TypeTXT, true), Txt: append([]string(nil), r.txt...)}
	a = &dns.A{Hdr: h(r.host, dns.TypeA, true), A: r.addr.AsSlice()}
	return
}

// send multicasts each record in its own response packet.
func (r *splitResponder) send(rrs ...dns.RR) {
	for i, rr := range rrs {
		if i > 0 {
			time.Sleep(r.gap)
		}
		m := new(dns.Msg)
		m.Response, m.Authoritative = true, true
		m.Answer = []dns.RR{rr}
		b, err := m.Pack()
		if err != nil {
			r.t.Error(err)
			return
		}
		_, _ = r.pc.WriteTo(b, nil, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
	}
}

// announce sends all four records unsolicited, one packet each.
func (r *splitResponder) announce() {
	ptr, srv, txt, a := r.records()
	r.send(ptr, srv, txt, a)
}

// goodbye withdraws everything (TTL 0), one packet each.
func (r *splitResponder) goodbye() {
	ptr, srv, txt, a := r.records()
	for _, rr := range []dns.RR{ptr, srv, txt, a} {
		rr.Header().Ttl = 0
	}
	r.send(ptr, srv, txt, a)
}

func (r *splitResponder) serve() {
	defer close(r.done)
	buf := make([]byte, 9000)
	for {
		n, _, _, err := r.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var q dns.Msg
		if q.Unpack(buf[:n]) != nil || q.Response {
			continue
		}
		ptr, srv, txt, a := r.records()
		var out []dns.RR
		r.mu.Lock()
		lazy, silent := r.lazy, r.silent
		for _, qu := range q.Question {
			name := strings.ToLower(qu.Name)
			var rr dns.RR
			switch {
			case name == r.service && qu.Qtype == dns.TypePTR:
				if knows(&q, r.instance) {
					continue // known-answer suppression
				}
				rr = ptr
			case name == strings.ToLower(r.instance) && qu.Qtype == dns.TypeSRV:
				rr = srv
			case name == strings.ToLower(r.instance) && qu.Qtype == dns.TypeTXT:
				rr = txt
			case name == r.host && qu.Qtype == dns.TypeA:
				rr = a
			default:
				continue
			}
			r.queries[qu.Qtype]++
			r.asked = append(r.asked, qu)
			r.times = append(r.times, time.Since(r.start))
			out = append(out, rr)
			if rr == ptr && !lazy {
				out = append(out, srv, txt, a)
			}
		}
		r.mu.Unlock()
		if !silent && len(out) > 0 {
			go r.send(out...)
		}
	}
}

func knows(q *dns.Msg, instance string) bool {
	for _, rr := range q.Answer {
		if p, ok := rr.(*dns.PTR); ok && strings.EqualFold(p.Ptr, instance) && p.Hdr.Ttl > 60 {
			return true
		}
	}
	return false
}

func TestSplitRecords(t *testing.T) {
	ifi := mdnsLoopback(t)
	for _, lazy := range []bool{false, true} {
		name := "separate packets"
		if lazy {
			name = "PTR only, the rest on request"
		}
		t.Run(name, func(t *testing.T) {
			inst := "Split Dev " + map[bool]string{false: "A", true: "B"}[lazy]
			r := newResponderFor(t, ifi, "_split._tcp", strings.ReplaceAll(inst, " ", `\ `), "split-"+map[bool]string{false: "a", true: "b"}[lazy], netip.MustParseAddr("127.43.4.2"))
			r.set(func(r *splitResponder) { r.lazy = lazy; r.txt = []string{"version=2.0.0", "project=split"} })
			ds, err := Browse(context.Background(), loCfg(ifi, "_split._tcp"), BrowseOptions{Timeout: 3 * time.Second, Count: 1})
			if err != nil {
				t.Fatal(err)
			}
			var got *Device
			for i := range ds {
				if ds[i].Instance == inst {
					got = &ds[i]
				}
			}
			if got == nil {
				t.Fatalf("not found; found %+v (queries %v)", ds, r.queries)
			}
			if got.Port != 3232 || got.Addr().String() != "127.43.4.2" || got.TXT["version"] != "2.0.0" || got.Host != r.host[:len(r.host)-1] {
				t.Errorf("device %+v", got)
			}
			if lazy && (r.count(dns.TypeSRV) == 0 || r.count(dns.TypeA) == 0) {
				t.Errorf("browser did not ask for SRV and A: %v", r.queries)
			}
		})
	}
}

// TestBrowseCount: with Count, Browse returns once that many answered, long
// before its timeout. A service type of its own keeps other tests out.
func TestBrowseCount(t *testing.T) {
	ifi := mdnsLoopback(t)
	for i, a := range []string{"127.43.9.2", "127.43.9.3"} {
		r := newResponderFor(t, ifi, "_cnt._tcp", fmt.Sprintf("Count%d", i), fmt.Sprintf("count%d", i), netip.MustParseAddr(a))
		r.set(func(r *splitResponder) { r.gap = 0 })
	}
	start := time.Now()
	ds, err := Browse(context.Background(), loCfg(ifi, "_cnt._tcp"), BrowseOptions{Timeout: 10 * time.Second, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Instance != "Count0" || ds[1].TXT["version"] != "1.0.0" {
		t.Fatalf("found %+v", ds)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Count 2 returned after %v", d)
	}
}

// TestBrowseCountCaps: a fleet answers in one burst; Count still returns that
// many devices, not the whole burst (issue 15: --count 5 printed 20). The
// devices come in the order people count: cap-2 before cap-10.
func TestBrowseCountCaps(t *testing.T) {
	ifi := mdnsLoopback(t)
	startFleet(t, ifi, 20, "127.43.15.2", "cap", func(i int, c *sim.Config) { c.Instance = fmt.Sprintf("cap-%d", i+1) })
	// Once all are announced, they answer a query together.
	all, err := Browse(context.Background(), loCfg(ifi), BrowseOptions{Timeout: 10 * time.Second,
		Until: func(ds []Device) bool { return len(ours(ds, "cap-")) == 20 }})
	if err != nil {
		t.Fatal(err)
	}
	var names, want []string
	for i, d := range ours(all, "cap-") {
		names = append(names, d.Instance)
		want = append(want, fmt.Sprintf("cap-%d", i+1))
	}
	if !slices.Equal(names, want) {
		t.Errorf("order %q, want %q", names, want)
	}
	ds, err := Browse(context.Background(), loCfg(ifi), BrowseOptions{Timeout: 10 * time.Second, Count: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 5 {
		t.Fatalf("Count 5 found %d devices", len(ds))
	}
	// The first five by name, whichever answered first in the burst.
	if ds = ours(ds, "cap-"); len(ds) == 5 && ds[4].Instance != "cap-5" {
		t.Errorf("Count 5 ended with %q, want cap-5", ds[4].Instance)
	}
}
