package upload

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// txtFleet is a family whose devices tell what they run in their mDNS TXT
// only, set by their own configuration (Traits.NoImageIdentity): a project
// version and a build hash the image does not carry.
type txtFleet struct {
	mu   sync.Mutex
	devs map[string]*txtDev
}

type txtDev struct {
	version, build         string // what it tells now
	nextVersion, nextBuild string // what it tells after the upload's restart
	down                   int    // silent reads left
	sent                   bool
}

func (f *txtFleet) Protocol() Protocol { return "txtonly" }

func (f *txtFleet) Traits() Traits {
	return Traits{MDNSOnly: true, NoImageIdentity: true, NoIdentityHint: "give the build hint"}
}

func (f *txtFleet) Send(_ context.Context, t Target, fw *Firmware, _ Credentials, emit Emit) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devs[t.Host]
	emit(Event{Phase: PhaseUploading, Done: fw.Size(), Total: fw.Size()})
	d.sent, d.down = true, 3
	return nil
}

func (f *txtFleet) Observe(_ context.Context, t Target) (Facts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devs[t.Host]
	if d.sent && d.down > 0 {
		d.down--
		return Facts{Silent: true}, nil
	}
	if d.sent {
		d.version, d.build = d.nextVersion, d.nextBuild
	}
	// The TXT project name is the YAML's, not the image's descriptor's.
	return Facts{Answered: true, Version: d.version, VersionSource: "txt", Build: d.build, Project: "author.other"}, nil
}

func TestImageUntoldVerification(t *testing.T) {
	fw := testFirmware(t, "1.0.0") // its descriptor says 1.0.0, project proj
	for _, c := range []struct {
		name          string
		dev           txtDev
		expectVersion string
		expectBuild   string
		outcome       Outcome
		reason        Reason
		says          string
	}{
		{name: "no expectation", dev: txtDev{version: "1.5", build: "0000aaaa", nextVersion: "2.0", nextBuild: "0000bbbb"},
			outcome: OutcomeUnverified, reason: ReasonNoIdentity, says: "give the build hint"},
		{name: "expected build seen", dev: txtDev{version: "1.5", build: "0000aaaa", nextVersion: "1.5", nextBuild: "0000bbbb"},
			expectBuild: "0000BBBB", outcome: OutcomeUpdated},
		{name: "expected build equals the one before", dev: txtDev{version: "1.5", build: "0000aaaa", nextVersion: "1.5", nextBuild: "0000aaaa"},
			expectBuild: "0000aaaa", outcome: OutcomeUnverified, reason: ReasonSameIdentity},
		{name: "expected project version seen", dev: txtDev{version: "1.5", build: "0000aaaa", nextVersion: "2.0", nextBuild: "0000bbbb"},
			expectVersion: "2.0", outcome: OutcomeUpdated},
		{name: "build and version must both match", dev: txtDev{version: "1.5", build: "0000aaaa", nextVersion: "1.9", nextBuild: "0000bbbb"},
			expectVersion: "2.0", expectBuild: "0000bbbb", outcome: OutcomeRolledBack},
		{name: "came back on the old build", dev: txtDev{version: "1.5", build: "0000aaaa", nextVersion: "1.5", nextBuild: "0000aaaa"},
			expectBuild: "0000bbbb", outcome: OutcomeUnchanged},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := c.dev
			f := &txtFleet{devs: map[string]*txtDev{"10.0.0.9": &d}}
			o := Options{Transports: map[Protocol]Transport{"txtonly": f}, Observer: f,
				StabilityWindow: time.Millisecond, VerifyTimeout: 5 * time.Second, RebootGrace: 500 * time.Millisecond,
				PollInterval: time.Millisecond, ProbeTimeout: time.Second, Seed: 1,
				ExpectVersion: c.expectVersion, ExpectBuild: c.expectBuild}
			res := Run(context.Background(), fw, []Target{{Name: "d", Host: "10.0.0.9", Protocol: "txtonly"}}, o)
			r := res[0]
			if r.Outcome != c.outcome || r.Reason != c.reason {
				t.Fatalf("%s %s (%s), want %s %s", r.Outcome, r.Reason, r.Message, c.outcome, c.reason)
			}
			if c.says != "" && !strings.Contains(r.Message, c.says) {
				t.Errorf("message %q does not say %q", r.Message, c.says)
			}
			if !d.sent {
				t.Error("nothing was sent: the image's own project or version must not refuse or skip it")
			}
		})
	}
}

func TestIdentityBuild(t *testing.T) {
	for _, c := range []struct {
		exp, seen Identity
		want      match
	}{
		{Identity{Build: "aa"}, Identity{Build: "aa"}, yes},
		{Identity{Build: "aa"}, Identity{Build: "bb"}, no},
		{Identity{Build: "aa"}, Identity{Version: "1"}, unknown},
		{Identity{Build: "aa", Version: "1"}, Identity{Build: "aa", Version: "2"}, no},
		{Identity{Build: "aa", Version: "1"}, Identity{Build: "aa"}, yes},
		{Identity{Version: "1"}, Identity{Build: "aa", Version: "1"}, yes},
	} {
		if got := matches(c.exp, c.seen); got != c.want {
			t.Errorf("matches(%+v, %+v) = %v, want %v", c.exp, c.seen, got, c.want)
		}
	}
	if !overlap(Identity{Build: "a"}, Identity{Build: "b"}) || overlap(Identity{Build: "a"}, Identity{Version: "1"}) {
		t.Error("overlap: a build is comparable with a build only")
	}
}

