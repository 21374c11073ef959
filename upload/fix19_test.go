package upload

import (
	"context"
	"net"
	"strconv"
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
			want: OutcomeSkipped, from: "14.3.0(tasmota)"},
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
