//go:build linux

package mdnsd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// multicastLoopback returns the loopback interface when the real multicast
// tests may run: only when asked (OTS_OTA_MDNS_TESTS=1, set inside a private
// network namespace) and when loopback can carry multicast.
func multicastLoopback(t *testing.T) *net.Interface {
	t.Helper()
	if os.Getenv("OTS_OTA_MDNS_TESTS") != "1" {
		t.Skip("multicast test: set OTS_OTA_MDNS_TESTS=1 and run inside `unshare -n` (see package tests)")
	}
	lo, err := LoopbackInterface()
	if err != nil {
		t.Skipf("multicast test: %v", err)
	}
	return lo
}

// packet is one received mDNS message.
type packet struct {
	msg  *dns.Msg
	from netip.AddrPort
}

// groupListener joins 224.0.0.251:5353 on lo, like a browser, and forwards
// every response it sees.
func groupListener(t *testing.T, lo *net.Interface) (*net.UDPConn, <-chan packet) {
	t.Helper()
	return groupListenerOf(t, lo, false)
}

// groupListenerOf is groupListener; queries too forwards queries (probes).
func groupListenerOf(t *testing.T, lo *net.Interface, queries bool) (*net.UDPConn, <-chan packet) {
	t.Helper()
	c, err := net.ListenMulticastUDP("udp4", lo, net.UDPAddrFromAddrPort(mdnsGroup()))
	if err != nil {
		t.Fatalf("listen on group: %v", err)
	}
	p := ipv4.NewPacketConn(c)
	if err := p.SetMulticastInterface(lo); err != nil {
		t.Fatal(err)
	}
	if err := p.SetMulticastLoopback(true); err != nil {
		t.Fatal(err)
	}
	ch := make(chan packet, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		readLoop(c, ch, queries)
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c, ch
}

// readLoop forwards responses (and queries, when asked) read from c until
// c is closed.
func readLoop(c *net.UDPConn, ch chan<- packet, queries bool) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		var m dns.Msg
		if m.Unpack(buf[:n]) != nil || (!m.Response && !queries) {
			continue
		}
		select {
		case ch <- packet{msg: &m, from: from}:
		default: // a slow test must not wedge the reader
		}
	}
}

// waitFor returns the first message satisfying ok, failing after timeout.
func waitFor(t *testing.T, ch <-chan packet, timeout time.Duration, what string, ok func(*dns.Msg) bool) *dns.Msg {
	t.Helper()
	return waitForPacket(t, ch, timeout, what, ok).msg
}

func waitForPacket(t *testing.T, ch <-chan packet, timeout time.Duration, what string, ok func(*dns.Msg) bool) packet {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case p := <-ch:
			if ok(p.msg) {
				return p
			}
		case <-deadline:
			t.Fatalf("no %s within %v", what, timeout)
			return packet{}
		}
	}
}

func drain(ch <-chan packet, quiet time.Duration) {
	for {
		select {
		case <-ch:
		case <-time.After(quiet):
			return
		}
	}
}

func has(rrs []dns.RR, want string) bool {
	return slices.Contains(describeAll(rrs), want)
}

func send(t *testing.T, c *net.UDPConn, m *dns.Msg, to netip.AddrPort) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(pack(t, m), to); err != nil {
		t.Fatalf("send query: %v", err)
	}
}

// readReply reads one DNS response from c.
func readReply(t *testing.T, c *net.UDPConn, timeout time.Duration) (*dns.Msg, netip.AddrPort) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("read reply: %v", err)
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatalf("unpack reply: %v", err)
		}
		if m.Response {
			return &m, from
		}
	}
}

func startResponder(t *testing.T, lo *net.Interface) (*Responder, func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := New(Config{Interface: lo, Logger: log})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx) }()
	// Idempotent: a test may stop early and still defer stop.
	stop := sync.OnceFunc(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return r, stop
}

