package esphome

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// queryTXT asks for the node's _esphomelib._tcp TXT by legacy unicast
// and returns it, nil when nothing answers within wait.
func queryTXT(t *testing.T, instance string, wait time.Duration) map[string]string {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion(instance+"._esphomelib._tcp.local.", dns.TypeTXT)
	q.RecursionDesired = false
	pkt, _ := q.Pack()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		c.WriteToUDP(pkt, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
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
			if txt, ok := rr.(*dns.TXT); ok {
				out := map[string]string{}
				for _, it := range txt.Txt {
					k, v, _ := strings.Cut(it, "=")
					out[k] = v
				}
				return out
			}
		}
	}
	return nil
}

// TestMDNSAcrossUpdate: on the wire, the record tells the old identity,
// goes silent while the node reboots (no goodbye) and comes back with the
// new project_version and config_hash. Run it inside a network namespace
// with OTS_OTA_MDNS_TESTS=1.
func TestMDNSAcrossUpdate(t *testing.T) {
	if os.Getenv("OTS_OTA_MDNS_TESTS") != "1" {
		t.Skip("set OTS_OTA_MDNS_TESTS=1 inside a network namespace")
	}
	ifi, err := mdnsd.LoopbackInterface()
	if err != nil {
		t.Skipf("no multicast loopback: %v", err)
	}
	r, err := mdnsd.New(mdnsd.Config{Interface: ifi})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx)
	defer r.Close()
	g, err := net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	goodbye := make(chan string, 1)
	go func() {
		buf := make([]byte, 9000)
		for {
			n, _, err := g.ReadFromUDP(buf)
			if err != nil {
				return
			}
			var m dns.Msg
			if m.Unpack(buf[:n]) != nil || !m.Response {
				continue
			}
			for _, rr := range append(m.Answer, m.Extra...) {
				if rr.Header().Ttl == 0 {
					select {
					case goodbye <- rr.String():
					default:
					}
				}
			}
		}
	}()

	cfg := simtest.Config(ESP32)
	cfg.Name, cfg.IP, cfg.MDNS = "lamp", simtest.MustAddr(t, "127.42.3.2"), r
	cfg.Options = Options{ProjectName: "acme.lamp"}
	tm := *simtest.Timing()
	tm.BootTime = 1500 * time.Millisecond
	cfg.Timing = &tm
	d := simtest.Start(t, cfg)
	before := queryTXT(t, "lamp", 5*time.Second)
	if before["project_version"] != "1.0.0" || before["version"] != DefaultRelease {
		t.Fatalf("before: %v", before)
	}
	if tr := push(t, d.OTAAddr(), script{features: 0x06, payload: simtest.ImageOf(t, "esp32s3", "1.1.0", 0)}); !tr.got45 {
		t.Fatalf("push: %v", tr)
	}
	if _, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s core.State) bool { return s.Phase == core.PhaseBooting }); err != nil {
		t.Fatal(err)
	}
	if txt := queryTXT(t, "lamp", 500*time.Millisecond); txt != nil {
		t.Errorf("answered while rebooting: %v", txt)
	}
	if _, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.Up && s.BootCount == 2 }); err != nil {
		t.Fatal(err)
	}
	after := queryTXT(t, "lamp", 5*time.Second)
	if after["project_version"] != "1.1.0" || after["config_hash"] != ConfigHashOf("acme.lamp", "1.1.0") ||
		after["config_hash"] == before["config_hash"] || after["version"] != DefaultRelease {
		t.Errorf("after: %v (before %v)", after, before)
	}
	select {
	case rr := <-goodbye:
		t.Errorf("goodbye sent: %s", rr)
	default:
	}
}
