package upload

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
)

// fakeFleet is a world of fake devices: a Transport that answers from a
// per-device script and an Observer that shows each device's state, with
// a reboot (silence, then the new or old version) after an accepted upload.
type fakeFleet struct {
	mu      sync.Mutex
	devs    map[string]*fakeDev
	active  atomic.Int32
	maxSeen atomic.Int32
	hold    time.Duration // how long each Send takes
}

type fakeDev struct {
	facts   Facts   // what it tells while up
	script  []error // answers to successive sends; nil = accept; past the end: accept
	sends   int
	next    string // version after the accepted upload's reboot
	nextSt  string // its state once back
	downFor int    // observations of silence after an accepted upload
	down    int
	back    bool // false: never comes back
	rollTo  string
	hidden  bool // tells no version
	stays   bool // accepts, but never restarts
}

func newFakeFleet() *fakeFleet { return &fakeFleet{devs: map[string]*fakeDev{}} }

func (f *fakeFleet) add(host string, d *fakeDev) Target {
	if d.facts.Version == "" && d.facts.Project == "" {
		// It tells its uptime, so a restart shows as the uptime falling.
		d.facts = Facts{Answered: true, Version: "1.0.0", Project: "proj", Chip: "esp32s3", State: "valid", VersionSource: "/ota/status",
			Uptime: time.Hour, UptimeKnown: true}
	}
	d.back = true
	if d.downFor == 0 {
		d.downFor = 2
	}
	f.devs[host] = d
	return Target{Name: host, Host: host, Protocol: HTTP}
}

func (f *fakeFleet) Protocol() Protocol { return HTTP }

// Traits: the fake devices, like HTTP ones, take app images only.
func (f *fakeFleet) Traits() Traits {
	return Traits{NoFilesystem: "the fake devices take no filesystem image"}
}

func (f *fakeFleet) Send(ctx context.Context, t Target, fw *Firmware, _ Credentials, emit Emit) error {
	emit(Event{Phase: PhaseConnecting, Total: fw.Size()})
	n := f.active.Add(1)
	defer f.active.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	if !sleepCtx(ctx, f.hold) {
		return &DeviceError{Class: ClassNetwork, Reason: "cancelled", Err: ctx.Err()}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devs[t.Host]
	i := d.sends
	d.sends++
	emit(Event{Phase: PhaseUploading, Done: fw.Size() / 2, Total: fw.Size()})
	if i < len(d.script) && d.script[i] != nil {
		return d.script[i]
	}
	emit(Event{Phase: PhaseUploading, Done: fw.Size(), Total: fw.Size()})
	v := fw.Image.App.Version
	if d.rollTo != "" {
		v = d.rollTo
	}
	if !d.stays {
		d.next, d.down = v, d.downFor
	}
	return nil
}

func (f *fakeFleet) Observe(_ context.Context, t Target) (Facts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devs[t.Host]
	if d.next != "" {
		if d.down > 0 || !d.back {
			d.down--
			return Facts{Silent: true}, errors.New("silent")
		}
		if d.facts.UptimeKnown {
			d.facts.Uptime = time.Second // it restarted
		}
		if !d.hidden {
			d.facts.Version = d.next
		}
		d.next = ""
		if d.nextSt != "" {
			d.facts.State = d.nextSt
		}
	}
	return d.facts, nil
}

func (f *fakeFleet) sendsTo(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.devs[host].sends
}

func testFirmware(t testing.TB, version string) *Firmware {
	t.Helper()
	data, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "proj", Version: version, Size: 100 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return NewFirmware("fw.bin", data, false)
}

func fastOptions(f *fakeFleet) Options {
	return Options{
		Transports: map[Protocol]Transport{HTTP: f}, Observer: f,
		Retries: 3, Backoff: time.Microsecond, MaxBackoff: time.Millisecond, StabilityWindow: time.Millisecond,
		VerifyTimeout: 5 * time.Second, RebootGrace: 2 * time.Second, PollInterval: time.Millisecond, ProbeTimeout: time.Second, Seed: 1,
	}
}

func devErr(class Class, words string) error {
	return &DeviceError{Class: class, Status: 500, Words: words, Reason: "test"}
}

func TestRunRetriesByClass(t *testing.T) {
	always := func(e error) []error { return []error{e, e, e, e, e, e} }
	cases := []struct {
		class Class
		tries int
	}{
		{ClassAuth, 1},
		{ClassRejected, 1},
		{ClassWriteFailed, 2},
		{ClassBusy, 2},
		{ClassNoConnectBack, 2},
		{ClassNetwork, 4},
		{ClassTimeout, 4},
		{ClassUnreachable, 4},
	}
	for _, c := range cases {
		t.Run(string(c.class), func(t *testing.T) {
			f := newFakeFleet()
			tg := f.add("d1", &fakeDev{script: always(devErr(c.class, "words"))})
			res := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, fastOptions(f))
			if len(res) != 1 {
				t.Fatalf("%d results", len(res))
			}
			r := res[0]
			if r.Tries != c.tries || f.sendsTo("d1") != c.tries {
				t.Errorf("tries %d (sends %d), want %d", r.Tries, f.sendsTo("d1"), c.tries)
			}
			want := OutcomeFailed
			if c.class == ClassUnreachable {
				want = OutcomeUnreachable
			}
			if r.Outcome != want || r.Class != c.class || r.Words != "words" {
				t.Errorf("result %+v", r)
			}
		})
	}
}

