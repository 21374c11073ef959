package rollout

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// TestResumeAfterCancel interrupts a rollout at every phase, resumes it,
// and checks that no device was commanded twice across the two runs and
// that every device ends updated.
func TestResumeAfterCancel(t *testing.T) {
	plan := Plan{Canary: 1, Waves: steps("50%,100%")} // waves of 1, 2 and 1 devices
	cases := []struct {
		name  string
		bs    []behaviour
		lose  bool // reports made while nobody watches are lost
		pause time.Duration
		arm   func(r *rig, cancel func())
		// run1 is what the first run must have left: outcome per device
		// ("" = not checked); final what the resumed run ends with (nil:
		// every device updated); source the first device's version source
		// at the end ("" = not checked).
		run1   []upload.Outcome
		final  []upload.Outcome
		source string
		plan   *Plan
	}{
		{name: "after the pre-flight read", bs: []behaviour{succeed, succeed, succeed, succeed},
			arm: func(r *rig, cancel func()) {
				r.f.afterPreflight = cancelOn(r.devs[0].Topic, cancel)
			},
			run1: []upload.Outcome{upload.OutcomeNotStarted, upload.OutcomeNotStarted, upload.OutcomeNotStarted, upload.OutcomeNotStarted}},
		{name: "after commanding, fetched once the resumed run serves again", bs: []behaviour{succeed, succeed, succeed, succeed},
			arm: func(r *rig, cancel func()) {
				hold := make(chan struct{})
				r.f.devs[r.devs[1].Topic].hold = hold
				r.f.devs[r.devs[2].Topic].hold = hold
				r.f.afterCommand = cancelOn(r.devs[1].Topic, cancel)
				r.f.onWatch = func(n int) {
					if n == 2 {
						close(hold)
					}
				}
			},
			run1: []upload.Outcome{"", "", "", upload.OutcomeNotStarted}},
		{name: "after commanding, the fetch cut by the stop", bs: []behaviour{succeed, succeed, succeed, succeed},
			plan: &Plan{Waves: steps("1,100%"), MaxFailures: upload.FailureBudget{Set: true, Percent: 100}},
			arm: func(r *rig, cancel func()) {
				hold := make(chan struct{})
				r.f.devs[r.devs[0].Topic].hold = hold
				r.f.afterCommand = cancelOn(r.devs[0].Topic, cancel)
				r.between = func() { close(hold) } // fetches while nothing serves
			},
			final: []upload.Outcome{upload.OutcomeFailed, upload.OutcomeUpdated, upload.OutcomeUpdated, upload.OutcomeUpdated}},
		{name: "after the fetch, reports lost while away: the read tells", bs: []behaviour{succeed, succeed, succeed, succeed}, lose: true,
			arm: func(r *rig, cancel func()) {
				r.f.afterFetch = cancelOn(r.devs[0].Topic, cancel)
			},
			run1:   firstCancelled,
			source: "Status 2"},
		{name: "after success", bs: []behaviour{succeed, succeed, succeed, succeed},
			arm: func(r *rig, cancel func()) {
				r.f.onReport = cancelOnReport(r, ReportSuccess, cancel)
			},
			run1: firstCancelled},
		{name: "after the target booted, in the stability window", bs: []behaviour{succeed, succeed, succeed, succeed},
			arm: func(r *rig, cancel func()) {
				r.f.onReport = cancelOnReport(r, ReportBooted, cancel)
			},
			run1: firstCancelled},
		{name: "on the loader of a two-step", bs: []behaviour{twoStep, succeed, succeed, succeed},
			arm: func(r *rig, cancel func()) {
				gate := make(chan struct{})
				r.f.devs[r.devs[0].Topic].gate = gate
				r.f.onReport = cancelOnReport(r, ReportBooted, cancel)
				// The loader fetches the full image only once the resumed
				// run serves it again, at the same URL.
				r.f.onWatch = func(n int) {
					if n == 2 {
						close(gate)
					}
				}
			},
			run1: firstCancelled},
		{name: "in the pause between waves", bs: []behaviour{succeed, succeed, succeed, succeed}, pause: 300 * time.Millisecond,
			arm: func(r *rig, cancel func()) {
				r.cfg.OnWave = func(w WaveEvent) {
					r.onWave(w)
					if w.Index == 0 && w.State == "passed" {
						cancel()
					}
				}
			},
			run1: []upload.Outcome{upload.OutcomeUpdated, upload.OutcomeNotStarted, upload.OutcomeNotStarted, upload.OutcomeNotStarted}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each case has a rig of its own: state dir, family, file server
			p := plan
			if c.plan != nil {
				p = *c.plan
			}
			p.WavePause = c.pause
			r := newRig(t, p, c.bs...)
			r.f.lose = c.lose
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var once sync.Once
			c.arm(r, func() { once.Do(cancel) })
			res1 := r.run(ctx)
			for i, w := range c.run1 {
				if w != "" && res1[i].Outcome != w {
					t.Errorf("run 1: %s %s (%s), want %s", res1[i].Device, res1[i].Outcome, res1[i].Message, w)
				}
			}
			rec := r.cfg.State.Record()
			if rec.Finished {
				t.Fatalf("an interrupted rollout is marked finished")
			}
			for i, res := range res1 {
				ph := rec.Devices[i].Phase
				switch res.Outcome {
				case upload.OutcomeCancelled:
					if ph != PhaseCommanded || r.f.commands(r.devs[i].Topic) != 1 {
						t.Errorf("run 1: cancelled %s is %s in the state, commanded %d times", res.Device, ph, r.f.commands(r.devs[i].Topic))
					}
				case upload.OutcomeNotStarted:
					if ph != PhasePending || r.f.commands(r.devs[i].Topic) != 0 {
						t.Errorf("run 1: not-started %s is %s in the state, commanded %d times", res.Device, ph, r.f.commands(r.devs[i].Topic))
					}
				}
			}

			// Let the devices go on with nobody watching, then resume.
			if r.between != nil {
				r.between()
			}
			time.Sleep(4 * r.f.step)
			id := r.cfg.State.ID()
			st := r.reopenState(t)
			if st.ID() != id {
				t.Fatalf("resumed %s, want the latest unfinished %s", st.ID(), id)
			}
			r.f.mu.Lock()
			r.f.afterPreflight, r.f.afterCommand, r.f.afterFetch, r.f.onReport = nil, nil, nil, nil
			r.f.mu.Unlock()
			r.cfg.OnWave = r.onWave
			r.cfg.State = st
			res2 := r.run(context.Background())
			for i, res := range res2 {
				want := upload.OutcomeUpdated
				if c.final != nil {
					want = c.final[i]
				}
				if res.Outcome != want {
					t.Errorf("run 2: %s %s (%s), want %s", res.Device, res.Outcome, res.Message, want)
				}
				if n := r.f.commands(r.devs[i].Topic); n != 1 {
					t.Errorf("%s commanded %d times across the two runs", res.Device, n)
				}
				if res.Tries != 1 {
					t.Errorf("%s: tries %d", res.Device, res.Tries)
				}
			}
			if c.source != "" && res2[0].VersionSource != c.source {
				t.Errorf("run 2: %s told by %q, want %q", res2[0].Device, res2[0].VersionSource, c.source)
			}
			if !st.Record().Finished {
				t.Errorf("the resumed rollout did not finish")
			}
			// Devices commanded in either run were told one URL.
			urls := map[string]bool{}
			r.f.mu.Lock()
			for _, d := range r.f.devs {
				for _, u := range d.urls {
					urls[u] = true
				}
				for _, f := range d.fetched {
					if !strings.HasSuffix(f, " true") && c.final == nil {
						t.Errorf("%s: fetch %s failed", d.topic, f)
					}
				}
			}
			r.f.mu.Unlock()
			if len(urls) != 1 {
				t.Errorf("devices were told %d URLs across the runs: %v", len(urls), urls)
			}
		})
	}
}

