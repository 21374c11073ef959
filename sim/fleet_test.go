package sim

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// Fleet tests use 127.42.0.0/16 so they do not collide with other packages
// testing against a fleet on 127.0.0.2 and up. Linux routes all of
// 127.0.0.0/8 to lo; elsewhere only 127.0.0.1 exists.
func skipWithoutLoopbackRange(t testing.TB) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.0/8 on the loopback interface (Linux)")
	}
}

func TestFleet250(t *testing.T) {
	skipWithoutLoopbackRange(t)
	if testing.Short() {
		t.Skip("short")
	}
	var ev simtest.EventLog
	tmpl := simtest.Config(Seed)
	tmpl.Extensions = true
	start := time.Now()
	f, err := StartFleet(context.Background(), FleetConfig{
		N:        250,
		BaseIP:   simtest.MustAddr(t, "127.42.0.2"),
		Template: tmpl,
		OnEvent:  ev.Add,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("250 devices up in %v (web port %d)", time.Since(start), f.WebPort())
	defer f.Close()
	if f.Len() != 250 || ev.Count(EventReady) != 250 {
		t.Fatalf("%d devices, %d ready events", f.Len(), ev.Count(EventReady))
	}
	names := map[string]bool{}
	addrs := map[string]bool{}
	instances := map[string]bool{}
	for _, d := range f.Devices() {
		names[d.Name()] = true
		addrs[d.OTAAddr()] = true
		instances[core.PeekAt(d).Instance()] = true
		if !strings.HasSuffix(d.OTAAddr(), ":3232") {
			t.Fatalf("%s on %s, want port 3232", d.Name(), d.OTAAddr())
		}
	}
	if len(names) != 250 || len(addrs) != 250 || len(instances) != 250 {
		t.Errorf("not unique: %d names, %d addresses, %d instances", len(names), len(addrs), len(instances))
	}
	first, last := f.Devices()[0], f.Devices()[249]
	if first.Name() != "ots-sim-001" || last.Name() != "ots-sim-250" || f.Device("ots-sim-100") == nil {
		t.Errorf("names: %s … %s", first.Name(), last.Name())
	}
	firstIn, lastIn := core.PeekAt(first).Instance(), core.PeekAt(last).Instance()
	if first.OTAAddr() != "127.42.0.2:3232" || firstIn != "OTS Firmware Main" || lastIn != "OTS Firmware Main-250" {
		t.Errorf("first %s %q, last %q", first.OTAAddr(), firstIn, lastIn)
	}
	// The .255 and .0 addresses are skipped.
	for a := range addrs {
		if strings.HasSuffix(a, ".255:3232") || strings.HasSuffix(a, ".0:3232") {
			t.Errorf("device on %s", a)
		}
	}
	// Every device answers, and they share the factory image.
	var wg sync.WaitGroup
	errs := make(chan error, 250)
	for _, d := range f.Devices() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/ota/status")
			if err != nil || code != 200 || !strings.Contains(body, `"version":"1.0.0"`) {
				errs <- fmt.Errorf("%s: %d %q %v", d.Name(), code, body, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if &core.PeekAt(first).SlotData(0)[0] != &core.PeekAt(last).SlotData(0)[0] {
		t.Error("the factory image is not shared")
	}
	// Push to a few devices at once.
	img := simtest.Image(t, "1.0.1")
	for _, d := range f.Devices()[:8] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, b, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", img, nil); err != nil || s != 200 {
				t.Errorf("%s: %d %q %v", d.Name(), s, b, err)
			}
		}()
	}
	wg.Wait()
	ctx := simtest.Ctx(t, 20*time.Second)
	for _, d := range f.Devices()[:8] {
		if _, err := d.WaitVersion(ctx, "1.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	a, b := f.Devices()[0].State(), f.Devices()[7].State()
	if simtest.Slot(a, "ota_0").SHA256 != simtest.Slot(b, "ota_0").SHA256 {
		t.Error("same upload, different slot contents")
	}
	if &core.PeekAt(f.Devices()[0]).SlotData(1)[0] != &core.PeekAt(f.Devices()[7]).SlotData(1)[0] {
		t.Error("the pushed image is stored once per device")
	}
	f.Close()
	f.Close()
	if c, err := net.DialTimeout("tcp", first.OTAAddr(), time.Second); err == nil {
		c.Close()
		t.Error("a closed fleet still accepts connections")
	}
	if n := ev.Count(EventStopped); n != 250 {
		t.Errorf("%d stopped events", n)
	}
}

func TestFleetMixed(t *testing.T) {
	skipWithoutLoopbackRange(t)
	ps := []Personality{Seed, OTS, Arduino, ESP8266}
	f, err := StartFleet(context.Background(), FleetConfig{
		N:        4,
		BaseIP:   simtest.MustAddr(t, "127.42.1.2"),
		Template: simtest.Config(Seed),
		WebPort:  18080,
		Configure: func(i int, c *Config) {
			c.Personality = ps[i]
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := []string{"127.42.1.2:3232", "127.42.1.3:3232", "127.42.1.4:3232", "127.42.1.5:8266"}
	for i, d := range f.Devices() {
		if d.Personality() != ps[i] || d.OTAAddr() != want[i] || d.Name() != fmt.Sprintf("ots-sim-%02d", i+1) {
			t.Errorf("device %d: %s %s %s", i, d.Name(), d.Personality(), d.OTAAddr())
		}
	}
	if w := f.Devices()[1].WebAddr(); w != "127.42.1.3:18080" {
		t.Errorf("web %q", w)
	}
	res, err := simtest.EspotaPush(t, f.Devices()[2].OTAAddr(), simtest.Image(t, "1.0.1"), "")
	if err != nil || res.Final != "OK" {
		t.Fatalf("espota to the fleet: %+v %v", res, err)
	}
}

// A fleet's devices hand their HTTP requests to the template's OnRequest,
// one call at a time.
func TestFleetOnRequest(t *testing.T) {
	skipWithoutLoopbackRange(t)
	var mu sync.Mutex
	var inside bool
	seen := map[string]string{}
	tmpl := simtest.Config(Seed)
	tmpl.OnRequest = func(r HTTPRequest) {
		mu.Lock()
		if inside {
			t.Error("OnRequest called while another call runs")
		}
		inside = true
		seen[r.Device] = r.Method + " " + r.URI
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		inside = false
		mu.Unlock()
	}
	f, err := StartFleet(context.Background(), FleetConfig{N: 3, BaseIP: simtest.MustAddr(t, "127.42.3.2"), Template: tmpl, WebPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	for _, d := range f.Devices() {
		wg.Go(func() {
			if code, _, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/nothing?x"); err != nil || code != 404 {
				t.Errorf("%s: %d %v", d.Name(), code, err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, d := range f.Devices() {
		if seen[d.Name()] != "GET /nothing?x" {
			t.Errorf("%s: seen %q", d.Name(), seen[d.Name()])
		}
	}
}

func TestFleetRefusesNonLoopback(t *testing.T) {
	for _, cfg := range []FleetConfig{
		{N: 2, BaseIP: simtest.MustAddr(t, "10.0.0.1")},
		{N: 2, Addrs: []netip.Addr{simtest.MustAddr(t, "127.0.0.5"), simtest.MustAddr(t, "192.168.1.20")}},
		{N: 2, BaseIP: simtest.MustAddr(t, "::1")}, // ::2 is not loopback
		{N: 0},
		{N: 3, Addrs: []netip.Addr{simtest.MustAddr(t, "127.0.0.5")}},
	} {
		if f, err := StartFleet(context.Background(), cfg); err == nil {
			f.Close()
			t.Errorf("%+v: started", cfg)
		}
	}
	if _, err := Start(context.Background(), Config{IP: simtest.MustAddr(t, "192.168.1.20")}); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("single device on a LAN address: %v", err)
	}
}

func TestFleetAddrs(t *testing.T) {
	got, err := fleetAddrs(FleetConfig{N: 4, BaseIP: simtest.MustAddr(t, "127.0.0.253")})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{simtest.MustAddr(t, "127.0.0.253"), simtest.MustAddr(t, "127.0.0.254"), simtest.MustAddr(t, "127.0.1.1"), simtest.MustAddr(t, "127.0.1.2")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%v", got)
	}
	got, _ = fleetAddrs(FleetConfig{N: 1})
	if got[0] != simtest.MustAddr(t, "127.0.0.2") {
		t.Errorf("default base %v", got)
	}
}

func TestServices(t *testing.T) {
	txt := func(s ...string) []string { return s }
	cases := []struct {
		cfg  Config
		want []mdnsd.Service
	}{
		{Config{Personality: Seed}, []mdnsd.Service{
			{Instance: "OTS Firmware Main", Type: "_ota._tcp", Port: 3232},
			{Instance: "OTS Firmware Main", Type: "_http._tcp", Port: 80}}},
		{Config{Personality: Seed, Extensions: true, Password: auth.NewSecret("x")}, []mdnsd.Service{
			{Instance: "OTS Firmware Main", Type: "_ota._tcp", Port: 3232, TXT: txt("version=1.0.0", "project=ots-fw-main", "chip=esp32s3", "board=esp32s3", "auth=bearer", "path=/update", "api=1")},
			{Instance: "OTS Firmware Main", Type: "_http._tcp", Port: 80}}},
		{Config{Personality: OTS}, []mdnsd.Service{
			{Instance: "OTS Firmware Main Controller", Type: "_arduino._tcp", Port: 3232},
			{Instance: "OTS Firmware Main Controller", Type: "_http._tcp", Port: 80}}},
		{Config{Personality: OTS, Extensions: true}, []mdnsd.Service{
			{Instance: "OTS Firmware Main Controller", Type: "_arduino._tcp", Port: 3232},
			{Instance: "OTS Firmware Main Controller", Type: "_http._tcp", Port: 80},
			{Instance: "OTS Firmware Main Controller", Type: "_ota._tcp", Port: 3232, TXT: txt("version=1.0.0", "project=ots-fw-main", "chip=esp32s3", "board=esp32s3", "auth=none", "path=/update", "api=1")}}},
		{Config{Personality: Arduino, Password: auth.NewSecret("p")}, []mdnsd.Service{
			{Instance: "ots-sim", Type: "_arduino._tcp", Port: 3232, TXT: txt("auth_upload=yes", "ssh_upload=no", "tcp_check=no", "board=esp32s3")}}},
		{Config{Personality: ESP8266}, []mdnsd.Service{
			{Instance: "ots-sim", Type: "_arduino._tcp", Port: 8266, TXT: txt("auth_upload=no", "board=ESP8266_GENERIC", "ssh_upload=no", "tcp_check=no")}}},
	}
	for _, c := range cases {
		// Services read only settings, flash and ports: no sockets needed.
		s, err := core.Resolve(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		web := 80
		if !s.Personality.HTTP() {
			web = -1
		}
		e, err := core.IdleEnv(c.cfg, s.Personality.DefaultOTAPort(), web)
		if err != nil {
			t.Fatal(err)
		}
		fw, _ := core.Lookup(s.Personality)
		if got := fw.Services(e); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s ext=%v:\n got %+v\nwant %+v", s.Personality, s.Extensions, got, c.want)
		}
	}
}

// TestFleetMDNS browses the fleet over multicast DNS on the loopback
// interface. Run it inside a network namespace (see the repository's test
// notes) with OTS_OTA_MDNS_TESTS=1.
func TestFleetMDNS(t *testing.T) {
	if os.Getenv("OTS_OTA_MDNS_TESTS") != "1" {
		t.Skip("set OTS_OTA_MDNS_TESTS=1 inside a network namespace")
	}
	ifi, err := mdnsd.LoopbackInterface()
	if err != nil {
		t.Skipf("no multicast loopback: %v", err)
	}
	f, err := StartFleet(context.Background(), FleetConfig{
		N: 3, BaseIP: simtest.MustAddr(t, "127.42.2.2"), Template: simtest.Config(Seed), MDNSInterface: ifi, WebPort: 18081,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A legacy unicast query (source port ≠ 5353) gets a direct answer.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion("_ota._tcp.local.", dns.TypePTR)
	q.RecursionDesired = false
	pkt, _ := q.Pack()
	seen := map[string]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && len(seen) < 3 {
		c.WriteToUDP(pkt, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		buf := make([]byte, 9000)
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		var m dns.Msg
		if m.Unpack(buf[:n]) != nil {
			continue
		}
		for _, rr := range m.Answer {
			if p, ok := rr.(*dns.PTR); ok {
				seen[p.Ptr] = true
			}
		}
	}
	var got []string
	for k := range seen {
		got = append(got, k)
	}
	slices.Sort(got)
	want := []string{`OTS\ Firmware\ Main-2._ota._tcp.local.`, `OTS\ Firmware\ Main-3._ota._tcp.local.`, `OTS\ Firmware\ Main._ota._tcp.local.`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("browse: %q", got)
	}
	// A rebooting device sends no goodbye; it announces again once back.
	g, err := net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	d := f.Devices()[0]
	simtest.Push(t, d, "1.0.1")
	if _, err := d.WaitVersion(simtest.Ctx(t, 5*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
	announced := false
	g.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 9000)
	for !announced {
		n, from, err := g.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no announcement after the reboot: %v", err)
		}
		var m dns.Msg
		if m.Unpack(buf[:n]) != nil || !m.Response || !from.IP.Equal(net.IPv4(127, 42, 2, 2)) {
			continue
		}
		for _, rr := range append(m.Answer, m.Extra...) {
			if rr.Header().Ttl == 0 {
				t.Fatalf("goodbye on reboot: %v", rr)
			}
			if p, ok := rr.(*dns.PTR); ok && p.Hdr.Name == "_ota._tcp.local." && p.Hdr.Ttl == 4500 {
				announced = true
			}
		}
	}
}

// TestFleetMDNSTTL: the TTL override reaches every record.
func TestFleetMDNSTTL(t *testing.T) {
	if os.Getenv("OTS_OTA_MDNS_TESTS") != "1" {
		t.Skip("set OTS_OTA_MDNS_TESTS=1 inside a network namespace")
	}
	ifi, err := mdnsd.LoopbackInterface()
	if err != nil {
		t.Skipf("no multicast loopback: %v", err)
	}
	g, err := net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	f, err := StartFleet(context.Background(), FleetConfig{
		N: 1, BaseIP: simtest.MustAddr(t, "127.42.3.2"), Template: simtest.Config(Arduino), MDNSInterface: ifi, MDNSTTL: 3 * time.Second, OTAPort: 13232,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 9000)
	for {
		n, from, err := g.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no announcement: %v", err)
		}
		var m dns.Msg
		if m.Unpack(buf[:n]) != nil || !m.Response || !from.IP.Equal(net.IPv4(127, 42, 3, 2)) || len(m.Answer) == 0 {
			continue
		}
		for _, rr := range append(m.Answer, m.Extra...) {
			if rr.Header().Ttl != 3 {
				t.Errorf("%v: TTL %d, want 3", rr, rr.Header().Ttl)
			}
		}
		return
	}
}

func TestAddressName(t *testing.T) {
	for _, tc := range []struct{ prefix, addr, want string }{
		{"ots-sim", "127.0.0.2", "ots-sim-127-0-0-2"},
		{"ots-sim", "127.46.1.254", "ots-sim-127-46-1-254"},
		{"lab", "::ffff:127.0.0.9", "lab-127-0-0-9"},
		{"ots-sim", "::1", "ots-sim-v6-1"},
		{"ots-sim", "fe80::1%lo", "ots-sim-v6-fe80--1"},
	} {
		if got := AddressName(tc.prefix, netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("AddressName(%q, %s) = %q, want %q", tc.prefix, tc.addr, got, tc.want)
		}
	}
}

// Names after the addresses, and the firmware's fixed instance names with
// the host name: nothing another fleet on other addresses claims (issue 15
// Build 3). ArduinoOTA's instance is the host name already.
func TestFleetNameByAddress(t *testing.T) {
	skipWithoutLoopbackRange(t)
	ps := []Personality{Seed, Seed, OTS, Arduino}
	f, err := StartFleet(context.Background(), FleetConfig{
		N: 4, BaseIP: simtest.MustAddr(t, "127.42.2.2"), Template: simtest.Config(Seed), WebPort: 18080,
		NameByAddress: true, InstanceWithHost: true,
		Configure: func(i int, c *Config) { c.Personality = ps[i] },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := [][2]string{
		{"ots-sim-127-42-2-2", "OTS Firmware Main (ots-sim-127-42-2-2)"},
		{"ots-sim-127-42-2-3", "OTS Firmware Main (ots-sim-127-42-2-3)"},
		{"ots-sim-127-42-2-4", "OTS Firmware Main Controller (ots-sim-127-42-2-4)"},
		{"ots-sim-127-42-2-5", "ots-sim-127-42-2-5"},
	}
	for i, d := range f.Devices() {
		if got := [2]string{d.Name(), core.PeekAt(d).Instance()}; got != want[i] {
			t.Errorf("device %d: %q, want %q", i, got, want[i])
		}
	}
	if f.Device("ots-sim-127-42-2-3") != f.Devices()[1] {
		t.Error("Device by name")
	}
}