func TestRunRetryThenUpdated(t *testing.T) {
	f := newFakeFleet()
	tg := f.add("d1", &fakeDev{script: []error{devErr(ClassNetwork, ""), devErr(ClassWriteFailed, "Write failed")}})
	var events []FleetEvent
	o := fastOptions(f)
	o.OnEvent = func(e FleetEvent) { events = append(events, e) }
	res := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, o)
	r := res[0]
	if r.Outcome != OutcomeUpdated || r.Tries != 3 || r.From != "1.0.0" || r.Running != "1.0.1" || r.Words != "" {
		t.Fatalf("result %+v", r)
	}
	retries := 0
	for _, e := range events {
		if e.Phase == PhaseRetrying {
			retries++
		}
	}
	if retries != 2 || events[len(events)-1].Phase != PhaseDone || events[len(events)-1].Result == nil {
		t.Errorf("%d retry events; last %+v", retries, events[len(events)-1])
	}
}

// TestRunRetryEventsTellMaxTries: a retrying event tells the try it
// failed and the most tries the failure's class allows (Class.Retries),
// within what is left of --retries (3 here).
func TestRunRetryEventsTellMaxTries(t *testing.T) {
	net, wf, busy := devErr(ClassNetwork, ""), devErr(ClassWriteFailed, "Write failed"), devErr(ClassBusy, "OTA begin failed")
	cases := []struct {
		name   string
		script []error
		want   []string // try/max of each retrying event
	}{
		{"write failed", []error{wf, wf, wf}, []string{"1/2"}},
		{"busy", []error{busy, busy}, []string{"1/2"}},
		{"network", []error{net, net, net, net, net}, []string{"1/4", "2/4", "3/4"}},
		// Write failed after a network error: one more try at most; then
		// a network error again has the last of the budget.
		{"network, write failed, network", []error{net, wf, net}, []string{"1/4", "2/3", "3/4"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeFleet()
			tg := f.add("d1", &fakeDev{script: c.script})
			var got []string
			o := fastOptions(f)
			o.OnEvent = func(e FleetEvent) {
				switch {
				case e.Phase == PhaseRetrying:
					got = append(got, fmt.Sprintf("%d/%d", e.Try, e.MaxTries))
				case e.MaxTries != 0:
					t.Errorf("MaxTries %d on a %s event", e.MaxTries, e.Phase)
				}
			}
			Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, o)
			if strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Errorf("retrying events (try/max) %v, want %v", got, c.want)
			}
		})
	}
}