func TestMulticastLoopback(t *testing.T) {
	lo := multicastLoopback(t)
	mc, ch := groupListener(t, lo)
	r, stop := startResponder(t, lo)
	defer stop()

	for _, h := range []Host{seedHost(), otsHost(), arduinoHost()} {
		if err := r.Add(h); err != nil {
			t.Fatalf("Add %s: %v", h.Name, err)
		}
	}
	if err := r.Add(seedHost()); err == nil {
		t.Error("second Add of the same host succeeded")
	}

	// Announcements (after probing): unsolicited responses per host, about
	// 1 s apart.
	announced := func(m *dns.Msg) bool {
		return has(m.Answer, "ots-sim-01.local. A 127.0.0.2") && has(m.Answer, "_ota._tcp.local. PTR "+seedInst+"._ota._tcp.local.")
	}
	waitFor(t, ch, 2*time.Second, "first announcement", announced)
	t0 := time.Now()
	waitFor(t, ch, 3*time.Second, "second announcement", announced)
	if gap := time.Since(t0); gap < 500*time.Millisecond {
		t.Errorf("second announcement after %v, want about 1 s", gap)
	}
	drain(ch, 300*time.Millisecond)

	mdnsTo := mdnsGroup()

	t.Run("QM browse _ota._tcp", func(t *testing.T) {
		send(t, mc, query(q("_ota._tcp.local.", dns.TypePTR)), mdnsTo)
		p := waitForPacket(t, ch, 2*time.Second, "PTR response", func(m *dns.Msg) bool {
			return has(m.Answer, "_ota._tcp.local. PTR "+seedInst+"._ota._tcp.local.")
		})
		m := p.msg
		// The device answers from its own address, like a real one.
		if want := netip.MustParseAddrPort("127.0.0.2:5353"); p.from != want {
			t.Errorf("response from %v, want %v", p.from, want)
		}
		for _, want := range []string{
			seedInst + "._ota._tcp.local. SRV 0 0 3232 ots-sim-01.local.",
			seedInst + `._ota._tcp.local. TXT ""`,
			"ots-sim-01.local. A 127.0.0.2",
		} {
			if !has(m.Extra, want) {
				t.Errorf("additionals %q lack %q", describeAll(m.Extra), want)
			}
		}
		if m.Id != 0 || len(m.Question) != 0 {
			t.Errorf("multicast response: id %d, %d questions; want 0, 0", m.Id, len(m.Question))
		}
	})

	t.Run("service type enumeration", func(t *testing.T) {
		// Each device answers for its own types, from its own address.
		send(t, mc, query(q("_services._dns-sd._udp.local.", dns.TypePTR)), mdnsTo)
		got := map[netip.AddrPort][]string{}
		for len(got) < 3 {
			p := waitForPacket(t, ch, 2*time.Second, "enumeration responses", func(m *dns.Msg) bool {
				return len(m.Answer) > 0 && m.Answer[0].Header().Name == servicesName
			})
			got[p.from] = describeAll(p.msg.Answer)
		}
		want := map[netip.AddrPort][]string{
			netip.MustParseAddrPort("127.0.0.2:5353"): {"_services._dns-sd._udp.local. PTR _ota._tcp.local.", "_services._dns-sd._udp.local. PTR _http._tcp.local."},
			netip.MustParseAddrPort("127.0.0.3:5353"): {"_services._dns-sd._udp.local. PTR _arduino._tcp.local.", "_services._dns-sd._udp.local. PTR _http._tcp.local."},
			netip.MustParseAddrPort("127.0.0.4:5353"): {"_services._dns-sd._udp.local. PTR _arduino._tcp.local."},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	t.Run("QM TXT and A", func(t *testing.T) {
		send(t, mc, query(q(arduinoInst+"._arduino._tcp.local.", dns.TypeTXT), q("ots-sim-03.local.", dns.TypeA)), mdnsTo)
		m := waitFor(t, ch, 2*time.Second, "TXT response", func(m *dns.Msg) bool {
			return has(m.Answer, "ots-sim-03.local. A 127.0.0.4")
		})
		want := arduinoInst + `._arduino._tcp.local. TXT "board=esp32s3" "tcp_check=no" "ssh_upload=no" "auth_upload=yes"`
		if !has(m.Answer, want) {
			t.Errorf("answers %q lack %q", describeAll(m.Answer), want)
		}
	})

	t.Run("legacy unicast from an ephemeral port", func(t *testing.T) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := ipv4.NewPacketConn(c).SetMulticastInterface(lo); err != nil {
			t.Fatal(err)
		}
		qm := query(q(otsInst+"._arduino._tcp.local.", dns.TypeSRV))
		qm.Id = 0x4242
		send(t, c, qm, mdnsTo)
		m, from := readReply(t, c, 2*time.Second)
		if want := netip.MustParseAddrPort("127.0.0.3:5353"); from != want {
			t.Errorf("reply from %v, want %v", from, want)
		}
		if m.Id != 0x4242 || len(m.Question) != 1 || m.Question[0] != qm.Question[0] {
			t.Errorf("id %#x question %v: want 0x4242 and the question echoed", m.Id, m.Question)
		}
		if !has(m.Answer, otsInst+"._arduino._tcp.local. SRV 0 0 3232 ots-sim-02.local.") || !has(m.Extra, "ots-sim-02.local. A 127.0.0.3") {
			t.Errorf("answers %q additionals %q", describeAll(m.Answer), describeAll(m.Extra))
		}
		for _, rr := range append(m.Answer, m.Extra...) {
			if h := rr.Header(); h.Ttl != 120 || h.Class != dns.ClassINET {
				t.Errorf("%s: TTL %d class %#x", describe(rr), h.Ttl, h.Class)
			}
		}
	})

	t.Run("QU gets a unicast reply", func(t *testing.T) {
		// A querier on its own address so the unicast reply to port 5353
		// reaches it and not another socket sharing the port.
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		pc, err := lc.ListenPacket(t.Context(), "udp4", "127.0.0.9:5353")
		if err != nil {
			t.Fatal(err)
		}
		c := pc.(*net.UDPConn)
		defer c.Close()
		if err := ipv4.NewPacketConn(c).SetMulticastInterface(lo); err != nil {
			t.Fatal(err)
		}
		send(t, c, query(dns.Question{Name: "ots-sim-02.local.", Qtype: dns.TypeA, Qclass: dns.ClassINET | classUnicast}), mdnsTo)
		m, _ := readReply(t, c, 2*time.Second)
		if got := describeAll(m.Answer); !slices.Equal(got, []string{"ots-sim-02.local. A 127.0.0.3"}) {
			t.Errorf("answers %q", got)
		}
	})

	t.Run("Remove sends goodbyes", func(t *testing.T) {
		drain(ch, 100*time.Millisecond)
		r.Remove("ots-sim-02")
		m := waitFor(t, ch, 2*time.Second, "goodbye", func(m *dns.Msg) bool {
			return has(m.Answer, "_arduino._tcp.local. PTR "+otsInst+"._arduino._tcp.local.")
		})
		for _, rr := range m.Answer {
			if rr.Header().Ttl != 0 {
				t.Errorf("goodbye %s has TTL %d", describe(rr), rr.Header().Ttl)
			}
		}
		send(t, mc, query(q("_arduino._tcp.local.", dns.TypePTR)), mdnsTo)
		m = waitFor(t, ch, 2*time.Second, "PTR response", func(m *dns.Msg) bool {
			return len(m.Answer) > 0 && m.Answer[0].Header().Name == "_arduino._tcp.local." && m.Answer[0].Header().Ttl > 0
		})
		if got := describeAll(m.Answer); !slices.Equal(got, []string{"_arduino._tcp.local. PTR " + arduinoInst + "._arduino._tcp.local."}) {
			t.Errorf("after Remove: %q", got)
		}
		// The rebooted device comes back.
		if err := r.Add(otsHost()); err != nil {
			t.Errorf("re-Add: %v", err)
		}
		waitFor(t, ch, 2*time.Second, "re-announcement", func(m *dns.Msg) bool {
			return has(m.Answer, "ots-sim-02.local. A 127.0.0.3") && m.Answer[0].Header().Ttl > 0
		})
	})

	t.Run("Close sends goodbyes", func(t *testing.T) {
		drain(ch, 100*time.Millisecond)
		stop()
		m := waitFor(t, ch, 2*time.Second, "goodbye on Close", func(m *dns.Msg) bool {
			return has(m.Answer, "ots-sim-01.local. A 127.0.0.2")
		})
		for _, rr := range m.Answer {
			if rr.Header().Ttl != 0 {
				t.Errorf("goodbye %s has TTL %d", describe(rr), rr.Header().Ttl)
			}
		}
		if err := r.Add(seedHost()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Add after Close: %v, want net.ErrClosed", err)
		}
	})
}

// TestMulticast250 browses 250 devices over the wire: the answer spans
// several packets and every instance must arrive.
func TestMulticast250(t *testing.T) {
	lo := multicastLoopback(t)
	mc, ch := groupListener(t, lo)
	r, stop := startResponder(t, lo)
	defer stop()
	want := make(map[string]bool)
	for i := range 250 {
		name := fmt.Sprintf("ots-sim-%03d", i+1)
		inst := fmt.Sprintf("OTS Firmware Main (%s)", name)
		err := r.Add(Host{
			Name:     name,
			Addrs:    []netip.Addr{netip.AddrFrom4([4]byte{127, 0, byte((i + 2) >> 8), byte(i + 2)})},
			Services: []Service{{Instance: inst, Type: "_ota._tcp", Port: 3232}, {Instance: inst, Type: "_http._tcp", Port: 80}},
		})
		if err != nil {
			t.Fatal(err)
		}
		want[escapeLabel(inst)+"._ota._tcp.local."] = true
	}
	// Let both announcement rounds pass so only the browse answer counts.
	time.Sleep(1500 * time.Millisecond)
	drain(ch, 300*time.Millisecond)

	start := time.Now()
	send(t, mc, query(q("_ota._tcp.local.", dns.TypePTR)), mdnsGroup())
	packets := 0
	sources := make(map[netip.Addr]bool)
	waitForPacket(t, ch, 5*time.Second, "all 250 instances", func(m *dns.Msg) bool {
		packets++
		for _, rr := range m.Answer {
			if p, ok := rr.(*dns.PTR); ok && strings.HasSuffix(p.Hdr.Name, "_ota._tcp.local.") {
				delete(want, p.Ptr)
				for _, ex := range m.Extra {
					if a, ok := ex.(*dns.A); ok {
						sources[netip.AddrFrom4([4]byte(a.A.To4()))] = true
					}
				}
			}
		}
		return len(want) == 0
	})
	t.Logf("250 instances arrived in %d packets, %v", packets, time.Since(start))
	if len(sources) != 250 {
		t.Errorf("addresses of %d devices, want 250", len(sources))
	}
}

// Serve stops with its context, refuses to run twice at once, can be run
// again, and refuses to run after Close.
func TestServeLifecycle(t *testing.T) {
	lo := multicastLoopback(t)
	r, err := New(Config{Interface: lo})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for round := range 2 {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Serve(ctx) }()
		deadline := time.Now().Add(5 * time.Second)
		for !r.isServing() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: Serve not running", round)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := r.Serve(ctx); err == nil || !strings.Contains(err.Error(), "already serving") {
			t.Errorf("round %d: concurrent Serve: %v, want already serving", round, err)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: Serve after cancel returned %v, want nil", round, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Serve did not return after cancel", round)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := r.Serve(t.Context()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close: %v, want net.ErrClosed", err)
	}
}

func (r *Responder) isServing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.serving
}

