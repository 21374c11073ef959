package sim

import (
	"context"
	"testing"
	"time"
)

func TestParseBehaviourSpec(t *testing.T) {
	good := []struct {
		in      string
		version string
		b       Behaviour
	}{
		{"1.0.2=crash-on-boot", "1.0.2", CrashOnBoot},
		{" 2.0.0 = Unstable ", "2.0.0", Unstable},
		{"v3=no-network", "v3", NoNetwork},
		{"1.0=unconfirmed", "1.0", Unconfirmed},
		{"1.0=healthy", "1.0", Healthy},
		{"1.0=", "1.0", Healthy},
	}
	for _, c := range good {
		v, b, err := ParseBehaviourSpec(c.in)
		if err != nil || v != c.version || b != c.b {
			t.Errorf("%q: %q %q %v", c.in, v, b, err)
		}
	}
	for _, in := range []string{"", "crash-on-boot", "=crash-on-boot", "1.0=explode", "1.0"} {
		if _, _, err := ParseBehaviourSpec(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	if _, err := ParseBehaviourSpecs([]string{"1=unstable", "1=healthy"}); err == nil {
		t.Error("duplicate version accepted")
	}
	m, err := ParseBehaviourSpecs([]string{"1=unstable", "2=no-network"})
	if err != nil || m["1"] != Unstable || m["2"] != NoNetwork {
		t.Errorf("%v %v", m, err)
	}
}

// push uploads version to d over HTTP and expects the 200.
func push(t *testing.T, d *Device, version string) {
	t.Helper()
	s, b, err := postGo(t, "http://"+d.OTAAddr()+"/update", testImage(t, version), nil)
	if err != nil || s != 200 {
		t.Fatalf("upload %s: %d %q %v", version, s, b, err)
	}
}

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
			var ev eventLog
			cfg := testConfig(Seed)
			cfg.Behaviours = map[string]Behaviour{"1.0.1": c.behaviour}
			cfg.Extensions = true
			cfg.OnEvent = ev.add
			d := startDevice(t, cfg)
			push(t, d, "1.0.1")
			st, err := d.WaitState(ctxFor(t, 10*time.Second), func(s State) bool { return s.Rollbacks == 1 && s.Up })
			if err != nil {
				t.Fatal(err)
			}
			if st.Version != "1.0.0" || st.Running != "factory" || st.Boot != "factory" {
				t.Errorf("after rollback: running %s %s, boot %s", st.Running, st.Version, st.Boot)
			}
			if s := slot(st, "ota_0"); s.State != c.wantSlot || s.Version != "1.0.1" {
				t.Errorf("ota_0: %+v, want state %s", s, c.wantSlot)
			}
			if st.BootCount != c.boots {
				t.Errorf("boots: %d, want %d", st.BootCount, c.boots)
			}
			ev.waitCount(t, EventRollback, 1)
			e, ok := ev.find(EventRollback)
			if !ok || e.From != "1.0.1" || e.Version != "1.0.0" || e.Reason != c.wantReason {
				t.Errorf("rollback event: %+v", e)
			}
			// The device took the upload (200) but runs the old version:
			// /ota/status says so.
			code, body, err := getGo(t, "http://"+d.OTAAddr()+"/ota/status")
			if err != nil || code != 200 || !contains(body, `"version":"1.0.0"`) {
				t.Errorf("ota/status: %d %s %v", code, body, err)
			}
		})
	}
}

