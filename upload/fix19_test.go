package upload

import (
	"context"
	"testing"
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
