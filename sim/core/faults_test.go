package core

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
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
