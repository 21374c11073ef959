package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// command records a command for device i, as the engine does.
func command(st *State, i int, at time.Time) error {
	return st.updateDevOr(i, func(dr *DeviceRecord) {
		dr.Phase = PhaseCommanded
		dr.Commands = append(dr.Commands, at)
	}, func(dr *DeviceRecord) {
		dr.Phase = PhasePending
		dr.Commands = dr.Commands[:len(dr.Commands)-1]
	})
}

// A device's change is a journal line, not a new snapshot; readers see
// snapshot and journal together, and a torn last line is ignored; a line
// damaged before others is named.
func TestStateJournalReplay(t *testing.T) {
	dir := t.TempDir()
	st, err := CreateState(dir, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snap, _ := os.ReadFile(st.Path())
	at := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	if err := command(st, 1, at); err != nil {
		t.Fatal(err)
	}
	if err := st.updateDev(2, func(dr *DeviceRecord) {
		dr.Phase, dr.Result = PhaseDone, &upload.Result{Outcome: upload.OutcomeUpdated}
	}); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(st.Path()); !bytes.Equal(now, snap) {
		t.Errorf("a device's change rewrote the snapshot")
	}
	jpath := journalPath(st.Path())
	if fi, err := os.Stat(jpath); err != nil || runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal: %v, %v", fi, err)
	}
	check := func(what string) {
		t.Helper()
		rec, err := Read(dir, st.ID())
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		d1, d2 := rec.Devices[1], rec.Devices[2]
		if d1.Phase != PhaseCommanded || len(d1.Commands) != 1 || !d1.Commands[0].Equal(at) || d2.Phase != PhaseDone || d2.Result == nil ||
			rec.Devices[0].Phase != PhasePending {
			t.Errorf("%s: devices %+v", what, rec.Devices)
		}
		l, err := List(dir)
		if err != nil || len(l) != 1 || l[0].Phases[PhaseCommanded] != 1 || l[0].Phases[PhaseDone] != 1 || l[0].Outcomes[upload.OutcomeUpdated] != 1 {
			t.Errorf("%s: List = %+v, %v", what, l, err)
		}
	}
	check("as written")

	// A crash while a line was written: what reached the disk is cut
	// anywhere, maybe followed by zeros.
	good, _ := os.ReadFile(jpath)
	var line journalLine
	if err := json.Unmarshal(bytes.SplitN(good, []byte{'\n'}, 2)[0], &line); err != nil {
		t.Fatal(err)
	}
	line.Seq, line.Dev = 99, 0
	line.Device = &DeviceRecord{Name: "a", Topic: "ta", Phase: PhaseDone}
	whole, _ := json.Marshal(line)
	for _, torn := range [][]byte{whole[:len(whole)/2], whole, append(whole[:10:10], make([]byte, 40)...), []byte("\x00\x00\x00\n")} {
		if err := os.WriteFile(jpath, append(bytes.Clone(good), torn...), 0o600); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("torn last line %q", torn[:min(len(torn), 12)]))
	}
	// Damaged before a good line: not a torn write, the file is named.
	bad := append(append(bytes.Clone(good[:len(good)-1]), "}x\n"...), good...)
	os.WriteFile(jpath, bad, 0o600)
	if _, err := Read(dir, st.ID()); err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), jpath) || strings.Contains(err.Error(), "\n") {
		t.Errorf("a damaged line in the middle: %v", err)
	}
	// A line for a device the snapshot does not hold there is damage too.
	line.Seq, line.Dev, line.Device = 100, 1, &DeviceRecord{Topic: "elsewhere"}
	other, _ := json.Marshal(line)
	os.WriteFile(jpath, append(append(bytes.Clone(good), other...), append([]byte{'\n'}, good...)...), 0o600)
	if _, err := Read(dir, st.ID()); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("a line naming another device: %v", err)
	}
	os.WriteFile(jpath, append(bytes.Clone(good), whole[:20]...), 0o600)

	// A resumed run (after a crash: no Close) starts from both, and its
	// new lines do not follow the torn one.
	st.mu.Lock()
	st.closed = true // as if the process died: Close writes nothing
	st.mu.Unlock()
	st.Close()
	st2, err := OpenState(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if d := st2.Record().Devices[1]; d.Phase != PhaseCommanded || len(d.Commands) != 1 {
		t.Errorf("resumed: %+v", d)
	}
	if err := command(st2, 0, at); err != nil {
		t.Fatal(err)
	}
	check2, err := Read(dir, "")
	if err != nil || check2.Devices[0].Phase != PhaseCommanded || check2.Devices[1].Phase != PhaseCommanded {
		t.Errorf("after the resumed run's line: %+v, %v", check2.Devices, err)
	}
	// Closed: all in the snapshot, the journal gone.
	if err := st2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(jpath); !os.IsNotExist(err) {
		t.Errorf("journal left at Close: %v", err)
	}
	var onDisk Record
	b, _ := os.ReadFile(st.Path())
	if err := json.Unmarshal(b, &onDisk); err != nil || onDisk.Devices[0].Phase != PhaseCommanded || onDisk.Devices[2].Phase != PhaseDone {
		t.Errorf("snapshot after Close: %+v, %v", onDisk.Devices, err)
	}
}