func TestRunBusyWaitsAndSaysWhy(t *testing.T) {
	f := newFakeFleet()
	tg := f.add("d1", &fakeDev{script: []error{devErr(ClassBusy, "OTA begin failed")}})
	var why string
	o := fastOptions(f)
	o.OnEvent = func(e FleetEvent) {
		if e.Phase == PhaseRetrying {
			why = e.Message
		}
	}
	r := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, o)[0]
	if r.Outcome != OutcomeUpdated || r.Tries != 2 {
		t.Fatalf("result %+v", r)
	}
	if want := "pending_verify"; !strings.Contains(why, want) || !strings.Contains(why, "stability window") {
		t.Errorf("retry message %q does not say why", why)
	}
}

func TestRunVerifyOutcomes(t *testing.T) {
	cases := []struct {
		name   string
		dev    fakeDev
		noWait bool
		want   Outcome
		pend   bool
	}{
		{"updated", fakeDev{}, false, OutcomeUpdated, false},
		{"rolled back", fakeDev{rollTo: "1.0.0"}, false, OutcomeRolledBack, false},
		{"pending then stuck", fakeDev{nextSt: "pending_verify"}, false, OutcomeUnverified, false},
		{"pending no-wait-valid", fakeDev{nextSt: "pending_verify"}, true, OutcomeUpdated, true},
		{"no version", fakeDev{hidden: true, facts: Facts{Answered: true, Project: "proj"}}, false, OutcomeUnverified, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeFleet()
			dev := c.dev
			tg := f.add("d1", &dev)
			o := fastOptions(f)
			o.NoWaitValid = c.noWait
			o.VerifyTimeout = 200 * time.Millisecond
			r := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, o)[0]
			if r.Outcome != c.want || r.Pending != c.pend {
				t.Fatalf("outcome %s pending %v (%s), want %s %v", r.Outcome, r.Pending, r.Message, c.want, c.pend)
			}
		})
	}
	t.Run("unchanged", func(t *testing.T) {
		f := newFakeFleet()
		tg := f.add("d1", &fakeDev{stays: true})
		o := fastOptions(f)
		o.RebootGrace = 20 * time.Millisecond
		r := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, o)[0]
		if r.Outcome != OutcomeUnchanged || r.Running != "1.0.0" {
			t.Fatalf("outcome %s running %q (%s)", r.Outcome, r.Running, r.Message)
		}
	})
	t.Run("never back", func(t *testing.T) {
		f := newFakeFleet()
		tg := f.add("d1", &fakeDev{})
		f.devs["d1"].back = false
		o := fastOptions(f)
		o.VerifyTimeout = 100 * time.Millisecond
		r := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, o)[0]
		if r.Outcome != OutcomeUnreachable {
			t.Fatalf("outcome %s (%s)", r.Outcome, r.Message)
		}
	})
}

func TestRunPreflight(t *testing.T) {
	fw := testFirmware(t, "1.0.1")
	cases := []struct {
		name   string
		facts  Facts
		force  bool
		reinst bool
		want   Outcome
	}{
		{"same version", Facts{Answered: true, Version: "1.0.1", Project: "proj"}, false, false, OutcomeSkipped},
		// The same version and no elf: the new image cannot be told from the old.
		{"same version reinstall", Facts{Answered: true, Version: "1.0.1", Project: "proj"}, false, true, OutcomeUnverified},
		{"other chip", Facts{Answered: true, Version: "1.0.0", Chip: "esp32c3"}, false, false, OutcomeRefused},
		{"other project", Facts{Answered: true, Version: "1.0.0", Project: "other"}, false, false, OutcomeRefused},
		{"other project forced", Facts{Answered: true, Version: "1.0.0", Project: "other"}, true, false, OutcomeUpdated},
		{"slot too small", Facts{Answered: true, Version: "1.0.0", SlotSize: 4096, SlotSizeKnown: true}, false, false, OutcomeRefused},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeFleet()
			tg := f.add("d1", &fakeDev{facts: c.facts})
			o := fastOptions(f)
			o.Force, o.Reinstall = c.force, c.reinst
			r := Run(context.Background(), fw, []Target{tg}, o)[0]
			if r.Outcome != c.want {
				t.Fatalf("outcome %s (%s), want %s", r.Outcome, r.Message, c.want)
			}
			if (c.want == OutcomeSkipped || c.want == OutcomeRefused) && f.sendsTo("d1") != 0 {
				t.Errorf("sent %d times to a %s device", f.sendsTo("d1"), c.want)
			}
		})
	}
	t.Run("filesystem over http", func(t *testing.T) {
		f := newFakeFleet()
		tg := f.add("d1", &fakeDev{})
		r := Run(context.Background(), NewFirmware("fs.bin", make([]byte, 4096), true), []Target{tg}, fastOptions(f))[0]
		if r.Outcome != OutcomeRefused || f.sendsTo("d1") != 0 {
			t.Fatalf("outcome %s (%s)", r.Outcome, r.Message)
		}
	})
}

