package rollout

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

func testMeta() Meta {
	return Meta{Family: "tasmota", Firmware: "fw.bin", SHA256: "ab", Size: 10, Expect: "14.3.0",
		Plan:      Plan{Canary: 1, Waves: steps("10%,100%"), MaxFailures: upload.FailureBudget{Set: true, Percent: 5}, WavePause: time.Minute},
		ServeAddr: "192.0.2.1:8080", PublicURL: "http://u:pw@proxy.example/ota", Broker: "mqtt://alice:s3cret@broker:1883",
		ClientID: "ots-ota-1", Devices: []Device{{Name: "a", Topic: "ta"}, {Name: "b", Topic: "tb", FullTopic: "%prefix%/%topic%/"}, {Topic: "tc"}}}
}

func TestStateLockAndResume(t *testing.T) {
	dir := t.TempDir()
	st, err := CreateState(dir, testMeta())
	if err != nil {
		t.Fatal(err)
	}
	// A second rollout on the same directory is refused, naming the first.
	if _, err := CreateState(dir, testMeta()); err == nil || !strings.Contains(err.Error(), st.ID()) || strings.Contains(err.Error(), "\n") {
		t.Errorf("second CreateState: %v, want one line naming %s", err, st.ID())
	}
	if _, err := OpenState(dir, st.ID()); err == nil || !strings.Contains(err.Error(), st.ID()) {
		t.Errorf("OpenState while running: %v", err)
	}
	l, err := List(dir)
	if err != nil || len(l) != 1 || !l[0].Running || l[0].Finished || l[0].Devices != 3 || l[0].Phases[PhasePending] != 3 {
		t.Errorf("List while running = %+v, %v", l, err)
	}

	rec := st.Record()
	if rec.Broker != "mqtt://broker:1883" || rec.Serve.PublicURL != "http://proxy.example/ota" {
		t.Errorf("userinfo kept: broker %q public %q", rec.Broker, rec.Serve.PublicURL)
	}
	if !filepath.IsAbs(rec.Firmware.Path) {
		t.Errorf("firmware path %q not absolute", rec.Firmware.Path)
	}
	// The canary is wave 0; the plan reads back as it was given.
	if !rec.Devices[0].Canary || rec.Devices[0].Wave != 0 || rec.Devices[1].Wave != 1 || rec.Devices[2].Wave != 2 {
		t.Errorf("waves in the state: %+v", rec.Devices)
	}
	m, err := rec.Meta()
	if err != nil || m.Plan.Canary != 1 || len(m.Plan.Waves) != 2 || m.Plan.MaxFailures.Percent != 5 || m.Plan.WavePause != time.Minute ||
		len(m.Devices) != 3 || m.Devices[1].FullTopic != "%prefix%/%topic%/" || m.ClientID != "ots-ota-1" {
		t.Errorf("Meta() = %+v, %v", m, err)
	}

	// An OtaUrl with a password is not written.
	secret := "http://admin:pw@old.example/fw.bin"
	plain := "http://old.example/fw.bin"
	if err := st.update(func(r *Record) {
		r.Devices[0].Before = safeFacts(&Facts{Version: "1", OtaURL: &secret})
		r.Devices[1].Before = safeFacts(&Facts{Version: "1", OtaURL: &plain})
	}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(st.Path())
	for _, s := range []string{"s3cret", "alice", "pw@", "admin"} {
		if strings.Contains(string(b), s) {
			t.Errorf("the state file holds %q", s)
		}
	}
	if !strings.Contains(string(b), plain) {
		t.Errorf("a plain OtaUrl was dropped")
	}
	if fi, _ := os.Stat(st.Path()); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, "rollouts", "*.tmp")); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}

	// Closed: resumable, as the latest unfinished.
	st.Close()
	if id, err := Latest(dir); err != nil || id != st.ID() {
		t.Errorf("Latest = %q, %v", id, err)
	}
	st2, err := OpenState(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if st2.Record().Devices[1].Before == nil {
		t.Errorf("reopened state lost the pre-flight facts")
	}
	if err := st2.update(func(r *Record) { r.Finished = true }); err != nil {
		t.Fatal(err)
	}
	st2.Close()
	if _, err := OpenState(dir, ""); err == nil {
		t.Errorf("resumed with no unfinished rollout")
	}
	if _, err := OpenState(dir, st.ID()); err == nil || !strings.Contains(err.Error(), "finished") {
		t.Errorf("OpenState of a finished rollout: %v", err)
	}
	for _, bad := range []string{"../x", "nope", "a/b"} {
		if _, err := OpenState(dir, bad); err == nil {
			t.Errorf("OpenState(%q) accepted", bad)
		}
	}
	if r, err := Read(dir, ""); err != nil || r.ID != st.ID() || !r.Finished {
		t.Errorf("Read = %+v, %v", r.ID, err)
	}
	if l, _ := List(dir); len(l) != 1 || l[0].Running || !l[0].Finished {
		t.Errorf("List after the end = %+v", l)
	}
	// A damaged file is skipped by List, and named by Read.
	os.WriteFile(filepath.Join(dir, "rollouts", "20990101-000000-ffff.json"), []byte("{"), 0o600)
	if l, _ := List(dir); len(l) != 1 {
		t.Errorf("List with a damaged file: %d entries", len(l))
	}
	if _, err := Read(dir, "20990101-000000-ffff"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("Read of a damaged file: %v", err)
	}
}