func TestNoNetworkNeverAnswers(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Behaviours = map[string]Behaviour{"1.0.1": NoNetwork}
	cfg.Timing.WatchdogAfter = time.Hour
	d := startDevice(t, cfg)
	push(t, d, "1.0.1")
	st, err := d.WaitState(ctxFor(t, 5*time.Second), func(s State) bool { return s.BootCount == 2 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Up || st.Version != "1.0.1" || st.AppState != StatePendingVerify {
		t.Errorf("hanging image: up %v version %s state %s", st.Up, st.Version, st.AppState)
	}
	if got := probeTCP(d.OTAAddr(), 300*time.Millisecond); got != silentOrRefused {
		t.Errorf("a hanging device: %s, want %s", got, silentOrRefused)
	}
}

func TestUnconfirmedStaysPendingAndRollsBackOnReset(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Behaviours = map[string]Behaviour{"1.0.1": Unconfirmed}
	d := startDevice(t, cfg)
	push(t, d, "1.0.1")
	st, err := d.WaitState(ctxFor(t, 5*time.Second), func(s State) bool { return s.Up && s.Version == "1.0.1" })
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * cfg.Timing.ValidAfter) // the window passes without a mark
	if st = d.State(); st.AppState != StatePendingVerify {
		t.Fatalf("state %s, want pending_verify", st.AppState)
	}
	r := rawPost(t, d.OTAAddr(), "POST", "/update", nil, testImage(t, "1.0.2"))
	if r.status != 500 || r.body != "OTA begin failed" {
		t.Errorf("upload while unconfirmed: %d %q", r.status, r.body)
	}
	d.Reboot()
	st, err = d.WaitState(ctxFor(t, 5*time.Second), func(s State) bool { return s.Up && s.Rollbacks == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.0.0" || slot(st, "ota_0").State != StateAborted {
		t.Errorf("after reset: %s, ota_0 %s", st.Version, slot(st, "ota_0").State)
	}
}

// TestRollbackToPreviousOTA: a valid 1.0.1 in ota_0, then a crashing 1.0.2
// in ota_1 → back to ota_0, not to the factory image.
func TestRollbackToPreviousOTA(t *testing.T) {
	cfg := testConfig(Seed)
	d := startDevice(t, cfg)
	push(t, d, "1.0.1")
	if _, err := d.WaitVersion(ctxFor(t, 5*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := d.SetBehaviour("1.0.2", CrashOnBoot); err != nil {
		t.Fatal(err)
	}
	push(t, d, "1.0.2")
	st, err := d.WaitState(ctxFor(t, 5*time.Second), func(s State) bool { return s.Up && s.Rollbacks == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Running != "ota_0" || st.Version != "1.0.1" || st.AppState != StateValid || slot(st, "ota_1").State != StateAborted {
		t.Errorf("after rollback: %s %s %s, ota_1 %s", st.Running, st.Version, st.AppState, slot(st, "ota_1").State)
	}
	// The next update goes to the aborted slot again and works.
	push(t, d, "1.0.3")
	if st, err = d.WaitVersion(ctxFor(t, 5*time.Second), "1.0.3"); err != nil || st.Running != "ota_1" {
		t.Fatalf("%v %s", err, st.Running)
	}
}

func TestFactoryCrashIsBootLoop(t *testing.T) {
	var ev eventLog
	cfg := testConfig(Seed)
	cfg.OnEvent = ev.add
	cfg.Behaviours = map[string]Behaviour{"1.0.0": CrashOnBoot}
	d := startDevice(t, cfg)
	d.Reboot() // the factory image is not pending: nothing to roll back to
	st, err := d.WaitState(ctxFor(t, 5*time.Second), func(s State) bool { return s.Phase == PhaseDown })
	if err != nil {
		t.Fatal(err)
	}
	if st.DownReason != "boot_loop" {
		t.Errorf("down reason %q", st.DownReason)
	}
	ev.waitCount(t, EventDown, 1)
}

func TestStartWaitCloseContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := testConfig(OTS)
	cfg.Timing = testTiming()
	d, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitUp(ctxFor(t, time.Second)); err != nil {
		t.Fatal(err)
	}
	cancel() // ending the start context stops the device
	select {
	case <-d.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("device still running after its context ended")
	}
	if _, err := d.WaitState(ctxFor(t, time.Second), func(s State) bool { return s.Up }); err != ErrClosed {
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
