package upload

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// factsDevice is a device whose pre-flight read tells fixed facts; it is
// never sent anything (the runs are dry).
type factsDevice struct{ f Facts }

func (*factsDevice) Protocol() Protocol { return Tasmota }
func (*factsDevice) Traits() Traits     { return Traits{NoImageIdentity: true, Port: 80} }
func (*factsDevice) Send(context.Context, Target, *Firmware, Credentials, Emit) error {
	panic("a dry run sends nothing")
}
func (d *factsDevice) Observe(context.Context, Target) (Facts, error) { return d.f, nil }

// TestLoaderImageIsNeverAlreadyOn: a device stuck in its minimal image
// tells the expected release, yet is not skipped as "already on", and
// FROM shows the image it runs, not only its release.
func TestLoaderImageIsNeverAlreadyOn(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Facts
		want Outcome
		from string
	}{
		{name: "minimal image of the expected release",
			f:    Facts{Answered: true, Version: "14.3.0", VersionSource: "Status 0", Intermediate: "minimal", Image: "14.3.0(minimal)"},
			want: OutcomePlanned, from: "14.3.0(minimal)"},
		{name: "the firmware of the expected release",
			f:    Facts{Answered: true, Version: "14.3.0", VersionSource: "Status 0", Image: "14.3.0(tasmota)"},
			want: OutcomeSkipped, from: "14.3.0"},
		{name: "no image name told", f: Facts{Answered: true, Version: "14.2.0", VersionSource: "Status 0"},
			want: OutcomePlanned, from: "14.2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := &factsDevice{f: tc.f}
			opts := Options{Transports: map[Protocol]Transport{Tasmota: dev}, Observer: dev, ExpectVersion: "14.3.0", DryRun: true}
			res := Run(context.Background(), testFirmware(t, "14.3.0"), []Target{{Host: "127.0.0.1", Port: 80, Protocol: Tasmota}}, opts)
			if r := res[0]; r.Outcome != tc.want || r.From != tc.from {
				t.Fatalf("outcome %s (%s), from %q; want %s, from %q", r.Outcome, r.Message, r.From, tc.want, tc.from)
			}
		})
	}
}

// TestFinishNotSettled: a device interrupted while it may be installing
// (never seen back) is finished as not settled, and at once.
func TestFinishNotSettled(t *testing.T) {
	q := &quietDevice{addr: "127.0.0.1:0", away: time.Hour, version: "14.2.0", upSince: time.Now().Add(-time.Hour)}
	q.listen(t)
	host, port, _ := net.SplitHostPort(q.addr)
	p, _ := strconv.Atoi(port)
	ctx, cancel := context.WithCancel(context.Background())
	opts := Options{Transports: map[Protocol]Transport{Tasmota: q}, Observer: q, ExpectVersion: "14.3.0",
		VerifyTimeout: time.Minute, PollInterval: 20 * time.Millisecond, ProbeTimeout: time.Second, Seed: 1,
		OnEvent: func(e FleetEvent) {
			if e.Phase == PhaseRebooting {
				cancel() // Ctrl-C while it restarts
			}
		}}
	res := Run(ctx, testFirmware(t, "14.3.0"), []Target{{Host: host, Port: p, Protocol: Tasmota}}, opts)
	q.mu.Lock()
	defer q.mu.Unlock()
	if res[0].Outcome != OutcomeCancelled || q.finishes != 1 || q.settled {
		t.Fatalf("outcome %s (%s), finishes %d, settled %v; want cancelled, one Finish, not settled", res[0].Outcome, res[0].Message, q.finishes, q.settled)
	}
}

