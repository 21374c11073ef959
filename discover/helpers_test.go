package discover

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// mdnsLoopback returns the loopback interface for multicast tests, which
// run only where OTS_OTA_MDNS_TESTS=1 says the test is inside a private
// network namespace (.ci/run): nothing may reach a real network.
func mdnsLoopback(t testing.TB) *net.Interface {
	t.Helper()
	if os.Getenv("OTS_OTA_MDNS_TESTS") != "1" {
		t.Skip("multicast test: run with OTS_OTA_MDNS_TESTS=1 inside `unshare -n` (see .ci/run)")
	}
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.0/8 on the loopback interface (Linux)")
	}
	ifi, err := mdnsd.LoopbackInterface()
	if err != nil {
		t.Fatal(err)
	}
	return ifi
}

// loCfg browses on loopback only.
func loCfg(ifi *net.Interface, services ...string) Config {
	return Config{Interfaces: []*net.Interface{ifi}, IPv4Only: true, Services: services}
}

// Each test uses its own 127.x range and name prefix: other packages' tests
// advertise fleets on the same loopback interface at the same time.
func startFleet(t testing.TB, ifi *net.Interface, n int, base, prefix string, configure func(int, *sim.Config)) *sim.Fleet {
	t.Helper()
	ft := sim.FastTiming()
	f, err := sim.StartFleet(context.Background(), sim.FleetConfig{
		N: n, BaseIP: netip.MustParseAddr(base), NamePrefix: prefix, MDNSInterface: ifi,
		Template:  sim.Config{Personality: sim.Seed, Extensions: true, Timing: &ft, Instance: "x"},
		Configure: configure,
		WebPort:   -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// uniqueInstances gives every device its own instance name, prefix-NNN.
func uniqueInstances(prefix string) func(int, *sim.Config) {
	return func(i int, c *sim.Config) { c.Instance = fmt.Sprintf("%s-%03d", prefix, i+1) }
}

func ours(ds []Device, prefix string) []Device {
	var out []Device
	for _, d := range ds {
		if strings.HasPrefix(d.Instance, prefix) {
			out = append(out, d)
		}
	}
	return out
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