// A run interrupted at a device's verdict, before its OTA URL was put
// back, leaves that to the resumed run.
func TestResumeRestoresLeftOtaURL(t *testing.T) {
	r := newRig(t, Plan{}, succeed, succeed)
	r.cfg.MaxFetches = 1
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.f.beforeRestore = func(rctx context.Context, topic string) error {
		if topic != r.devs[0].Topic {
			return nil
		}
		cancel()
		<-rctx.Done()
		return rctx.Err()
	}
	res1 := r.run(ctx)
	if o := res1[1].Outcome; res1[0].Outcome != upload.OutcomeUpdated || o != upload.OutcomeNotStarted && o != upload.OutcomeCancelled {
		t.Fatalf("run 1: %s (%s), %s", res1[0].Outcome, res1[0].Message, res1[1].Outcome)
	}
	if !slices.Contains(res1[0].Warnings, restorePendingWarning) {
		t.Errorf("run 1 warnings %q", res1[0].Warnings)
	}
	if d := r.cfg.State.Record().Devices[0]; d.Phase != PhaseDone || !d.RestorePending {
		t.Fatalf("run 1 left %s, restore pending %v", d.Phase, d.RestorePending)
	}

	st := r.reopenState(t)
	r.f.mu.Lock()
	r.f.beforeRestore = nil
	r.f.mu.Unlock()
	r.cfg.State = st
	res2 := r.run(context.Background())
	for i, got := range res2 {
		if got.Outcome != upload.OutcomeUpdated || len(got.Warnings) != 0 {
			t.Errorf("run 2: %s %s warnings %q", got.Device, got.Outcome, got.Warnings)
		}
		r.f.mu.Lock()
		restores := r.f.restores[r.devs[i].Topic]
		r.f.mu.Unlock()
		if len(restores) != 1 || !strings.Contains(restores[0], "ota.tasmota.com") {
			t.Errorf("%s: restores %q, want its old OTA URL once", got.Device, restores)
		}
		if n := r.f.commands(r.devs[i].Topic); n != 1 {
			t.Errorf("%s commanded %d times", got.Device, n)
		}
	}
	if d := st.Record().Devices[0]; d.RestorePending || !st.Record().Finished {
		t.Errorf("run 2: restore pending %v, finished %v", d.RestorePending, st.Record().Finished)
	}
}

