package rollout

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/upload"
)

type rig struct {
	t      *testing.T
	dir    string
	f      *fakeFamily
	devs   []Device
	cfg    Config
	mu     sync.Mutex
	events []upload.FleetEvent
	waves  []WaveEvent
	// between runs between an interrupted run and its resumption
	between func()
}

// newRig writes an image and its -minimal companion, creates the state
// and a Config with short windows and generous bounds.
func newRig(t *testing.T, plan Plan, bs ...behaviour) *rig {
	t.Helper()
	return newRigWith(t, plan, nil, bs...)
}

// newRigWith is newRig, prep changing the devices before the state is
// created.
func newRigWith(t *testing.T, plan Plan, prep func([]Device), bs ...behaviour) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir()}
	r.f, r.devs = newFake(t, bs...)
	if prep != nil {
		prep(r.devs)
	}
	img := filepath.Join(r.dir, "fw.bin")
	data := make([]byte, 40<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "fw-minimal.bin"), data[:8<<10], 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := CreateState(filepath.Join(r.dir, "state"), Meta{Family: "fake", Firmware: img, Expect: "14.3.0", Plan: plan,
		ServeAddr: "127.0.0.1:0", Broker: "mqtts://user:hunter2@broker.example:8883", ClientID: "ots-ota-test", Devices: r.devs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r.cfg = Config{Family: r.f, Devices: r.devs, Plan: plan, Expect: "14.3.0", ImagePath: img,
		Serve: fileserve.Config{Addr: "127.0.0.1:0"}, MaxFetches: 3, Retries: 1,
		Timeout: 2 * time.Second, RebootWindow: 400 * time.Millisecond, Stability: 150 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, State: st, OnEvent: r.onEvent, OnWave: r.onWave}
	return r
}

func (r *rig) onEvent(e upload.FleetEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *rig) onWave(w WaveEvent) {
	r.mu.Lock()
	r.waves = append(r.waves, w)
	r.mu.Unlock()
}

func (r *rig) run(ctx context.Context) []upload.Result {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	res, err := Run(ctx, r.cfg)
	if err != nil {
		r.t.Fatalf("Run: %v", err)
	}
	if len(res) != len(r.devs) {
		r.t.Fatalf("%d results for %d devices", len(res), len(r.devs))
	}
	return res
}

func TestRunVerdicts(t *testing.T) {
	bs := []behaviour{succeed, failThenSucceed, failAlways, rollback, neverBack, twoStep, silentUpdate, hang, noPreflight, current, wrongChip}
	want := []struct {
		outcome upload.Outcome
		cmds    int
		source  string
	}{
		{upload.OutcomeUpdated, 1, "INFO1"},
		{upload.OutcomeUpdated, 2, "INFO1"},
		{upload.OutcomeFailed, 2, ""},
		{upload.OutcomeRolledBack, 1, "INFO1"},
		{upload.OutcomeUnreachable, 1, ""},
		{upload.OutcomeUpdated, 1, "INFO1"},
		{upload.OutcomeUpdated, 1, "Status 2"},
		{upload.OutcomeUnchanged, 1, "Status 2"},
		{upload.OutcomeUnreachable, 0, ""},
		{upload.OutcomeSkipped, 0, ""},
		{upload.OutcomeRefused, 0, ""},
	}
	r := newRig(t, Plan{MaxFailures: upload.FailureBudget{Set: true, Percent: 100}}, bs...)
	// The state file says commanded before the device takes the command.
	var stateErrs []string
	var serrMu sync.Mutex
	r.f.beforeCommand = func(topic string, n int) {
		rec, err := Read(filepath.Join(r.dir, "state"), r.cfg.State.ID())
		ok := false
		for _, d := range rec.Devices {
			ok = ok || d.Topic == topic && d.Phase == PhaseCommanded && len(d.Commands) == n
		}
		if err != nil || !ok {
			serrMu.Lock()
			stateErrs = append(stateErrs, topic)
			serrMu.Unlock()
		}
	}
	res := r.run(context.Background())
	if len(stateErrs) > 0 {
		t.Errorf("commanded before the state file said so: %v", stateErrs)
	}
	for i, w := range want {
		got := res[i]
		if got.Outcome != w.outcome || got.Tries != w.cmds || got.VersionSource != w.source {
			t.Errorf("%s (behaviour %d): %s tries %d source %q (%s), want %s tries %d source %q", got.Device, bs[i], got.Outcome, got.Tries, got.VersionSource, got.Message, w.outcome, w.cmds, w.source)
		}
		if c := r.f.commands(r.devs[i].Topic); c != w.cmds {
			t.Errorf("%s: the device took %d commands, want %d", got.Device, c, w.cmds)
		}
		if got.Protocol != "fake" || got.Addr != r.devs[i].Topic || got.To != "14.3.0" {
			t.Errorf("%s: protocol %q addr %q to %q", got.Device, got.Protocol, got.Addr, got.To)
		}
		// As push shows a Tasmota device: releases, not the whole Version
		// ("14.2.0(tasmota)").
		if w.cmds > 0 && got.From != "14.2.0" {
			t.Errorf("%s: from %q, want 14.2.0", got.Device, got.From)
		}
		if w.outcome == upload.OutcomeUpdated && got.Running != "14.3.0" {
			t.Errorf("%s: running %q, want 14.3.0", got.Device, got.Running)
		}
	}
	// Bytes and rate: the device's last fetch of the image (a two-step's
	// full image, not its loader's), unknown where nothing was fetched.
	for i, b := range bs {
		got := res[i]
		switch b {
		case succeed, failThenSucceed, rollback, neverBack, twoStep, silentUpdate:
			// A rate only from a fetch long enough to measure (on loopback
			// the 40 KiB go to socket buffers at once: mostly unknown).
			if got.Bytes == nil || *got.Bytes != 40<<10 || got.Rate < 0 || got.Rate > float64(40<<10)/minRateSpan.Seconds() {
				t.Errorf("%s (behaviour %d): bytes %s rate %v, want the image's %d, a rate unknown or from a fetch of %v or more", got.Device, b, fmtBytes(got.Bytes), got.Rate, 40<<10, minRateSpan)
			}
		default:
			if got.Bytes != nil || got.Rate != 0 {
				t.Errorf("%s (behaviour %d): bytes told %v rate %v, want unknown (nothing fetched)", got.Device, b, got.Bytes != nil, got.Rate)
			}
		}
	}
	if res[2].Words == "" || res[2].Class != upload.ClassNetwork {
		t.Errorf("failed device: words %q class %q", res[2].Words, res[2].Class)
	}
	// The old OTA URL goes back where the device is online at its end,
	// never to one that is offline.
	r.f.mu.Lock()
	for i, b := range bs {
		n := len(r.f.restores[r.devs[i].Topic])
		wantRestore := want[i].cmds > 0 && b != neverBack
		if wantRestore != (n == 1) {
			t.Errorf("%s: %d restores, want restore %v", r.devs[i].Topic, n, wantRestore)
		}
	}
	if r.f.maxInflight > r.cfg.MaxFetches {
		t.Errorf("%d devices fetching at once, --max-fetches %d", r.f.maxInflight, r.cfg.MaxFetches)
	}
	// Every device fetched what it was told, from the one token.
	tok := ""
	for _, d := range r.f.devs {
		for _, u := range d.urls {
			parts := strings.Split(u, "/")
			if tok == "" {
				tok = parts[3]
			}
			if parts[3] != tok || len(u) > fileserve.MaxURLLen {
				t.Errorf("URL %q: another token or too long", u)
			}
		}
		for _, f := range d.fetched {
			if !strings.HasSuffix(f, " true") {
				t.Errorf("%s: fetch %s failed", d.topic, f)
			}
		}
	}
	r.f.mu.Unlock()
	if !strings.Contains(res[4].Warnings[0], "offline") {
		t.Errorf("never-back device: warnings %q", res[4].Warnings)
	}

	// Progress: the phases of the plain device, with the fetch's bytes.
	var phases []upload.Phase
	var fetched int64
	for _, e := range r.events {
		if e.Key != r.devs[0].Topic {
			continue
		}
		if len(phases) == 0 || phases[len(phases)-1] != e.Phase {
			phases = append(phases, e.Phase)
		}
		if e.Phase == upload.PhaseUploading && e.Done > 0 {
			fetched = e.Done
		}
		if e.Phase == upload.PhaseDone && (e.Result == nil || e.Result.Outcome != upload.OutcomeUpdated) {
			t.Errorf("done event without the result: %+v", e)
		}
	}
	for _, p := range []upload.Phase{upload.PhaseChecking, upload.PhaseConnecting, upload.PhaseUploading, upload.PhaseRebooting, upload.PhaseVerifying, upload.PhaseDone} {
		if !slices.Contains(phases, p) {
			t.Errorf("phases %v lack %s", phases, p)
		}
	}
	if fetched != 40<<10 {
		t.Errorf("byte progress %d, want the image's %d", fetched, 40<<10)
	}

	// The state: finished, every device done, no secret, private.
	rec := r.cfg.State.Record()
	if !rec.Finished {
		t.Errorf("state not finished")
	}
	for _, d := range rec.Devices {
		if d.Phase != PhaseDone || d.Result == nil {
			t.Errorf("%s: phase %s result %v", d.Topic, d.Phase, d.Result)
		}
	}
	b, err := os.ReadFile(r.cfg.State.Path())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "hunter2") || strings.Contains(string(b), "user@") {
		t.Errorf("the state file holds the broker's userinfo")
	}
	if rec.Broker != "mqtts://broker.example:8883" || rec.Serve.Token == "" {
		t.Errorf("broker %q token %q", rec.Broker, rec.Serve.Token)
	}
	if st, _ := os.Stat(r.cfg.State.Path()); runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", st.Mode().Perm())
	}
}