func TestRunCanaryStopsTheRest(t *testing.T) {
	f := newFakeFleet()
	var ts []Target
	for i := range 5 {
		d := &fakeDev{}
		if i == 1 {
			d.rollTo = "1.0.0" // the second canary rolls back
		}
		ts = append(ts, f.add(fmt.Sprintf("d%d", i), d))
	}
	o := fastOptions(f)
	o.Canary = 2
	res := Run(context.Background(), testFirmware(t, "1.0.1"), ts, o)
	want := []Outcome{OutcomeUpdated, OutcomeRolledBack, OutcomeNotStarted, OutcomeNotStarted, OutcomeNotStarted}
	for i, r := range res {
		if r.Outcome != want[i] {
			t.Errorf("device %d: %s (%s), want %s", i, r.Outcome, r.Message, want[i])
		}
		if i >= 2 && f.sendsTo(r.Device) != 0 {
			t.Errorf("device %d was sent to after the canary failed", i)
		}
	}
	if !res[0].Canary || res[2].Canary {
		t.Error("canary flags wrong")
	}
}

func TestRunMaxFailures(t *testing.T) {
	f := newFakeFleet()
	var ts []Target
	for i := range 6 {
		d := &fakeDev{}
		if i < 2 {
			d.script = []error{devErr(ClassAuth, "Invalid credentials")}
		}
		ts = append(ts, f.add(fmt.Sprintf("d%d", i), d))
	}
	o := fastOptions(f)
	o.Parallel = 1
	o.MaxFailures = FailureBudget{Set: true, N: 1}
	res := Run(context.Background(), testFirmware(t, "1.0.1"), ts, o)
	want := []Outcome{OutcomeFailed, OutcomeFailed, OutcomeNotStarted, OutcomeNotStarted, OutcomeNotStarted, OutcomeNotStarted}
	for i, r := range res {
		if r.Outcome != want[i] {
			t.Errorf("device %d: %s (%s), want %s", i, r.Outcome, r.Message, want[i])
		}
	}
	b, err := ParseFailureBudget("20%")
	if err != nil || !b.exceeded(2, 6) || b.exceeded(1, 6) {
		t.Errorf("20%% budget: %+v %v", b, err)
	}
	for _, bad := range []string{"-1", "x", "120%"} {
		if _, err := ParseFailureBudget(bad); err == nil {
			t.Errorf("ParseFailureBudget(%q) accepted", bad)
		}
	}
}

func TestRunDryRunSendsNothing(t *testing.T) {
	f := newFakeFleet()
	ts := []Target{f.add("a", &fakeDev{}), f.add("b", &fakeDev{facts: Facts{Answered: true, Version: "1.0.1"}})}
	o := fastOptions(f)
	o.DryRun = true
	res := Run(context.Background(), testFirmware(t, "1.0.1"), ts, o)
	if res[0].Outcome != OutcomePlanned || res[1].Outcome != OutcomeSkipped {
		t.Fatalf("%s / %s", res[0].Outcome, res[1].Outcome)
	}
	if f.sendsTo("a")+f.sendsTo("b") != 0 {
		t.Fatal("dry run sent an image")
	}
}