// A run interrupted after a budget was exceeded, with a device still in
// flight: the resumed run stops at once, yet watches that device to its
// verdict; the rest stay not-started.
func TestResumeAfterAStopWatchesInFlight(t *testing.T) {
	r := newRig(t, Plan{}, failAlways, succeed, succeed)
	r.cfg.MaxFetches, r.cfg.Retries = 2, 0
	hold0, hold1 := make(chan struct{}), make(chan struct{})
	r.f.devs[r.devs[0].Topic].hold = hold0 // fails once dev1 is commanded
	r.f.devs[r.devs[1].Topic].hold = hold1 // fetches once the run resumed
	r.f.afterCommand = func(topic string) {
		if topic == r.devs[1].Topic {
			close(hold0)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.cfg.OnEvent = func(e upload.FleetEvent) {
		r.onEvent(e)
		if e.Key == r.devs[0].Topic && e.Phase == upload.PhaseDone {
			cancel()
		}
	}
	res1 := r.run(ctx)
	if res1[0].Outcome != upload.OutcomeFailed || res1[1].Outcome != upload.OutcomeCancelled {
		t.Fatalf("run 1: %s, %s", res1[0].Outcome, res1[1].Outcome)
	}

	st := r.reopenState(t)
	r.f.mu.Lock()
	r.f.afterCommand = nil
	r.f.mu.Unlock()
	r.cfg.State, r.cfg.OnEvent = st, r.onEvent
	r.f.onWatch = func(n int) {
		if n == 2 {
			close(hold1) // served again
		}
	}
	res2 := r.run(context.Background())
	want := []upload.Outcome{upload.OutcomeFailed, upload.OutcomeUpdated, upload.OutcomeNotStarted}
	for i, got := range res2 {
		if got.Outcome != want[i] {
			t.Errorf("run 2: %s %s (%s), want %s", got.Device, got.Outcome, got.Message, want[i])
		}
	}
	if n := r.f.commands(r.devs[2].Topic); n != 0 {
		t.Errorf("dev2 commanded %d times past the budget", n)
	}
	if rec := st.Record(); !rec.Finished || rec.Stopped == "" || rec.Devices[1].Phase != PhaseDone {
		t.Errorf("run 2 state: finished %v stopped %q dev1 %s", rec.Finished, rec.Stopped, rec.Devices[1].Phase)
	}
}

// firstCancelled is what a run cancelled while it works on the first of
// four devices leaves.
var firstCancelled = []upload.Outcome{upload.OutcomeCancelled, upload.OutcomeNotStarted, upload.OutcomeNotStarted, upload.OutcomeNotStarted}

// cancelOn is a fake's hook that cancels once it runs for topic.
func cancelOn(topic string, cancel func()) func(string) {
	return func(t string) {
		if t == topic {
			cancel()
		}
	}
}

// cancelOnReport is a fake's onReport that cancels at the first device's
// report of kind k.
func cancelOnReport(r *rig, k ReportKind, cancel func()) func(Report) {
	return func(rep Report) {
		if rep.Topic == r.devs[0].Topic && rep.Kind == k {
			cancel()
		}
	}
}

// reopenState closes the run's state file and opens it again, as a
// resumed run does; the test's end closes it.
func (r *rig) reopenState(t *testing.T) *State {
	t.Helper()
	r.cfg.State.Close()
	st, err := OpenState(filepath.Join(r.dir, "state"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