// At most MaxFetches devices are commanded and fetching at once: a
// two-step device keeps its slot from its command to the end of its
// second fetch, after its loader booted.
// An ESP8266's failure: its words quoted alone, then what the file server
// saw of its fetches, the name it really asked for included.
func TestFailedVerdictTellsWhatTheServerSaw(t *testing.T) {
	r := newRig(t, Plan{MaxFailures: upload.FailureBudget{Set: true, Percent: 100}}, gzFallback)
	res := r.run(context.Background())
	got := res[0]
	if got.Outcome != upload.OutcomeFailed || got.Words != "Failed File Not Found (404)" {
		t.Fatalf("outcome %s words %q, want failed with the device's words alone", got.Outcome, got.Words)
	}
	want := `"Failed File Not Found (404)"; the file server saw it fetch fw.bin (sent whole), then fetch fw-minimal.bin (sent whole), then ask 2 times for fw-minimal.bin.gz, which is not served`
	if !strings.Contains(got.Message, want) {
		t.Fatalf("message %q\nwant it to hold %q", got.Message, want)
	}
}

func TestMaxFetches(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := newRig(t, Plan{}, twoStep, succeed, twoStep, succeed, succeed, twoStep, succeed)
			r.cfg.MaxFetches = n
			r.f.step = 30 * time.Millisecond
			for _, res := range r.run(context.Background()) {
				if res.Outcome != upload.OutcomeUpdated {
					t.Errorf("%s: %s (%s)", res.Device, res.Outcome, res.Message)
				}
			}
			if r.f.maxInflight > n || r.f.maxInflight < 1 {
				t.Errorf("%d devices fetching at once, --max-fetches %d", r.f.maxInflight, n)
			}
		})
	}
}

