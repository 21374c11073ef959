package sim

import (
	"context"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

func TestBehaviours(t *testing.T) {
	cases := []struct {
		name       string
		behaviour  Behaviour
		wantSlot   AppState // final state of ota_0
		wantReason string   // rollback reason
		boots      int      // boot count when settled
	}{
		{"crash on boot rolls back", CrashOnBoot, StateAborted, "aborted", 3},
		{"unstable marks itself invalid", Unstable, StateInvalid, "invalid", 3},
		{"no network: watchdog, then rollback", NoNetwork, StateAborted, "aborted", 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ev simtest.EventLog
			cfg := simtest.Config(Seed)
			cfg.Behaviours = map[string]Behaviour{"1.0.1": c.behaviour}
			cfg.Extensions = true
			cfg.OnEvent = ev.Add
			d := simtest.Start(t, cfg)
			simtest.Push(t, d, "1.0.1")
			st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s State) bool { return s.Rollbacks == 1 && s.Up })
			if err != nil {
				t.Fatal(err)
			}
			if st.Version != "1.0.0" || st.Running != "factory" || st.Boot != "factory" {
				t.Errorf("after rollback: running %s %s, boot %s", st.Running, st.Version, st.Boot)
			}
			if s := simtest.Slot(st, "ota_0"); s.State != c.wantSlot || s.Version != "1.0.1" {
				t.Errorf("ota_0: %+v, want state %s", s, c.wantSlot)
			}
			if st.BootCount != c.boots {
				t.Errorf("boots: %d, want %d", st.BootCount, c.boots)
			}
			ev.WaitCount(t, EventRollback, 1)
			e, ok := ev.Find(EventRollback)
			if !ok || e.From != "1.0.1" || e.Version != "1.0.0" || e.Reason != c.wantReason {
				t.Errorf("rollback event: %+v", e)
			}
			// The device took the upload (200) but runs the old version:
			// /ota/status says so.
			code, body, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/ota/status")
			if err != nil || code != 200 || !contains(body, `"version":"1.0.0"`) {
				t.Errorf("ota/status: %d %s %v", code, body, err)
			}
		})
	}
}

func TestNoNetworkNeverAnswers(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Behaviours = map[string]Behaviour{"1.0.1": NoNetwork}
	cfg.Timing.WatchdogAfter = time.Hour
	d := simtest.Start(t, cfg)
	simtest.Push(t, d, "1.0.1")
	st, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s State) bool { return s.BootCount == 2 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Up || st.Version != "1.0.1" || st.AppState != StatePendingVerify {
		t.Errorf("hanging image: up %v version %s state %s", st.Up, st.Version, st.AppState)
	}
	if got := simtest.ProbeTCP(d.OTAAddr(), 300*time.Millisecond); got != simtest.SilentOrRefused {
		t.Errorf("a hanging device: %s, want %s", got, simtest.SilentOrRefused)
	}
}

func TestUnconfirmedStaysPendingAndRollsBackOnReset(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Behaviours = map[string]Behaviour{"1.0.1": Unconfirmed}
	d := simtest.Start(t, cfg)
	simtest.Push(t, d, "1.0.1")
	st, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s State) bool { return s.Up && s.Version == "1.0.1" })
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * cfg.Timing.ValidAfter) // the window passes without a mark
	if st = d.State(); st.AppState != StatePendingVerify {
		t.Fatalf("state %s, want pending_verify", st.AppState)
	}
	r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, simtest.Image(t, "1.0.2"))
	if r.Status != 500 || r.Body != "OTA begin failed" {
		t.Errorf("upload while unconfirmed: %d %q", r.Status, r.Body)
	}
	d.Reboot()
	st, err = d.WaitState(simtest.Ctx(t, 5*time.Second), func(s State) bool { return s.Up && s.Rollbacks == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.0.0" || simtest.Slot(st, "ota_0").State != StateAborted {
		t.Errorf("after reset: %s, ota_0 %s", st.Version, simtest.Slot(st, "ota_0").State)
	}
}

// TestRollbackToPreviousOTA: a valid 1.0.1 in ota_0, then a crashing 1.0.2
// in ota_1 → back to ota_0, not to the factory image.
func TestRollbackToPreviousOTA(t *testing.T) {
	cfg := simtest.Config(Seed)
	d := simtest.Start(t, cfg)
	simtest.Push(t, d, "1.0.1")
	if _, err := d.WaitVersion(simtest.Ctx(t, 5*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := d.SetBehaviour("1.0.2", CrashOnBoot); err != nil {
		t.Fatal(err)
	}
	simtest.Push(t, d, "1.0.2")
	st, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s State) bool { return s.Up && s.Rollbacks == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Running != "ota_0" || st.Version != "1.0.1" || st.AppState != StateValid || simtest.Slot(st, "ota_1").State != StateAborted {
		t.Errorf("after rollback: %s %s %s, ota_1 %s", st.Running, st.Version, st.AppState, simtest.Slot(st, "ota_1").State)
	}
	// The next update goes to the aborted slot again and works.
	simtest.Push(t, d, "1.0.3")
	if st, err = d.WaitVersion(simtest.Ctx(t, 5*time.Second), "1.0.3"); err != nil || st.Running != "ota_1" {
		t.Fatalf("%v %s", err, st.Running)
	}
}

func TestFactoryCrashIsBootLoop(t *testing.T) {
	var ev simtest.EventLog
	cfg := simtest.Config(Seed)
	cfg.OnEvent = ev.Add
	cfg.Behaviours = map[string]Behaviour{"1.0.0": CrashOnBoot}
	d := simtest.Start(t, cfg)
	d.Reboot() // the factory image is not pending: nothing to roll back to
	st, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s State) bool { return s.Phase == PhaseDown })
	if err != nil {
		t.Fatal(err)
	}
	if st.DownReason != "boot_loop" {
		t.Errorf("down reason %q", st.DownReason)
	}
	ev.WaitCount(t, EventDown, 1)
}

func TestStartWaitCloseContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := simtest.Config(OTS)
	cfg.Timing = simtest.Timing()
	d, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitUp(simtest.Ctx(t, time.Second)); err != nil {
		t.Fatal(err)
	}
	cancel() // ending the start context stops the device
	select {
	case <-d.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("device still running after its context ended")
	}
	if _, err := d.WaitState(simtest.Ctx(t, time.Second), func(s State) bool { return s.Up }); err != ErrClosed {
		t.Errorf("wait on a closed device: %v", err)
	}
	d.Close()
	d.Close()
}

func contains(s, sub string) bool { return len(sub) == 0 || indexOf(s, sub) >= 0 }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
