package sim

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

func TestFaultDrop(t *testing.T) {
	d := simtest.Start(t, simtest.Config(Seed))
	d.SetFaults(simtest.MustFault(t, "drop@50%"))
	img := simtest.Image(t, "1.0.1")
	_, _, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", img, nil)
	if err == nil {
		t.Fatal("the upload succeeded through a dropped connection")
	}
	rec := simtest.LastUpload(t, d)
	half := int64(len(img) / 2)
	if rec.Outcome != "aborted" || rec.Bytes > half || rec.Bytes < half-1024 || !strings.Contains(rec.Reason, "drop@50%") {
		t.Errorf("record: %+v", rec)
	}
	if st := d.State(); st.Version != "1.0.0" || st.BootCount != 1 {
		t.Errorf("state: %s boots %d", st.Version, st.BootCount)
	}
	d.ClearFaults()
	simtest.Push(t, d, "1.0.1")
}

func TestFaultError(t *testing.T) {
	d := simtest.Start(t, simtest.Config(OTS))
	d.SetFaults(simtest.MustFault(t, "error@30%"))
	img := simtest.Image(t, "1.0.1")
	r := simtest.RawPost(t, d.WebAddr(), "POST", "/ota/upload", nil, img)
	if r.Status != 500 || r.Body != "Write failed" {
		t.Fatalf("got %d %q %v", r.Status, r.Body, r.ReadErr)
	}
	if rec := simtest.LastUpload(t, d); rec.Bytes > int64(len(img))*3/10 {
		t.Errorf("wrote %d of %d bytes before the 30%% fault", rec.Bytes, len(img))
	}
}

func TestFaultStallAndSlow(t *testing.T) {
	var ev simtest.EventLog
	cfg := simtest.Config(Seed)
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	img := simtest.Image(t, "1.0.1")
	d.SetFaults(simtest.MustFault(t, "stall@30%:300ms"), simtest.MustFault(t, "slow:1MB/s"))
	start := time.Now()
	simtest.Push(t, d, "1.0.1")
	took := time.Since(start)
	// The stall adds 300 ms; the rate alone needs len/1MB/s.
	min := 300*time.Millisecond + time.Duration(float64(len(img))/1e6*float64(time.Second))*9/10
	if took < min {
		t.Errorf("upload took %v, less than the stall plus the slow link (%v)", took, min)
	}
	if e, ok := ev.Find(EventFault); !ok || e.Fault != "stall@30%:300ms" {
		t.Errorf("fault event: %+v", e)
	}
}

func TestFaultPowerLoss(t *testing.T) {
	var ev simtest.EventLog
	cfg := simtest.Config(Seed)
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	simtest.Push(t, d, "1.0.1")
	if _, err := d.WaitVersion(simtest.Ctx(t, 5*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
	d.SetFaults(simtest.MustFault(t, "power-loss@60%"))
	if _, _, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", simtest.Image(t, "1.0.2"), nil); err == nil {
		t.Fatal("no error from a device that lost power")
	}
	st, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s State) bool { return s.Up && s.BootCount == 3 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.0.1" || st.Running != "ota_0" || !simtest.Slot(st, "ota_1").Empty {
		t.Errorf("after power loss: %s from %s, ota_1 %+v", st.Version, st.Running, simtest.Slot(st, "ota_1"))
	}
	var reasons []string
	for _, e := range ev.Events() {
		if e.Event == EventReboot {
			reasons = append(reasons, e.Reason)
		}
	}
	if len(reasons) != 2 || reasons[1] != "power_loss" {
		t.Errorf("reboots: %v", reasons)
	}
}