func TestRunMergesAndBoundsParallel(t *testing.T) {
	f := newFakeFleet()
	f.hold = 5 * time.Millisecond
	var ts []Target
	for i := range 12 {
		ts = append(ts, f.add(fmt.Sprintf("10.0.0.%d", i+1), &fakeDev{}))
	}
	ts = append(ts, Target{Host: "10.0.0.1", Port: 3232, Protocol: HTTP}) // a duplicate
	o := fastOptions(f)
	o.Parallel = 3
	res := Run(context.Background(), testFirmware(t, "1.0.1"), ts, o)
	if len(res) != 12 {
		t.Fatalf("%d results, want 12 (duplicate merged)", len(res))
	}
	if m := f.maxSeen.Load(); m > 3 || m < 2 {
		t.Errorf("max %d concurrent uploads, want ≤ 3", m)
	}
	if got := Merge([]Target{{Host: "A.local"}, {Host: "a.local", Port: 3232}, {Host: "a.local", Port: 8266}}); len(got) != 2 {
		t.Errorf("Merge: %v", got)
	}
}

func TestRunInterruptKeepsResults(t *testing.T) {
	f := newFakeFleet()
	f.hold = time.Hour
	var ts []Target
	for i := range 4 {
		ts = append(ts, f.add(fmt.Sprintf("d%d", i), &fakeDev{}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := fastOptions(f)
	o.Parallel = 2
	started := make(chan struct{}, 4)
	o.OnEvent = func(e FleetEvent) {
		if e.Phase == PhaseConnecting {
			started <- struct{}{}
		}
	}
	fl := Start(ctx, testFirmware(t, "1.0.1"), ts, o)
	go func() {
		for range fl.Events() {
		}
	}()
	<-started
	<-started
	cancel()
	res := fl.Results()
	want := []Outcome{OutcomeCancelled, OutcomeCancelled, OutcomeNotStarted, OutcomeNotStarted}
	for i, r := range res {
		if r.Outcome != want[i] {
			t.Errorf("device %d: %s (%s), want %s", i, r.Outcome, r.Message, want[i])
		}
	}
}

func TestBackoffGrowsWithJitter(t *testing.T) {
	f := newFakeFleet()
	o := fastOptions(f)
	o.Backoff, o.MaxBackoff = time.Second, 8*time.Second
	r := &runner{opts: o.withDefaults()}
	r.rnd = newRand(1)
	for n, lo := range map[int]time.Duration{1: 500 * time.Millisecond, 2: time.Second, 3: 2 * time.Second, 6: 4 * time.Second} {
		d := r.backoff(n)
		if d < lo || d > 2*lo {
			t.Errorf("backoff(%d) = %v, want in [%v, %v]", n, d, lo, 2*lo)
		}
	}
}

// TestRunArduinoSizeWarning: an image over arduino-esp32's default 1.25 MiB
// app slot for an ArduinoOTA device (TXT board) is sent with a warning.
func TestRunArduinoSizeWarning(t *testing.T) {
	data, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "proj", Version: "1.0.1", Size: 1_400_000})
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeFleet()
	tg := f.add("d1", &fakeDev{facts: Facts{Answered: true, Version: "1.0.0", Project: "proj", Board: "esp32s3"}})
	var warned string
	o := fastOptions(f)
	o.OnEvent = func(e FleetEvent) {
		if strings.HasPrefix(e.Message, "warning: ") {
			warned = e.Message
		}
	}
	r := Run(context.Background(), NewFirmware("big.bin", data, false), []Target{tg}, o)[0]
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "1.25 MiB") || !strings.Contains(warned, "1.25 MiB") {
		t.Fatalf("warnings %q, event %q", r.Warnings, warned)
	}
	if r.Outcome != OutcomeUpdated || f.sendsTo("d1") != 1 {
		t.Errorf("%s after %d sends", r.Outcome, f.sendsTo("d1"))
	}
}