func TestListEmpty(t *testing.T) {
	l, err := List(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(l) != 0 {
		t.Errorf("List of a missing dir = %v, %v", l, err)
	}
	if _, err := Latest(t.TempDir()); err == nil {
		t.Errorf("Latest of an empty dir: no error")
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("OTS_OTA_STATE_DIR", "/somewhere")
	if d, err := DefaultDir(); err != nil || d != "/somewhere" {
		t.Errorf("DefaultDir with OTS_OTA_STATE_DIR = %q, %v", d, err)
	}
	t.Setenv("OTS_OTA_STATE_DIR", "")
	if runtime.GOOS == "linux" {
		t.Setenv("XDG_STATE_HOME", "/xdg")
		if d, _ := DefaultDir(); d != "/xdg/ots-ota" {
			t.Errorf("DefaultDir with XDG_STATE_HOME = %q", d)
		}
		t.Setenv("XDG_STATE_HOME", "relative")
		t.Setenv("HOME", "/home/u")
		if d, _ := DefaultDir(); d != "/home/u/.local/state/ots-ota" {
			t.Errorf("DefaultDir = %q", d)
		}
	}
}

// Reports are written in batches, not one file per report; the file keeps
// what tells of the update when a flapping link fills it.
func TestReportsSavedInBatches(t *testing.T) {
	r := newRig(t, Plan{}, flappy)
	got := r.run(context.Background())[0]
	if got.Outcome != upload.OutcomeUpdated {
		t.Fatalf("%s (%s)", got.Outcome, got.Message)
	}
	st := r.cfg.State
	st.mu.Lock()
	writes := st.writes
	st.mu.Unlock()
	if writes > 30 {
		t.Errorf("%d writes of the state file for about 106 reports", writes)
	}
	rec, err := readRecord(st.Path()) // what is on disk at the end
	if err != nil {
		t.Fatal(err)
	}
	var kinds []ReportKind
	for _, rr := range rec.Devices[0].Reports {
		if rr.Kind != ReportOnline && rr.Kind != ReportOffline {
			kinds = append(kinds, rr.Kind)
		}
	}
	if n := len(rec.Devices[0].Reports); n != maxReports || !slices.Equal(kinds, []ReportKind{ReportStarted, ReportSuccess, ReportBooted}) {
		t.Errorf("%d reports kept on disk, those of the update %v", n, kinds)
	}
}

// A change made with updateSoon reaches the file within flushDelay, or at
// Close, whichever comes first; an update takes it along at once.
func TestUpdateSoon(t *testing.T) {
	for _, c := range []string{"timer", "update", "close"} {
		t.Run(c, func(t *testing.T) {
			dir := t.TempDir()
			st, err := CreateState(dir, testMeta())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			st.updateSoon(func(r *Record) { r.Devices[0].Name = "renamed" })
			onDisk := func() string {
				rec, err := readRecord(st.Path())
				if err != nil {
					t.Fatal(err)
				}
				return rec.Devices[0].Name
			}
			switch c {
			case "timer":
				deadline := time.Now().Add(10 * time.Second)
				for onDisk() != "renamed" && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
			case "update":
				if err := st.update(func(r *Record) { r.Stopped = "x" }); err != nil {
					t.Fatal(err)
				}
			case "close":
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if n := onDisk(); n != "renamed" {
				t.Errorf("on disk %q", n)
			}
		})
	}
}

// The lock holds across processes: a helper process (this test binary,
// run again) holds a rollout; a second one on the same directory is
// refused with one line naming it, until the helper ends.
func TestStateLockAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("OTS_OTA_TEST_HOLD_STATE"); dir != "" {
		st, err := CreateState(dir, testMeta())
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked", st.ID())
		io.Copy(io.Discard, os.Stdin) // until the test closes it
		st.Close()
		os.Exit(0)
	}
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Skip("cannot run the test binary again:", err)
	}
	cmd := exec.Command(exe, "-test.run=^TestStateLockAcrossProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), "OTS_OTA_TEST_HOLD_STATE="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- strings.TrimSpace(l)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(60 * time.Second):
		t.Fatal("the helper process never said it holds the lock")
	}
	id, ok := strings.CutPrefix(line, "locked ")
	if !ok {
		t.Fatalf("helper: %q", line)
	}

	_, err = CreateState(dir, testMeta())
	if err == nil || !strings.Contains(err.Error(), "rollout "+id+" is running") || strings.Contains(err.Error(), "\n") {
		t.Errorf("CreateState beside another process's rollout: %v, want one line naming %s", err, id)
	}
	if _, err := OpenState(dir, id); err == nil || !strings.Contains(err.Error(), id) {
		t.Errorf("OpenState of another process's rollout: %v", err)
	}
	if l, err := List(dir); err != nil || len(l) != 1 || !l[0].Running {
		t.Errorf("List = %+v, %v; want it running", l, err)
	}

	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	st, err := CreateState(dir, testMeta())
	if err != nil {
		t.Fatalf("CreateState once the other process ended: %v", err)
	}
	st.Close()
}

// What --resume needs of a pulled family's rollout reads back from the
// file: each device's manifest and entity, the store (without userinfo)
// and the family's options; Facts.Latest is kept with the facts.
func TestStateKeepsStoreAndDeviceDetails(t *testing.T) {
	m := testMeta()
	m.Devices[0].Manifest, m.Devices[0].Entity = "canary.json", "firmware"
	m.Store = &StoreMeta{URL: "s3://b/p", Endpoint: "https://k:s@s3.example:9000", Region: "eu", PublicURL: "https://cdn.example/p"}
	m.FamilyOptions = map[string]string{"check_wait": "10m"}
	st, err := CreateState(t.TempDir(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.update(func(r *Record) { r.Devices[0].Before = &Facts{Version: "1.0", Latest: "2.0"} }); err != nil {
		t.Fatal(err)
	}
	rec, err := readRecord(st.Path())
	if err != nil {
		t.Fatal(err)
	}
	got, err := rec.Meta()
	if err != nil {
		t.Fatal(err)
	}
	if d := got.Devices[0]; d.Manifest != "canary.json" || d.Entity != "firmware" || got.Devices[1].Manifest != "" {
		t.Errorf("devices: %+v", got.Devices)
	}
	if s := got.Store; s == nil || *s != (StoreMeta{URL: "s3://b/p", Endpoint: "https://s3.example:9000", Region: "eu", PublicURL: "https://cdn.example/p"}) {
		t.Errorf("store: %+v", got.Store)
	}
	if got.FamilyOptions["check_wait"] != "10m" {
		t.Errorf("family options: %v", got.FamilyOptions)
	}
	if b := rec.Devices[0].Before; b == nil || b.Latest != "2.0" {
		t.Errorf("before: %+v", b)
	}
	if rec.Store.URLs != nil || rec.Store.SHA256 != "" {
		t.Errorf("published before anything was: %+v", rec.Store)
	}
}