func TestFaultNoReturn(t *testing.T) {
	d := simtest.Start(t, simtest.Config(Seed))
	d.SetFaults(simtest.MustFault(t, "no-return"))
	simtest.Push(t, d, "1.0.1")
	st, err := d.WaitState(simtest.Ctx(t, 5*time.Second), func(s State) bool { return s.Phase == PhaseDown })
	if err != nil {
		t.Fatal(err)
	}
	if st.DownReason != "no_return" {
		t.Errorf("down reason %q", st.DownReason)
	}
	if got := simtest.ProbeTCP(d.OTAAddr(), 300*time.Millisecond); got != simtest.SilentOrRefused {
		t.Errorf("a device that never came back: %s, want %s", got, simtest.SilentOrRefused)
	}
}

func TestFaultRefuse(t *testing.T) {
	d := simtest.Start(t, simtest.Config(OTS))
	d.SetFaults(simtest.MustFault(t, "refuse:300ms"))
	if _, err := d.WaitState(simtest.Ctx(t, 2*time.Second), func(s State) bool { return s.Refusing }); err != nil {
		t.Fatal(err)
	}
	_, err := net.Dial("tcp", d.OTAAddr())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial while refusing: %v", err)
	}
	if err := d.WaitUp(simtest.Ctx(t, 3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if code, _, err := simtest.GetGo(t, "http://"+d.WebAddr()+"/api/status"); err != nil || code != 200 {
		t.Errorf("after the refuse window: %d %v", code, err)
	}
}

func TestFaultLatency(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Extensions = true
	d := simtest.Start(t, cfg)
	d.SetFaults(simtest.MustFault(t, "latency:150ms"))
	start := time.Now()
	if code, _, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/ota/status"); err != nil || code != 200 {
		t.Fatal(code, err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("reply came after %v, before the latency", took)
	}
}

// TestFaultsReproducible: the same seed draws the same fault points and
// chances; another seed draws others.
func TestFaultsReproducible(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
	bad := simtest.Corrupt(img, len(img)-100) // no reboot between tries
	run := func(seed int64) []int64 {
		cfg := simtest.Config(Seed)
		cfg.Seed = seed
		cfg.Faults = []Fault{simtest.MustFault(t, "error@5-95%/70%")}
		d := simtest.Start(t, cfg)
		var got []int64
		for i := 0; i < 8; i++ {
			simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, bad)
			rec := simtest.LastUpload(t, d)
			got = append(got, rec.Bytes)
		}
		return got
	}
	// Where a write fault lands depends on how TCP cut the stream into
	// reads (up to 1024 bytes each): compare to the kilobyte.
	same := func(x, y []int64) bool {
		for i := range x {
			if d := x[i] - y[i]; d > 1024 || d < -1024 {
				return false
			}
		}
		return true
	}
	a, b, c := run(7), run(7), run(8)
	if !same(a, b) {
		t.Errorf("same seed, different draws:\n%v\n%v", a, b)
	}
	if same(a, c) {
		t.Errorf("different seeds, same draws: %v", a)
	}
	full := 0
	for _, n := range a {
		if n == int64(len(bad)) {
			full++
		}
	}
	if full == 0 || full == len(a) {
		t.Errorf("a 70%% chance should spare some uploads and hit others: %v", a)
	}
}

// A second refuse fault while the first still holds the ports closed extends
// the refusal; it must not close sockets that are already gone (found by the
// push soak: two refuse faults on an espota device panicked).
func TestFaultRefuseTwice(t *testing.T) {
	for _, p := range []Personality{OTS, Arduino, ESP8266} {
		t.Run(string(p), func(t *testing.T) {
			d := simtest.Start(t, simtest.Config(p))
			d.SetFaults(simtest.MustFault(t, "refuse:300ms"))
			if _, err := d.WaitState(simtest.Ctx(t, 2*time.Second), func(s State) bool { return s.Refusing }); err != nil {
				t.Fatal(err)
			}
			d.AddFault(simtest.MustFault(t, "refuse:300ms"))
			if err := d.WaitUp(simtest.Ctx(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if st := d.State(); st.Refusing {
				t.Errorf("still refusing after both windows: %+v", st.Phase)
			}
		})
	}
}
