package upload_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/rawhttp"
)

// subnet hands each sim test its own 127.0.N.0/24, so tests in parallel
// (and other packages' tests) never share an address.
var subnet atomic.Int32

func nextBase(t testing.TB) netip.Addr {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.x loopback addresses beyond 127.0.0.1 (Linux)")
	}
	n := 40 + subnet.Add(1)
	if n > 254 {
		t.Fatal("out of test subnets")
	}
	return netip.AddrFrom4([4]byte{127, 0, byte(n), 2})
}

// startFleet starts n simulated devices with test timing.
func startFleet(t testing.TB, n int, configure func(i int, c *sim.Config)) *sim.Fleet {
	t.Helper()
	tm := sim.FastTiming()
	// A reboot's silence long enough to prove a restart (at least two
	// silent reads over at least a second, as the verdict asks; a real
	// ESP32 is silent for 2-6 s).
	tm.BootTime = 1300 * time.Millisecond
	// A stability window the probes can see into (each read may wait out
	// a probe timeout); simOptions holds stateless devices longer.
	tm.ValidAfter = 400 * time.Millisecond
	// The devices live as long as this context: the test's whole run.
	f, err := sim.StartFleet(context.Background(), sim.FleetConfig{
		N: n, BaseIP: nextBase(t), Seed: 7, WebPort: 18080,
		Template:  sim.Config{Timing: &tm, Project: "proj", Version: "1.0.0"},
		Configure: configure,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// targetsOf lists the fleet as targets.
func targetsOf(f *sim.Fleet) []upload.Target {
	var ts []upload.Target
	for _, d := range f.Devices() {
		ts = append(ts, upload.Target{Name: d.Name(), Host: d.IP().String(), Port: d.OTAPort(), WebPort: f.WebPort()})
	}
	return ts
}

// simOptions are upload.SimOptions with the HTTP transport.
func simOptions() upload.Options {
	o := upload.SimOptions()
	o.Transports[upload.HTTP] = &rawhttp.Transport{ConnectTimeout: time.Second, IdleTimeout: 5 * time.Second}
	return o
}

var simFirmware = upload.SimFirmware

// checkTruth fails when a device reported updated does not run the new
// version by the simulator's own state.
func checkTruth(t testing.TB, f *sim.Fleet, res []upload.Result, version string) {
	t.Helper()
	for i, r := range res {
		st := f.Devices()[i].State()
		if r.Outcome == upload.OutcomeUpdated && st.Version != version {
			t.Errorf("%s reported updated, but the sim runs %s (%s)", r.Device, st.Version, st.AppState)
		}
	}
}

func TestVerifyAgainstSim(t *testing.T) {
	cases := []struct {
		name      string
		cfg       func(c *sim.Config)
		noWait    bool
		want      upload.Outcome
		pending   bool
		source    string
		wantState string
		from      string
	}{
		{"seed extensions healthy", func(c *sim.Config) { c.Extensions = true }, false, upload.OutcomeUpdated, false, "/ota/status", "valid", "1.0.0"},
		{"seed extensions crash-on-boot", func(c *sim.Config) {
			c.Extensions = true
			c.Behaviours = map[string]sim.Behaviour{"1.0.1": sim.CrashOnBoot}
		}, false, upload.OutcomeRolledBack, false, "/ota/status", "undefined", "1.0.0"},
		{"seed extensions unstable", func(c *sim.Config) {
			c.Extensions = true
			c.Behaviours = map[string]sim.Behaviour{"1.0.1": sim.Unstable}
		}, false, upload.OutcomeRolledBack, false, "/ota/status", "undefined", "1.0.0"},
		{"seed extensions unstable no-wait-valid", func(c *sim.Config) {
			c.Extensions = true
			c.Behaviours = map[string]sim.Behaviour{"1.0.1": sim.Unstable}
		}, true, upload.OutcomeUpdated, true, "/ota/status", "pending_verify", "1.0.0"},
		{"ots healthy", func(c *sim.Config) { c.Personality = sim.OTS }, false, upload.OutcomeUpdated, false, "/api/status", "", "1.0.0"},
		{"ots crash-on-boot", func(c *sim.Config) {
			c.Personality = sim.OTS
			c.Behaviours = map[string]sim.Behaviour{"1.0.1": sim.CrashOnBoot}
		}, false, upload.OutcomeRolledBack, false, "/api/status", "", "1.0.0"},
		{"seed without extensions", func(c *sim.Config) {}, false, upload.OutcomeUnverified, false, "", "", ""},
		{"no-return", func(c *sim.Config) {
			c.Extensions = true
			c.Faults = []sim.Fault{mustFault("no-return")}
		}, false, upload.OutcomeUnreachable, false, "", "", "1.0.0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := startFleet(t, 1, func(_ int, cfg *sim.Config) { c.cfg(cfg) })
			o := simOptions()
			o.NoWaitValid = c.noWait
			if c.want == upload.OutcomeUnreachable {
				o.VerifyTimeout = time.Second
			}
			res := upload.Run(context.Background(), simFirmware(t, "1.0.1"), targetsOf(f), o)
			r := res[0]
			if r.Outcome != c.want || r.Pending != c.pending || r.VersionSource != c.source || r.State != c.wantState {
				t.Fatalf("got %s pending=%v source=%q state=%q (%s); want %s pending=%v source=%q state=%q",
					r.Outcome, r.Pending, r.VersionSource, r.State, r.Message, c.want, c.pending, c.source, c.wantState)
			}
			if r.Protocol != upload.HTTP || r.Tries != 1 || r.From != c.from {
				t.Errorf("protocol %s tries %d from %q", r.Protocol, r.Tries, r.From)
			}
			checkTruth(t, f, res, "1.0.1")
		})
	}
}

func mustFault(spec string) sim.Fault {
	f, err := sim.ParseFault(spec)
	if err != nil {
		panic(fmt.Sprint(spec, err))
	}
	return f
}