// dummyIface names a second interface a tester may create inside the test
// namespace, for example a veth pair with both ends in it:
//
//	ip link add mdnsdtest0 type veth peer name mdnsdtest1
//	ip addr add 10.99.0.1/24 dev mdnsdtest0
//	ip link set mdnsdtest1 up; ip link set mdnsdtest0 up
//
// Only that exact name is used, so the test never sends through a real
// interface; what it sends reaches only the peer inside the namespace.
const dummyIface = "mdnsdtest0"

// A query that arrives on another interface gets no answer, neither there
// nor on loopback.
func TestIgnoresOtherInterfaces(t *testing.T) {
	lo := multicastLoopback(t)
	other, err := net.InterfaceByName(dummyIface)
	if err != nil || other.Flags&net.FlagMulticast == 0 || other.Flags&net.FlagUp == 0 {
		t.Skipf("needs an up, multicast dummy interface %s in the test namespace (%v)", dummyIface, err)
	}
	mc, ch := groupListener(t, lo)
	r, stop := startResponder(t, lo)
	defer stop()
	if err := r.Add(seedHost()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past both announcements
	drain(ch, 200*time.Millisecond)

	// A querier on the dummy interface; multicast loop delivers its query
	// locally as arriving on the dummy interface.
	c, err := net.ListenMulticastUDP("udp4", other, net.UDPAddrFromAddrPort(mdnsGroup()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := ipv4.NewPacketConn(c)
	if err := p.SetMulticastInterface(other); err != nil {
		t.Fatal(err)
	}
	if err := p.SetMulticastLoopback(true); err != nil {
		t.Fatal(err)
	}
	otherCh := make(chan packet, 64)
	go readLoop(c, otherCh, false)
	send(t, c, query(q("_ota._tcp.local.", dns.TypePTR)), mdnsGroup())

	// The same query on loopback is answered, so silence above is the filter.
	time.Sleep(300 * time.Millisecond)
	select {
	case p := <-otherCh:
		t.Errorf("answer seen on %s: %v", dummyIface, describeAll(p.msg.Answer))
	case p := <-ch:
		t.Errorf("answer on lo to a query from %s: %v", dummyIface, describeAll(p.msg.Answer))
	default:
	}
	send(t, mc, query(q("_ota._tcp.local.", dns.TypePTR)), mdnsGroup())
	waitFor(t, ch, 2*time.Second, "answer on lo", func(m *dns.Msg) bool { return len(m.Answer) > 0 })
}

// TestProbeAnnounceWithdraw: a host added is probed three times (the first
// probe asking for unicast replies) and answers nothing meanwhile, then is
// announced three times with ESP-IDF's TTLs; Withdraw sends no goodbye.
func TestProbeAnnounceWithdraw(t *testing.T) {
	lo := multicastLoopback(t)
	mc, ch := groupListenerOf(t, lo, true)
	r, stop := startResponder(t, lo)
	defer stop()
	if err := r.Add(arduinoHost()); err != nil {
		t.Fatal(err)
	}
	// Asked while probing: no answer (the probe goes out first anyway).
	send(t, mc, query(q("ots-sim-03.local.", dns.TypeA)), mdnsGroup())
	var kinds []string
	for len(kinds) < probeCount+announceCount {
		p := waitForPacket(t, ch, 5*time.Second, "probe or announcement", func(m *dns.Msg) bool {
			return len(m.Question) > 0 && m.Question[0].Qtype == dns.TypeANY || len(m.Answer) > 0
		})
		m := p.msg
		if want := netip.MustParseAddrPort("127.0.0.4:5353"); p.from != want {
			t.Errorf("packet from %v, want %v", p.from, want)
		}
		if !m.Response {
			qu := m.Question[0].Qclass&classUnicast != 0
			if qu != (len(kinds) == 0) {
				t.Errorf("probe %d: QU %v", len(kinds)+1, qu)
			}
			if !has(m.Ns, "ots-sim-03.local. A 127.0.0.4") || !has(m.Ns, arduinoInst+"._arduino._tcp.local. SRV 0 0 3232 ots-sim-03.local.") {
				t.Errorf("probe authority section %q", describeAll(m.Ns))
			}
			kinds = append(kinds, "probe")
			continue
		}
		if len(m.Answer) == 1 && has(m.Answer, "ots-sim-03.local. A 127.0.0.4") {
			t.Fatalf("answered while probing (after %v)", kinds)
		}
		for _, rr := range append(m.Answer, m.Extra...) {
			want := map[uint16]uint32{dns.TypePTR: 4500, dns.TypeTXT: 4500, dns.TypeSRV: 120, dns.TypeA: 120, dns.TypeAAAA: 120}[rr.Header().Rrtype]
			if strings.HasSuffix(rr.Header().Name, ".arpa.") {
				want = 10 // reverse mapping
			}
			if rr.Header().Ttl != want {
				t.Errorf("%s: TTL %d, want %d", describe(rr), rr.Header().Ttl, want)
			}
		}
		kinds = append(kinds, "announce")
	}
	if want := []string{"probe", "probe", "probe", "announce", "announce", "announce"}; !slices.Equal(kinds, want) {
		t.Errorf("sequence %q, want %q", kinds, want)
	}
	drain(ch, 300*time.Millisecond)
	r.Withdraw("ots-sim-03")
	send(t, mc, query(q("ots-sim-03.local.", dns.TypeA)), mdnsGroup())
	deadline := time.After(700 * time.Millisecond)
	for {
		select {
		case p := <-ch:
			if p.msg.Response {
				t.Fatalf("after Withdraw: %q (a reset sends no goodbye and answers nothing)", describeAll(p.msg.Answer))
			}
			continue
		case <-deadline:
		}
		break
	}
}
