package upload

import (
	"context"
	"testing"
	"time"
)

// foreignIdentity is fakeFleet for a family whose devices report their
// firmware's own version, never the image's (Traits.NoImageIdentity).
type foreignIdentity struct{ *fakeFleet }

func (foreignIdentity) Traits() Traits { return Traits{NoImageIdentity: true} }

// A device of a family that never reports the image's identity (WLED's
// ver is WLED's, not the app descriptor's) is verified against
// --expect-version alone: without it, once the device is back, the
// outcome is unverified, reason image-has-no-identity (never "another
// image runs"); with it, updated when the device reports it after a
// restart, and not when it reports another.
func TestRunNoImageIdentity(t *testing.T) {
	for _, tc := range []struct {
		name, expect, after string
		outcome             Outcome
		reason              Reason
		to                  string
	}{
		{"no --expect-version", "", "0.15.5", OutcomeUnverified, ReasonNoIdentity, ""},
		{"--expect-version seen", "0.15.5", "0.15.5", OutcomeUpdated, "", "0.15.5"},
		{"--expect-version not seen", "0.15.5", "0.15.4", "", "", "0.15.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFleet()
			tg := f.add("wled", &fakeDev{rollTo: tc.after, facts: Facts{Answered: true, Version: "0.15.4", Chip: "esp32s3",
				VersionSource: "/json/info", Uptime: time.Hour, UptimeKnown: true}})
			o := fastOptions(f)
			o.Transports = map[Protocol]Transport{HTTP: foreignIdentity{f}}
			o.ExpectVersion = tc.expect
			r := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, o)[0]
			if f.sendsTo("wled") != 1 || r.To != tc.to {
				t.Errorf("%d sends, to %q; want 1 send, to %q", f.sendsTo("wled"), r.To, tc.to)
			}
			switch {
			case tc.outcome == "" && r.Outcome == OutcomeUpdated:
				t.Errorf("updated, but the device reports %s, not %s: %s", tc.after, tc.expect, r.Message)
			case tc.outcome != "" && (r.Outcome != tc.outcome || r.Reason != tc.reason):
				t.Errorf("%s (%s), want %s (%s): %s", r.Outcome, r.Reason, tc.outcome, tc.reason, r.Message)
			}
		})
	}
}