func TestGatesLeaveNotStarted(t *testing.T) {
	n := func(k int) upload.FailureBudget { return upload.FailureBudget{Set: true, N: k} }
	cases := []struct {
		name    string
		plan    Plan
		bs      []behaviour
		want    []upload.Outcome
		stopped string // a word of the reason; "" = ran to the end
		waves   []string
	}{
		{"canary rolled back", Plan{Canary: 1, Waves: steps("100%"), MaxFailures: n(5)},
			[]behaviour{rollback, succeed, succeed},
			[]upload.Outcome{upload.OutcomeRolledBack, upload.OutcomeNotStarted, upload.OutcomeNotStarted}, "canary dev0 ended rolled-back",
			[]string{"0 started", "0 stopped"}},
		{"a wave over its budget", Plan{Canary: 1, Waves: steps("2,100%")},
			[]behaviour{succeed, failAlways, succeed, succeed},
			[]upload.Outcome{upload.OutcomeUpdated, upload.OutcomeFailed, upload.OutcomeUpdated, upload.OutcomeNotStarted}, "1 of its 2 devices failed",
			[]string{"0 started", "0 passed", "1 started", "1 stopped"}},
		{"within the budget", Plan{Canary: 1, Waves: steps("2,100%"), MaxFailures: n(1)},
			[]behaviour{succeed, failAlways, succeed, succeed},
			[]upload.Outcome{upload.OutcomeUpdated, upload.OutcomeFailed, upload.OutcomeUpdated, upload.OutcomeUpdated}, "",
			[]string{"0 started", "0 passed", "1 started", "1 passed", "2 started", "2 passed"}},
		{"the rollout over its budget", Plan{Waves: steps("1,2,100%"), MaxFailures: n(1)},
			[]behaviour{noPreflight, wrongChip, succeed},
			[]upload.Outcome{upload.OutcomeUnreachable, upload.OutcomeRefused, upload.OutcomeNotStarted}, "2 of its 3",
			[]string{"0 started", "0 passed", "1 started", "1 stopped"}},
		{"a canary that already runs the target took no image", Plan{Canary: 1, MaxFailures: n(5)},
			[]behaviour{current, succeed, succeed},
			[]upload.Outcome{upload.OutcomeSkipped, upload.OutcomeNotStarted, upload.OutcomeNotStarted}, "at least one must end updated",
			[]string{"0 started", "0 stopped"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.plan, c.bs...)
			res := r.run(context.Background())
			for i, w := range c.want {
				if res[i].Outcome != w {
					t.Errorf("%s: %s (%s), want %s", res[i].Device, res[i].Outcome, res[i].Message, w)
				}
				if w == upload.OutcomeNotStarted {
					// Nothing said twice: the outcome says "not started", the
					// rollout's reason not "the rollout" again.
					if r.f.commands(r.devs[i].Topic) != 0 || !strings.Contains(res[i].Message, c.stopped) ||
						strings.HasPrefix(res[i].Message, "not started") || strings.Count(res[i].Message, "the rollout") != 1 {
						t.Errorf("%s: commanded %d, message %q", res[i].Device, r.f.commands(r.devs[i].Topic), res[i].Message)
					}
				}
			}
			var ws []string
			for _, w := range r.waves {
				ws = append(ws, strings.Join([]string{string(rune('0' + w.Index)), w.State}, " "))
				// The wave's name is the event's: not in its reason again.
				if w.State == "stopped" && (!strings.Contains(w.Reason, c.stopped) || strings.HasPrefix(w.Reason, fmt.Sprintf("wave %d of %d", w.Index+1, w.Of))) {
					t.Errorf("stopped wave's reason %q", w.Reason)
				}
			}
			if !slices.Equal(ws, c.waves) {
				t.Errorf("waves %v, want %v", ws, c.waves)
			}
			rec := r.cfg.State.Record()
			if !rec.Finished || (c.stopped != "") != (rec.Stopped != "") {
				t.Errorf("finished %v stopped %q", rec.Finished, rec.Stopped)
			}
		})
	}
}