// TestDecideNoIdentityNoRestart: without an expected identity, a device
// that answered every read and showed no restart is said not to have
// installed the image; one seen away, or whose uptime fell, is not.
func TestDecideNoIdentityNoRestart(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	before := Facts{Answered: true, Version: "14.2.0", Uptime: time.Hour, UptimeKnown: true, UptimeSource: "Status 0"}
	up := func(s float64, uptime time.Duration, known bool) Observation {
		return Observation{At: at(s), End: at(s + 0.1), Facts: Facts{Answered: true, Version: "14.2.0", Uptime: uptime, UptimeKnown: known, UptimeSource: "Status 0"}}
	}
	silent := func(s float64) Observation { return Observation{At: at(s), End: at(s + 0.5), Silent: true} }
	for _, tc := range []struct {
		name string
		obs  []Observation
		want string
		not  string
	}{
		{name: "uptime ran on", obs: []Observation{up(16, time.Hour+16*time.Second, true)}, want: "did not restart after the upload (its uptime ran on"},
		{name: "no uptime told, every read answered", obs: []Observation{up(1, 0, false), up(16, 0, false)}, want: "no restart was seen"},
		{name: "uptime fell", obs: []Observation{up(16, 3*time.Second, true)}, not: "restart"},
		{name: "seen away", obs: []Observation{silent(2), silent(3), up(16, 0, false)}, not: "restart"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := VerdictSpec{Before: before, BeforeAt: t0, Accepted: t0, StabilityWindow: 10 * time.Second, RebootGrace: 15 * time.Second}
			v, done := Decide(spec, tc.obs, at(17), false)
			if !done || v.Outcome != OutcomeUnverified || v.Reason != ReasonNoIdentity {
				t.Fatalf("got %v %s %s %q", done, v.Outcome, v.Reason, v.Message)
			}
			if tc.want != "" && !strings.Contains(v.Message, tc.want) || tc.not != "" && strings.Contains(v.Message, tc.not) {
				t.Fatalf("message %q: want %q, not %q", v.Message, tc.want, tc.not)
			}
		})
	}
}

// TestCheckingNamesTheDecidedPort: a web family's device is first shown
// at the port detection decided (its web port), not the OTA port 3232.
func TestCheckingNamesTheDecidedPort(t *testing.T) {
	dev := &factsDevice{f: Facts{Answered: true, Version: "14.2.0", VersionSource: "Status 0"}}
	var first *FleetEvent
	opts := Options{Transports: map[Protocol]Transport{Tasmota: dev}, Observer: dev, DryRun: true,
		Detect: func(context.Context, Target) (Decision, error) { return Decision{Protocol: Tasmota, Port: 80}, nil },
		OnEvent: func(e FleetEvent) {
			if first == nil {
				first = &e
			}
		}}
	Run(context.Background(), testFirmware(t, "14.3.0"), []Target{{Host: "127.0.0.1"}}, opts)
	if first == nil || first.Phase != PhaseChecking || first.Addr != "127.0.0.1:80" {
		t.Fatalf("first event %+v, want checking at 127.0.0.1:80", first)
	}
}

// TestDecideNoIdentityAfterRestart: without an expected identity, a device
// seen away and back is decided at once, not after the reboot grace.
func TestDecideNoIdentityAfterRestart(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	before := Facts{Answered: true, Version: "14.2.0", Uptime: time.Hour, UptimeKnown: true, UptimeSource: "Status 0"}
	back := Observation{At: at(4), End: at(4.1), Facts: Facts{Answered: true, Version: "14.3.0", Uptime: time.Second, UptimeKnown: true, UptimeSource: "Status 0"}}
	obs := []Observation{{At: at(2), End: at(2.5), Silent: true}, {At: at(3), End: at(3.5), Silent: true}, back}
	spec := VerdictSpec{Before: before, BeforeAt: t0, Accepted: t0, StabilityWindow: 10 * time.Second, RebootGrace: 15 * time.Second}
	if v, done := Decide(spec, obs, at(5), false); !done || v.Outcome != OutcomeUnverified || v.Reason != ReasonNoIdentity {
		t.Fatalf("got %v %s %s %q; want unverified at once", done, v.Outcome, v.Reason, v.Message)
	}
	// Still on its old image, not yet away: the grace runs.
	if v, done := Decide(spec, []Observation{{At: at(1), End: at(1.1), Facts: before}}, at(5), false); done {
		t.Fatalf("decided within the grace: %s %q", v.Outcome, v.Message)
	}
}