// The journal is folded into the snapshot once past its bound, so that it
// stays bounded whatever the rollout's length; the record reads the same.
func TestStateJournalCompaction(t *testing.T) {
	old := minCompact
	minCompact = 4 << 10
	defer func() { minCompact = old }()
	dir := t.TempDir()
	st, err := CreateState(dir, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	jpath := journalPath(st.Path())
	start := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	biggest := int64(0)
	for n := range 300 {
		if err := st.updateDev(n%3, func(dr *DeviceRecord) {
			dr.Reports = trimReports(append(dr.Reports, ReportRecord{Kind: ReportStatus, At: start.Add(time.Duration(n) * time.Second), Words: strings.Repeat("w", 40)}))
		}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(jpath)
		if err != nil {
			t.Fatal(err)
		}
		biggest = max(biggest, fi.Size())
	}
	snap, _ := os.Stat(st.Path())
	if bound := max(minCompact, 2*snap.Size()) + 4<<10; biggest > bound {
		t.Errorf("the journal grew to %d bytes (snapshot %d)", biggest, snap.Size())
	}
	rec, err := Read(dir, st.ID())
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range rec.Devices {
		if len(d.Reports) != maxReports || !d.Reports[maxReports-1].At.Equal(start.Add(time.Duration(297+i)*time.Second)) {
			t.Errorf("device %d: %d reports, last %v", i, len(d.Reports), d.Reports[len(d.Reports)-1].At)
		}
	}
	if rec.JournalSeq == 0 {
		t.Errorf("never compacted")
	}
}

// A crash after the snapshot was written but before the journal was
// emptied: replaying the old lines over the newer snapshot changes
// nothing, even where the snapshot holds a later change of their device.
func TestStateJournalCrashBetweenSnapshotAndTruncate(t *testing.T) {
	dir := t.TempDir()
	st, err := CreateState(dir, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	at := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	if err := command(st, 0, at); err != nil {
		t.Fatal(err)
	}
	jpath := journalPath(st.Path())
	lines, _ := os.ReadFile(jpath)
	// The verdict came later, then a change of the whole record wrote the
	// snapshot (and emptied the journal).
	st.updateDevSoon(0, func(dr *DeviceRecord) {
		dr.Phase, dr.Result = PhaseDone, &upload.Result{Outcome: upload.OutcomeUpdated}
	})
	if err := st.update(func(r *Record) { r.Stopped = "x" }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(jpath); len(b) != 0 {
		t.Fatalf("journal not emptied by the snapshot: %q", b)
	}
	os.WriteFile(jpath, lines, 0o600) // as if the emptying never reached the disk
	rec, err := Read(dir, st.ID())
	if err != nil {
		t.Fatal(err)
	}
	if d := rec.Devices[0]; d.Phase != PhaseDone || d.Result == nil || rec.Stopped != "x" {
		t.Errorf("old lines replayed over the newer snapshot: %+v", d)
	}
	// New lines after it still count.
	if err := command(st, 1, at); err != nil {
		t.Fatal(err)
	}
	if rec, err := Read(dir, st.ID()); err != nil || rec.Devices[1].Phase != PhaseCommanded || rec.Devices[0].Phase != PhaseDone {
		t.Errorf("after a new line: %+v, %v", rec.Devices, err)
	}
}

// Callers arriving while a line is synced share the next sync, and each
// learns of its own line's fate; a journal that cannot be written fails
// the command and takes it back, in memory and on disk.
func TestStateJournalGroupCommitAndFailure(t *testing.T) {
	m := testMeta()
	for i := range 200 {
		m.Devices = append(m.Devices, Device{Topic: fmt.Sprintf("g%d", i)})
	}
	dir := t.TempDir()
	st, err := CreateState(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.mu.Lock()
	w0 := st.writes
	st.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, len(m.Devices))
	for i := range m.Devices {
		wg.Go(func() { errs <- command(st, i, time.Now()) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st.mu.Lock()
	writes := st.writes - w0
	st.mu.Unlock()
	t.Logf("%d commands in %d writes", len(m.Devices), writes)
	if writes > len(m.Devices) {
		t.Errorf("%d writes for %d commands", writes, len(m.Devices))
	}
	rec, err := Read(dir, st.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rec.Devices {
		if d.Phase != PhaseCommanded || len(d.Commands) != 1 {
			t.Fatalf("%s on disk: %s, %d commands", d.Topic, d.Phase, len(d.Commands))
		}
	}

	// The journal cannot be written (a folder where it was): the command
	// fails, memory and disk say it was not made.
	jpath := journalPath(st.Path())
	if err := os.Rename(jpath, jpath+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(jpath, 0o700); err != nil {
		t.Fatal(err)
	}
	err = command(st, 0, time.Now())
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("command with an unwritable journal: %v", err)
	}
	if d := st.Record().Devices[0]; len(d.Commands) != 1 {
		t.Errorf("in memory after the failure: %d commands", len(d.Commands))
	}
	os.Remove(jpath)
	os.Rename(jpath+".away", jpath)
	if rec, err := Read(dir, st.ID()); err != nil || len(rec.Devices[0].Commands) != 1 {
		t.Errorf("on disk after the failure: %v, %v", rec.Devices[0], err)
	}
	// The next write records the device as memory holds it.
	if err := st.updateDev(1, func(dr *DeviceRecord) { dr.Name = "one" }); err != nil {
		t.Fatal(err)
	}
	if rec, err := Read(dir, st.ID()); err != nil || len(rec.Devices[0].Commands) != 1 || rec.Devices[1].Name != "one" {
		t.Errorf("on disk after the next write: %v, %v", rec.Devices[:2], err)
	}
}

// BenchmarkStateCommands records one command per device of a 10,000
// device rollout whose records hold what a run writes (the pre-flight
// facts, some reports): the cost per command, one at a time (each waits
// for its own sync) and from 64 goroutines at once, as MaxFetches slots
// make them (syncs shared).
func BenchmarkStateCommands(b *testing.B) {
	for _, par := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", par), func(b *testing.B) {
			st := benchState(b, 10000)
			defer st.Close()
			at := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
			b.ResetTimer()
			if par == 1 {
				for i := range b.N {
					if err := command(st, i%len(st.rec.Devices), at); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			var next sync.Mutex
			n := 0
			b.SetParallelism(max(1, par/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					next.Lock()
					i := n % len(st.rec.Devices)
					n++
					next.Unlock()
					if err := command(st, i, at); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
		})
	}
}

func benchState(b *testing.B, fleet int) *State {
	m := testMeta()
	m.Devices = nil
	for i := range fleet {
		m.Devices = append(m.Devices, Device{Name: fmt.Sprintf("device-%05d", i), Topic: fmt.Sprintf("tasmota_%05d", i)})
	}
	m.Plan = Plan{Waves: steps("100%")}
	st, err := CreateState(b.TempDir(), m)
	if err != nil {
		b.Fatal(err)
	}
	ota := "http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"
	at := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	if err := st.update(func(r *Record) {
		for i := range r.Devices {
			dr := &r.Devices[i]
			dr.Before, dr.BeforeAt = &Facts{Version: "14.2.0(release-tasmota)", Release: "14.2.0", Chip: "esp32", MAC: "AA:BB:CC:DD:EE:FF",
				IP: "192.0.2.10", RestartReason: "Software/System restart", OtaURL: &ota}, at
			for k := range 8 {
				dr.Reports = append(dr.Reports, ReportRecord{Kind: ReportStatus, At: at.Add(time.Duration(k) * time.Second), Words: "Upload progress 42%", Source: "Status 2"})
			}
		}
	}); err != nil {
		b.Fatal(err)
	}
	return st
}

// The engine's side: a command the journal cannot record is not sent, and
// the rollout stops, as when the whole state file cannot be written.
func TestStateJournalUnwritableCommandNotSent(t *testing.T) {
	r := newRig(t, Plan{MaxFailures: upload.FailureBudget{Set: true, Percent: 100}}, succeed, succeed)
	r.cfg.MaxFetches = 1
	jpath := journalPath(r.cfg.State.Path())
	var once sync.Once
	r.f.afterPreflight = func(string) {
		once.Do(func() {
			if err := os.Rename(jpath, jpath+".away"); err != nil {
				t.Error(err)
			}
			if err := os.Mkdir(jpath, 0o700); err != nil {
				t.Error(err)
			}
		})
	}
	res := r.run(context.Background())
	for i, got := range res {
		if n := r.f.commands(r.devs[i].Topic); n != 0 || got.Outcome != upload.OutcomeNotStarted ||
			!strings.Contains(got.Message, "the state file cannot record commands") || strings.Contains(got.Message, "\n") {
			t.Errorf("%s: %d commands, %s (%s)", got.Device, n, got.Outcome, got.Message)
		}
	}
	os.Remove(jpath)
	os.Rename(jpath+".away", jpath)
	rec, err := readRecord(r.cfg.State.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rec.Devices {
		if d.Phase != PhasePending || len(d.Commands) != 0 {
			t.Errorf("%s on disk: %s, %d commands", d.Topic, d.Phase, len(d.Commands))
		}
	}
}

// A crash (no Close, no snapshot) just after a command: what is on disk
// at that moment, snapshot and journal, is what --resume starts from, and
// the device is watched, never commanded again.
func TestResumeAfterCrashNeverCommandsTwice(t *testing.T) {
	r := newRig(t, Plan{}, succeed, succeed)
	r.cfg.MaxFetches = 1 // the second device waits for the first one's verdict
	path := r.cfg.State.Path()
	jpath := journalPath(path)
	var snap, journal []byte
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	r.f.afterCommand = func(topic string) {
		once.Do(func() {
			// The journal first: a snapshot written between the two reads
			// holds its lines.
			journal, _ = os.ReadFile(jpath)
			snap, _ = os.ReadFile(path)
			cancel()
		})
	}
	r.run(ctx)
	var before Record
	if err := json.Unmarshal(snap, &before); err != nil {
		t.Fatal(err)
	}
	if before.Devices[0].Phase != PhasePending {
		t.Fatalf("the snapshot already held the command: the test no longer tests the journal")
	}
	r.cfg.State.Close()
	if err := os.WriteFile(path, snap, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jpath, journal, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := OpenState(filepath.Join(r.dir, "state"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if d := st.Record().Devices[0]; d.Phase != PhaseCommanded || len(d.Commands) != 1 {
		t.Fatalf("resumed from the crash: %s, %d commands", d.Phase, len(d.Commands))
	}
	r.f.mu.Lock()
	r.f.afterCommand = nil
	r.f.mu.Unlock()
	r.cfg.State = st
	for i, res := range r.run(context.Background()) {
		if n := r.f.commands(r.devs[i].Topic); n != 1 || res.Outcome != upload.OutcomeUpdated {
			t.Errorf("%s: %s (%s), commanded %d times across the runs", res.Device, res.Outcome, res.Message, n)
		}
	}
}