func TestURLTooLongStopsBeforeAnything(t *testing.T) {
	r := newRig(t, Plan{}, succeed)
	r.cfg.PublicURL = "https://a-rather-long-reverse-proxy-host-name.example.org/ota/firmware/files"
	_, err := Run(context.Background(), r.cfg)
	if err == nil || !strings.Contains(err.Error(), "characters") {
		t.Fatalf("Run = %v, want the URL refused", err)
	}
	if r.f.commands(r.devs[0].Topic) != 0 || r.f.watches != 0 {
		t.Errorf("commanded or watched before refusing the URL")
	}
	r.cfg.PublicURL = "ftp://host/x"
	if _, err := Run(context.Background(), r.cfg); err == nil {
		t.Errorf("an ftp public URL accepted")
	}
	// A short public URL is what devices are told.
	r.cfg.PublicURL = "http://127.0.0.1:9/ota/"
	res, err := Run(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.f.mu.Lock()
	u := r.f.devs[r.devs[0].Topic].urls
	r.f.mu.Unlock()
	for _, u := range u {
		if !strings.HasPrefix(u, "http://127.0.0.1:9/ota/") || !strings.HasSuffix(u, "/fw.bin") || len(u) > fileserve.MaxURLLen {
			t.Errorf("told %q", u)
		}
	}
	if len(u) == 0 {
		t.Errorf("never commanded")
	}
	if res[0].Outcome == upload.OutcomeUpdated {
		t.Errorf("updated though the public URL leads nowhere: %+v", res[0])
	}
}

// A resumed rollout serves the bytes its devices were told about: an image
// changed since is refused before anything is published.
func TestResumeRefusesAChangedImage(t *testing.T) {
	r := newRig(t, Plan{}, succeed)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := r.run(ctx)
	if res[0].Outcome != upload.OutcomeNotStarted || r.f.commands(r.devs[0].Topic) != 0 {
		t.Fatalf("a cancelled run started a device: %+v", res[0])
	}
	if rec := r.cfg.State.Record(); rec.Finished || len(rec.Firmware.SHA256) != 64 {
		t.Fatalf("state after a cancelled run: finished %v sha %q", rec.Finished, rec.Firmware.SHA256)
	}
	if err := os.WriteFile(r.cfg.ImagePath, []byte("other bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	watches := r.f.watches
	if _, err := Run(context.Background(), r.cfg); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("Run with a changed image: %v", err)
	}
	if r.f.watches != watches || r.f.commands(r.devs[0].Topic) != 0 {
		t.Errorf("watched or commanded with a changed image")
	}
}

// A failure budget stops the rollout inside a wave, the default single
// wave included: devices not yet commanded when it is exceeded end
// not-started, left pending in the state, and are never commanded.
func TestBudgetStopsInsideAWave(t *testing.T) {
	n := func(k int) upload.FailureBudget { return upload.FailureBudget{Set: true, N: k} }
	cases := []struct {
		name    string
		plan    Plan
		bs      []behaviour
		decided int    // the devices before the stop, which get their verdicts
		stopped string // a part of the not-started devices' message
	}{
		{"one wave, none allowed", Plan{}, []behaviour{failAlways, succeed, succeed, succeed, succeed}, 1, "wave 1 of 1: 1 of its 5 devices failed, none is allowed"},
		{"a wave's budget", Plan{Waves: steps("1,100%"), MaxFailures: n(1)},
			[]behaviour{succeed, failAlways, failAlways, succeed, succeed}, 3, "wave 2 of 2: 2 of its 4 devices failed"},
		{"the rollout's budget inside a wave", Plan{Waves: steps("1,100%"), MaxFailures: n(1)},
			[]behaviour{failAlways, failAlways, succeed, succeed}, 2, "2 of its 4 devices failed so far"},
		{"a canary of two", Plan{Canary: 2, MaxFailures: n(5)}, []behaviour{failAlways, succeed, succeed}, 1, "the canary dev0 ended failed"},
		{"a rollback keeps its slot to its verdict", Plan{}, []behaviour{rollback, succeed, succeed}, 1, "wave 1 of 1: 1 of its 3 devices failed"},
		{"a loader that fails", Plan{MaxFailures: n(0)}, []behaviour{loaderFails, succeed}, 1, "wave 1 of 1: 1 of its 2 devices failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.plan, c.bs...)
			r.cfg.MaxFetches, r.cfg.Retries = 1, 0
			res := r.run(context.Background())
			rec := r.cfg.State.Record()
			for i, got := range res {
				cmds := r.f.commands(r.devs[i].Topic)
				if i < c.decided {
					if got.Outcome == upload.OutcomeNotStarted || cmds == 0 {
						t.Errorf("%s: %s, %d commands; want a verdict", got.Device, got.Outcome, cmds)
					}
					continue
				}
				if got.Outcome != upload.OutcomeNotStarted || cmds != 0 || !strings.Contains(got.Message, c.stopped) {
					t.Errorf("%s: %s (%s), %d commands; want not-started naming %q", got.Device, got.Outcome, got.Message, cmds, c.stopped)
				}
				if d := rec.Devices[i]; d.Phase != PhasePending || len(d.Commands) != 0 {
					t.Errorf("%s: %s with %d commands in the state, want pending", got.Device, d.Phase, len(d.Commands))
				}
			}
			if !rec.Finished || !strings.Contains(rec.Stopped, c.stopped) {
				t.Errorf("state: finished %v, stopped %q", rec.Finished, rec.Stopped)
			}
		})
	}
}

// A device is read just before its command: once it holds a MaxFetches
// slot, not when its wave starts, so the facts screened and restored are
// fresh however long it waited.
func TestReadOnceHoldingASlot(t *testing.T) {
	r := newRig(t, Plan{}, succeed, succeed)
	r.cfg.MaxFetches = 1
	for _, res := range r.run(context.Background()) {
		if res.Outcome != upload.OutcomeUpdated {
			t.Errorf("%s: %s (%s)", res.Device, res.Outcome, res.Message)
		}
	}
	freed, read := r.f.logged("success "+r.devs[0].Topic), r.f.logged("preflight "+r.devs[1].Topic)
	if freed < 0 || read < freed {
		t.Errorf("dev1 was read at %d, before dev0 gave up its slot at %d: %v", read, freed, r.f.log)
	}
}

// breakState makes every later write of the rig's state file fail, as a
// full disk or a file held open on Windows would (even for root): its
// directory is moved away and a plain file takes its name. It returns
// where the file is now.
func (r *rig) breakState() string {
	rd := filepath.Join(r.dir, "state", "rollouts")
	if err := os.Rename(rd, rd+".away"); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(rd, nil, 0o600); err != nil {
		r.t.Fatal(err)
	}
	return filepath.Join(rd+".away", filepath.Base(r.cfg.State.Path()))
}

// A command goes out only once the state file says so: when the file
// cannot record it, nothing is sent, the rollout stops, and the file on
// disk still tells what was sent.
func TestCommandNotSentUnrecorded(t *testing.T) {
	t.Run("first command", func(t *testing.T) {
		r := newRig(t, Plan{MaxFailures: upload.FailureBudget{Set: true, Percent: 100}}, succeed, succeed)
		r.cfg.MaxFetches = 1
		var path string
		var once sync.Once
		r.f.afterPreflight = func(string) { once.Do(func() { path = r.breakState() }) }
		res := r.run(context.Background())
		for i, got := range res {
			if n := r.f.commands(r.devs[i].Topic); n != 0 || got.Outcome != upload.OutcomeNotStarted ||
				!strings.Contains(got.Message, "the state file cannot record commands") || strings.Contains(got.Message, "\n") {
				t.Errorf("%s: %d commands, %s (%s)", got.Device, n, got.Outcome, got.Message)
			}
		}
		rec, err := readRecord(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range rec.Devices {
			if d.Phase != PhasePending || len(d.Commands) != 0 {
				t.Errorf("%s on disk: %s, %d commands", d.Topic, d.Phase, len(d.Commands))
			}
		}
	})
	t.Run("retry", func(t *testing.T) {
		r := newRig(t, Plan{}, failThenSucceed)
		var path string
		var once sync.Once
		r.f.beforeReport = func(rep Report) {
			if rep.Kind == ReportFailed {
				once.Do(func() { path = r.breakState() })
			}
		}
		got := r.run(context.Background())[0]
		if n := r.f.commands(r.devs[0].Topic); n != 1 || got.Outcome != upload.OutcomeFailed || got.Tries != 1 ||
			!strings.Contains(got.Message, "not commanded again: the rollout stopped (the state file cannot record commands") {
			t.Errorf("%d commands, %s tries %d (%s)", n, got.Outcome, got.Tries, got.Message)
		}
		rec, err := readRecord(path)
		if err != nil {
			t.Fatal(err)
		}
		if d := rec.Devices[0]; len(d.Commands) != 1 {
			t.Errorf("on disk: %s, %d commands", d.Phase, len(d.Commands))
		}
	})
}

// A command the family surely did not send (ErrNotSent) is taken back:
// the device ends refused with the family's words, the state file says it
// was never commanded, and the other devices go on.
func TestCommandRefusedByFamily(t *testing.T) {
	r := newRig(t, Plan{MaxFailures: upload.FailureBudget{Set: true, Percent: 100}}, succeed, succeed)
	r.cfg.MaxFetches = 1
	bad := r.devs[0].Topic
	r.f.refuseCommand = func(topic string) error {
		if topic == bad {
			return fmt.Errorf("topic has a wildcard: %w", ErrNotSent)
		}
		return nil
	}
	res := r.run(context.Background())
	if got := res[0]; got.Outcome != upload.OutcomeRefused || got.Tries != 0 || r.f.commands(bad) != 0 ||
		!strings.Contains(got.Message, "not commanded: topic has a wildcard") {
		t.Errorf("%s: %s, tries %d, %d commands (%s)", got.Device, got.Outcome, got.Tries, r.f.commands(bad), got.Message)
	}
	if got := res[1]; got.Outcome != upload.OutcomeUpdated || got.Tries != 1 {
		t.Errorf("%s: %s, tries %d (%s)", got.Device, got.Outcome, got.Tries, got.Message)
	}
	rec, err := readRecord(r.cfg.State.Path())
	if err != nil {
		t.Fatal(err)
	}
	if d := rec.Devices[0]; len(d.Commands) != 0 {
		t.Errorf("on disk: %s, %d commands", d.Phase, len(d.Commands))
	}
}

func fmtBytes(b *int64) string {
	if b == nil {
		return "unknown"
	}
	return fmt.Sprint(*b)
}

// TestProgressEvents: each device's progress reads in order: one
// commanded event per command, every fetch shown under way before it is
// shown ended, and a fetch shown ended is not announced again when the
// device's word of it comes late; done last.
func TestProgressEvents(t *testing.T) {
	bs := []behaviour{succeed, startedLate, twoStep, failThenSucceed}
	r := newRig(t, Plan{}, bs...)
	res := r.run(context.Background())
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, b := range bs {
		if res[i].Outcome != upload.OutcomeUpdated {
			t.Fatalf("%s (behaviour %d): %s (%s)", res[i].Device, b, res[i].Outcome, res[i].Message)
		}
		var seq []string
		for _, e := range r.events {
			if e.Key == r.devs[i].Topic {
				seq = append(seq, string(e.Phase)+" "+e.Message)
			}
		}
		t.Logf("%s: %q", res[i].Device, seq)
		commanded, fetching, fetched, retrying := 0, 0, 0, 0
		underway := false // a fetch shown started and not yet ended
		for k, ev := range seq {
			switch {
			case ev == "connecting commanded":
				commanded++
			case strings.HasPrefix(ev, "uploading fetching"):
				if underway {
					t.Errorf("%s: a second fetching before the fetch ended (event %d): %q", res[i].Device, k, seq)
				}
				if k > 0 && strings.HasPrefix(seq[k-1], "uploading fetched") && ev == "uploading fetching" {
					t.Errorf("%s: the fetch announced after it ended (event %d): %q", res[i].Device, k, seq)
				}
				underway = true
				fetching++
			case strings.HasPrefix(ev, "uploading fetched"), strings.HasPrefix(ev, "uploading fetch of"):
				if !underway {
					t.Errorf("%s: fetched before fetching (event %d): %q", res[i].Device, k, seq)
				}
				underway = false
				fetched++
			case strings.HasPrefix(ev, "retrying"):
				retrying++
				underway = false
			case strings.HasPrefix(ev, "connecting"):
				t.Errorf("%s: a connecting event that is no command (event %d): %q", res[i].Device, k, seq)
			default:
				underway = false // another phase: the device moved on
			}
		}
		if commanded != res[i].Tries || commanded != r.f.commands(r.devs[i].Topic) || retrying != commanded-1 {
			t.Errorf("%s: %d commanded and %d retrying events, %d commands: %q", res[i].Device, commanded, retrying, res[i].Tries, seq)
		}
		// A fetch's end is shown only while it is the device's latest news
		// (its word of the restart may come first).
		fetches := 1
		if b == twoStep {
			fetches = 2
		}
		if fetching == 0 || fetched > fetches {
			t.Errorf("%s: %d fetching, %d fetched events, for %d fetches: %q", res[i].Device, fetching, fetched, fetches, seq)
		}
		if len(seq) == 0 || !strings.HasPrefix(seq[0], "checking") || !strings.HasPrefix(seq[len(seq)-1], "done") {
			t.Errorf("%s: not checking first and done last: %q", res[i].Device, seq)
		}
	}
}
