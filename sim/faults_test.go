package sim

import (
	"encoding/json"
	"errors"
	"net"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseFault(t *testing.T) {
	cases := []struct {
		in   string
		want Fault
		str  string
	}{
		{"drop@40%", Fault{Kind: FaultDrop, Percent: true, From: 40, To: 40, Chance: 1}, "drop@40%"},
		{"DROP@20-80%", Fault{Kind: FaultDrop, Percent: true, From: 20, To: 80, Chance: 1}, "drop@20-80%"},
		{"drop@64KiB", Fault{Kind: FaultDrop, From: 65536, To: 65536, Chance: 1}, "drop@65536B"},
		{"drop@1.5MB", Fault{Kind: FaultDrop, From: 1500000, To: 1500000, Chance: 1}, "drop@1500000B"},
		{"drop@0-1000", Fault{Kind: FaultDrop, From: 0, To: 1000, Chance: 1}, "drop@0B-1000B"},
		{"stall@50%:10s", Fault{Kind: FaultStall, Percent: true, From: 50, To: 50, Duration: 10 * time.Second, Chance: 1}, "stall@50%:10s"},
		{"stall@12.5%:250ms/50%", Fault{Kind: FaultStall, Percent: true, From: 12.5, To: 12.5, Duration: 250 * time.Millisecond, Chance: 0.5}, "stall@12.5%:250ms/50%"},
		{"error@30%", Fault{Kind: FaultError, Percent: true, From: 30, To: 30, Chance: 1}, "error@30%"},
		{"error@30%/25%", Fault{Kind: FaultError, Percent: true, From: 30, To: 30, Chance: 0.25}, "error@30%/25%"},
		{"power-loss@60%", Fault{Kind: FaultPowerLoss, Percent: true, From: 60, To: 60, Chance: 1}, "power-loss@60%"},
		{"slow:20KB/s", Fault{Kind: FaultSlow, Rate: 20000, Chance: 1}, "slow:20000B/s"},
		{"slow:1MiB/s", Fault{Kind: FaultSlow, Rate: 1 << 20, Chance: 1}, "slow:1048576B/s"},
		{"slow:500B/s", Fault{Kind: FaultSlow, Rate: 500, Chance: 1}, "slow:500B/s"},
		{"no-return", Fault{Kind: FaultNoReturn, Chance: 1}, "no-return"},
		{"refuse:5s", Fault{Kind: FaultRefuse, Duration: 5 * time.Second, Chance: 1}, "refuse:5s"},
		{"latency:5ms", Fault{Kind: FaultLatency, Duration: 5 * time.Millisecond, Chance: 1}, "latency:5ms"},
		{"latency:0s", Fault{Kind: FaultLatency, Chance: 1}, "latency:0s"},
		{"no-connect-back", Fault{Kind: FaultNoConnectBack, Chance: 1}, "no-connect-back"},
		{"no-connect-back/10%", Fault{Kind: FaultNoConnectBack, Chance: 0.1}, "no-connect-back/10%"},
		{"lose-ok", Fault{Kind: FaultLoseOK, Chance: 1}, "lose-ok"},
		{" lose-ok/50% ", Fault{Kind: FaultLoseOK, Chance: 0.5}, "lose-ok/50%"},
		{"early-answer@0%", Fault{Kind: FaultEarlyAnswer, Percent: true, Chance: 1, Mode: ModeInstall}, "early-answer@0%"},
		{"early-answer@30%:install", Fault{Kind: FaultEarlyAnswer, Percent: true, From: 30, To: 30, Chance: 1, Mode: ModeInstall}, "early-answer@30%"},
		{"early-answer@30%:Discard/50%", Fault{Kind: FaultEarlyAnswer, Percent: true, From: 30, To: 30, Chance: 0.5, Mode: ModeDiscard}, "early-answer@30%:discard/50%"},
		{"early-answer@1KiB:close", Fault{Kind: FaultEarlyAnswer, From: 1024, To: 1024, Chance: 1, Mode: ModeClose}, "early-answer@1024B:close"},
		{"lose-answer", Fault{Kind: FaultLoseAnswer, Chance: 1, Mode: ModeSilent}, "lose-answer"},
		{"lose-answer:reset/20%", Fault{Kind: FaultLoseAnswer, Chance: 0.2, Mode: ModeReset}, "lose-answer:reset/20%"},
		{"no-reboot", Fault{Kind: FaultNoReboot, Chance: 1}, "no-reboot"},
		{"no-reboot/50%", Fault{Kind: FaultNoReboot, Chance: 0.5}, "no-reboot/50%"},
		{"status-error", Fault{Kind: FaultStatusError, Chance: 1, Count: 1}, "status-error"},
		{"status-error:3", Fault{Kind: FaultStatusError, Chance: 1, Count: 3}, "status-error:3"},
		{"trickle:8B/s", Fault{Kind: FaultTrickle, Rate: 8, Chance: 1}, "trickle:8B/s"},
		{"early-ok@30%", Fault{Kind: FaultEarlyOK, Percent: true, From: 30, To: 30, Chance: 1, Mode: ModeInstall}, "early-ok@30%"},
		{"early-ok@30%:close", Fault{Kind: FaultEarlyOK, Percent: true, From: 30, To: 30, Chance: 1, Mode: ModeClose}, "early-ok@30%:close"},
		{"chatter@50%", Fault{Kind: FaultChatter, Percent: true, From: 50, To: 50, Chance: 1, Duration: 250 * time.Millisecond}, "chatter@50%:250ms"},
		{"chatter@100%:100ms/50%", Fault{Kind: FaultChatter, Percent: true, From: 100, To: 100, Chance: 0.5, Duration: 100 * time.Millisecond}, "chatter@100%:100ms/50%"},
	}
	for _, c := range cases {
		f, err := ParseFault(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(f, c.want) {
			t.Errorf("%q: got %+v, want %+v", c.in, f, c.want)
		}
		if s := f.String(); s != c.str {
			t.Errorf("%q: String() = %q, want %q", c.in, s, c.str)
		}
		back, err := ParseFault(f.String())
		if err != nil || !reflect.DeepEqual(back, f) {
			t.Errorf("%q: round trip %q → %+v %v", c.in, f.String(), back, err)
		}
	}
	bad := []string{
		"", "boom", "drop", "drop@", "drop@140%", "drop@-5%", "drop@80-20%", "drop@40%:5s",
		"stall@50%", "stall@50%:", "stall@50%:fast", "stall@50%:-1s", "error@30%/0%", "error@30%/150%",
		"error@x%", "slow", "slow:", "slow:20KB", "slow:0B/s", "slow:fastB/s", "no-return:5s", "refuse",
		"refuse:0s", "refuse:5", "latency", "latency:-5ms", "lose-ok@5%", "no-connect-back:1s", "drop@1e3%",
		"drop@0x10", "drop@NaN%", "stall@5%:48h", "slow:1/s/50%", "no-return/50%",
		"early-answer", "early-answer@30%:maybe", "early-answer@30%:", "early-ok@30%:discard", "early-ok",
		"lose-answer@30%", "lose-answer:", "lose-answer:close", "lose-answer:5s", "no-reboot:1s", "no-reboot@5%",
		"status-error:0", "status-error:x", "status-error:1001", "status-error/50%", "status-error@5%",
		"trickle", "trickle:8B", "trickle:0B/s", "trickle/50%", "chatter", "chatter@50%:0s", "chatter@50%:fast",
	}
	for _, in := range bad {
		if f, err := ParseFault(in); err == nil {
			t.Errorf("%q: accepted as %+v", in, f)
		} else if !strings.Contains(err.Error(), "fault") {
			t.Errorf("%q: error %q does not say what it parsed", in, err)
		}
	}
	// A chance on a fault that acts on every upload says so.
	for _, in := range []string{"slow:20KB/s/50%", "trickle:8B/s/5%", "latency:5ms/50%", "refuse:5s/50%", "no-return/50%", "status-error:2/50%"} {
		if _, err := ParseFault(in); err == nil || !strings.Contains(err.Error(), "takes no /P%: it acts on every upload") {
			t.Errorf("%q: error %v, want one that says it takes no /P%%", in, err)
		}
	}
}

func TestFaultJSON(t *testing.T) {
	fs, err := ParseFaults([]string{"drop@40%", "slow:20KB/s"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(fs)
	if err != nil || string(b) != `["drop@40%","slow:20000B/s"]` {
		t.Fatalf("%s %v", b, err)
	}
	var back []Fault
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, fs) {
		t.Fatalf("%+v %v", back, err)
	}
	if _, err := ParseFaults([]string{"drop@40%", "nope"}); err == nil {
		t.Error("bad list accepted")
	}
}

func FuzzParseFault(f *testing.F) {
	for _, s := range []string{"drop@40%", "stall@50%:10s", "error@30%/50%", "slow:20KB/s", "no-return",
		"power-loss@60%", "refuse:5s", "latency:5ms", "no-connect-back", "lose-ok", "drop@1-2KiB", "drop@20-80%",
		"early-answer@0%", "early-answer@30%:discard/50%", "early-answer@1KiB:close", "lose-answer:reset/20%",
		"no-reboot", "status-error:3", "trickle:8B/s", "early-ok@30%:close", "chatter@100%:100ms/50%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fault, err := ParseFault(s)
		if err != nil {
			return
		}
		if fault.Chance <= 0 || fault.Chance > 1 || fault.From < 0 || fault.To < fault.From || fault.Duration < 0 || fault.Rate < 0 {
			t.Fatalf("%q parsed to an out-of-range fault %+v", s, fault)
		}
		if fault.Percent && fault.To > 100 {
			t.Fatalf("%q: percent above 100: %+v", s, fault)
		}
		back, err := ParseFault(fault.String())
		if err != nil {
			t.Fatalf("%q → %q does not parse: %v", s, fault.String(), err)
		}
		if back.String() != fault.String() {
			t.Fatalf("%q → %q → %q", s, fault.String(), back.String())
		}
		// Arming never panics and stays within the range.
		for _, a := range armUpload([]Fault{fault}, 1<<20, func() float64 { return 0.999 }) {
			if a.At < 0 {
				t.Fatalf("negative point %d", a.At)
			}
		}
		if a, ok := armOne(fault, 1<<20, func() float64 { return 0.999 }); ok && (a.At < 0 || fault.Percent && a.At > 1<<20) {
			t.Fatalf("point %d out of range", a.At)
		}
		if m := fault.Kind.modes(); m != nil && !slices.Contains(m, fault.Mode) {
			t.Fatalf("%q: mode %q not one of %v", s, fault.Mode, m)
		}
	})
}

// --- faults acting on devices ---------------------------------------------------

func mustFault(t *testing.T, s string) Fault {
	t.Helper()
	f, err := ParseFault(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFaultDrop(t *testing.T) {
	d := startDevice(t, testConfig(Seed))
	d.SetFaults(mustFault(t, "drop@50%"))
	img := testImage(t, "1.0.1")
	_, _, err := postGo(t, "http://"+d.OTAAddr()+"/update", img, nil)
	if err == nil {
		t.Fatal("the upload succeeded through a dropped connection")
	}
	rec := lastUpload(t, d)
	half := int64(len(img) / 2)
	if rec.Outcome != "aborted" || rec.Bytes > half || rec.Bytes < half-1024 || !strings.Contains(rec.Reason, "drop@50%") {
		t.Errorf("record: %+v", rec)
	}
	if st := d.State(); st.Version != "1.0.0" || st.BootCount != 1 {
		t.Errorf("state: %s boots %d", st.Version, st.BootCount)
	}
	d.ClearFaults()
	push(t, d, "1.0.1")
}

func TestFaultError(t *testing.T) {
	d := startDevice(t, testConfig(OTS))
	d.SetFaults(mustFault(t, "error@30%"))
	img := testImage(t, "1.0.1")
	r := rawPost(t, d.WebAddr(), "POST", "/ota/upload", nil, img)
	if r.status != 500 || r.body != "Write failed" {
		t.Fatalf("got %d %q %v", r.status, r.body, r.readErr)
	}
	if rec := lastUpload(t, d); rec.Bytes > int64(len(img))*3/10 {
		t.Errorf("wrote %d of %d bytes before the 30%% fault", rec.Bytes, len(img))
	}
}

func TestFaultStallAndSlow(t *testing.T) {
	var ev eventLog
	cfg := testConfig(Seed)
	cfg.OnEvent = ev.add
	d := startDevice(t, cfg)
	img := testImage(t, "1.0.1")
	d.SetFaults(mustFault(t, "stall@30%:300ms"), mustFault(t, "slow:1MB/s"))
	start := time.Now()
	push(t, d, "1.0.1")
	took := time.Since(start)
	// The stall adds 300 ms; the rate alone needs len/1MB/s.
	min := 300*time.Millisecond + time.Duration(float64(len(img))/1e6*float64(time.Second))*9/10
	if took < min {
		t.Errorf("upload took %v, less than the stall plus the slow link (%v)", took, min)
	}
	if e, ok := ev.find(EventFault); !ok || e.Fault != "stall@30%:300ms" {
		t.Errorf("fault event: %+v", e)
	}
}

func TestFaultPowerLoss(t *testing.T) {
	var ev eventLog
	cfg := testConfig(Seed)
	cfg.OnEvent = ev.add
	d := startDevice(t, cfg)
	push(t, d, "1.0.1")
	if _, err := d.WaitVersion(ctxFor(t, 5*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
	d.SetFaults(mustFault(t, "power-loss@60%"))
	if _, _, err := postGo(t, "http://"+d.OTAAddr()+"/update", testImage(t, "1.0.2"), nil); err == nil {
		t.Fatal("no error from a device that lost power")
	}
	st, err := d.WaitState(ctxFor(t, 5*time.Second), func(s State) bool { return s.Up && s.BootCount == 3 })
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.0.1" || st.Running != "ota_0" || !slot(st, "ota_1").Empty {
		t.Errorf("after power loss: %s from %s, ota_1 %+v", st.Version, st.Running, slot(st, "ota_1"))
	}
	var reasons []string
	ev.mu.Lock()
	for _, e := range ev.ev {
		if e.Event == EventReboot {
			reasons = append(reasons, e.Reason)
		}
	}
	ev.mu.Unlock()
	if len(reasons) != 2 || reasons[1] != "power_loss" {
		t.Errorf("reboots: %v", reasons)
	}
}

func TestFaultNoReturn(t *testing.T) {
	d := startDevice(t, testConfig(Seed))
	d.SetFaults(mustFault(t, "no-return"))
	push(t, d, "1.0.1")
	st, err := d.WaitState(ctxFor(t, 5*time.Second), func(s State) bool { return s.Phase == PhaseDown })
	if err != nil {
		t.Fatal(err)
	}
	if st.DownReason != "no_return" {
		t.Errorf("down reason %q", st.DownReason)
	}
	if got := probeTCP(d.OTAAddr(), 300*time.Millisecond); got != silentOrRefused {
		t.Errorf("a device that never came back: %s, want %s", got, silentOrRefused)
	}
}

func TestFaultRefuse(t *testing.T) {
	d := startDevice(t, testConfig(OTS))
	d.SetFaults(mustFault(t, "refuse:300ms"))
	if _, err := d.WaitState(ctxFor(t, 2*time.Second), func(s State) bool { return s.Refusing }); err != nil {
		t.Fatal(err)
	}
	_, err := net.Dial("tcp", d.OTAAddr())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial while refusing: %v", err)
	}
	if err := d.WaitUp(ctxFor(t, 3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if code, _, err := getGo(t, "http://"+d.WebAddr()+"/api/status"); err != nil || code != 200 {
		t.Errorf("after the refuse window: %d %v", code, err)
	}
}

func TestFaultLatency(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Extensions = true
	d := startDevice(t, cfg)
	d.SetFaults(mustFault(t, "latency:150ms"))
	start := time.Now()
	if code, _, err := getGo(t, "http://"+d.OTAAddr()+"/ota/status"); err != nil || code != 200 {
		t.Fatal(code, err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("reply came after %v, before the latency", took)
	}
}

// TestFaultsReproducible: the same seed draws the same fault points and
// chances; another seed draws others.
func TestFaultsReproducible(t *testing.T) {
	img := testImage(t, "1.0.1")
	bad := corrupt(img, len(img)-100) // no reboot between tries
	run := func(seed int64) []int64 {
		cfg := testConfig(Seed)
		cfg.Seed = seed
		cfg.Faults = []Fault{mustFault(t, "error@5-95%/70%")}
		d := startDevice(t, cfg)
		var got []int64
		for i := 0; i < 8; i++ {
			rawPost(t, d.OTAAddr(), "POST", "/update", nil, bad)
			rec := lastUpload(t, d)
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
			d := startDevice(t, testConfig(p))
			d.SetFaults(mustFault(t, "refuse:300ms"))
			if _, err := d.WaitState(ctxFor(t, 2*time.Second), func(s State) bool { return s.Refusing }); err != nil {
				t.Fatal(err)
			}
			d.AddFault(mustFault(t, "refuse:300ms"))
			if err := d.WaitUp(ctxFor(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if st := d.State(); st.Refusing {
				t.Errorf("still refusing after both windows: %+v", st.Phase)
			}
		})
	}
}