// "Already on" needs the whole expected identity: a device on the expected
// version with another build (ESPHome's config hash) is updated, not
// skipped; one on both is skipped; a build alone is never a skip (the same
// build before and after identifies nothing new).
func TestAlreadyOnWholeIdentity(t *testing.T) {
	fw := testFirmware(t, "1.0.0")
	for _, c := range []struct {
		name                       string
		dev                        txtDev
		expectVersion, expectBuild string
		skipped                    bool
	}{
		{name: "version matches, build differs", dev: txtDev{version: "1.0.0", build: "0000aaaa", nextVersion: "1.0.0", nextBuild: "deadbeef"},
			expectVersion: "1.0.0", expectBuild: "deadbeef"},
		{name: "version matches, no build told", dev: txtDev{version: "1.0.0", nextVersion: "1.0.0", nextBuild: "deadbeef"},
			expectVersion: "1.0.0", expectBuild: "deadbeef"},
		{name: "both match", dev: txtDev{version: "1.0.0", build: "deadbeef"}, expectVersion: "1.0.0", expectBuild: "DEADBEEF", skipped: true},
		{name: "version alone expected and matching", dev: txtDev{version: "1.0.0", build: "0000aaaa"}, expectVersion: "1.0.0", skipped: true},
		{name: "build alone", dev: txtDev{version: "1.0.0", build: "deadbeef", nextVersion: "1.0.0", nextBuild: "deadbeef"}, expectBuild: "deadbeef"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := c.dev
			f := &txtFleet{devs: map[string]*txtDev{"10.0.0.9": &d}}
			o := Options{Transports: map[Protocol]Transport{"txtonly": f}, Observer: f,
				StabilityWindow: time.Millisecond, VerifyTimeout: 5 * time.Second, RebootGrace: 500 * time.Millisecond,
				PollInterval: time.Millisecond, ProbeTimeout: time.Second, Seed: 1,
				ExpectVersion: c.expectVersion, ExpectBuild: c.expectBuild}
			r := Run(context.Background(), fw, []Target{{Name: "d", Host: "10.0.0.9", Protocol: "txtonly"}}, o)[0]
			if got := r.Outcome == OutcomeSkipped; got != c.skipped || d.sent == c.skipped {
				t.Fatalf("%s (%s), sent %v; want skipped %v", r.Outcome, r.Message, d.sent, c.skipped)
			}
			if c.skipped && !strings.Contains(r.Message, "already on 1.0.0") {
				t.Errorf("message %q", r.Message)
			}
		})
	}
}

// A device whose old firmware told nothing the expected identity could be
// compared with (no project_version before the YAML's first project:, no
// config_hash before the release that added it) is watched: the new
// image's record may tell it.
func TestUntoldBeforeIsWatched(t *testing.T) {
	fw := testFirmware(t, "1.0.0")
	for _, c := range []struct {
		name                       string
		dev                        txtDev
		expectVersion, expectBuild string
		outcome                    Outcome
		reason                     Reason
	}{
		{name: "first project:", dev: txtDev{build: "0000aaaa", nextVersion: "2.0", nextBuild: "0000bbbb"},
			expectVersion: "2.0", outcome: OutcomeUpdated},
		{name: "first config_hash", dev: txtDev{version: "1.5", nextVersion: "1.5", nextBuild: "0000bbbb"},
			expectBuild: "0000bbbb", outcome: OutcomeUpdated},
		{name: "told nothing before", dev: txtDev{nextVersion: "2.0"}, expectVersion: "2.0", outcome: OutcomeUpdated},
		{name: "the new image tells nothing either", dev: txtDev{version: "1.5"}, expectBuild: "0000bbbb",
			outcome: OutcomeUnverified, reason: ReasonTellsNothing},
		{name: "nothing before or after", dev: txtDev{}, expectVersion: "2.0", outcome: OutcomeUnverified, reason: ReasonTellsNothing},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := c.dev
			f := &txtFleet{devs: map[string]*txtDev{"10.0.0.9": &d}}
			// Generous where the update is seen (about 2 s in); short where
			// nothing will be told and the timeout is what is tested.
			timeout := 10 * time.Second
			if c.reason == ReasonTellsNothing {
				timeout = 2 * time.Second
			}
			o := Options{Transports: map[Protocol]Transport{"txtonly": f}, Observer: f,
				// Three silent reads 600 ms apart: a restart seen (the
				// reads span more than silenceSpan).
				StabilityWindow: time.Millisecond, VerifyTimeout: timeout, RebootGrace: 100 * time.Millisecond,
				PollInterval: 600 * time.Millisecond, ProbeTimeout: time.Second, Seed: 1,
				ExpectVersion: c.expectVersion, ExpectBuild: c.expectBuild}
			r := Run(context.Background(), fw, []Target{{Name: "d", Host: "10.0.0.9", Protocol: "txtonly"}}, o)[0]
			if r.Outcome != c.outcome || r.Reason != c.reason || !d.sent {
				t.Fatalf("%s %s (%s), sent %v; want %s %s", r.Outcome, r.Reason, r.Message, d.sent, c.outcome, c.reason)
			}
			// Told nothing in the end: concluded only when time ran out.
			if c.reason == ReasonTellsNothing && !strings.Contains(r.Message, "verify timeout") {
				t.Errorf("concluded before the verify timeout: %s", r.Message)
			}
		})
	}
}
