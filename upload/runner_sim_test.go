package upload_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/rawhttp"
)

// clearAfterFirst makes a fault act once: when the device reports it
// fired, the device's faults are cleared, so the next try can succeed.
func clearAfterFirst(f **sim.Fleet) func(sim.Event) {
	var once sync.Once
	return func(e sim.Event) {
		if e.Event != sim.EventFault {
			return
		}
		once.Do(func() {
			// Not from inside the device's event callback.
			go (*f).Device(e.Device).ClearFaults()
		})
	}
}

func startFaultFleet(t *testing.T, cfg func(c *sim.Config), onEvent func(sim.Event)) *sim.Fleet {
	t.Helper()
	tm := sim.FastTiming()
	f, err := sim.StartFleet(context.Background(), sim.FleetConfig{
		N: 1, BaseIP: nextBase(t), Seed: 11, WebPort: 18080, OnEvent: onEvent,
		Template:  sim.Config{Timing: &tm, Project: "proj", Version: "1.0.0", Extensions: true},
		Configure: func(_ int, c *sim.Config) { cfg(c) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestRunSimFaults: every HTTP fault kind of the simulator, with its
// outcome and whether it was retried. espota's lose-ok and no-connect-back
// are in the espota tests below.
func TestRunSimFaults(t *testing.T) {
	cases := []struct {
		fault    string
		once     bool // the fault acts on the first upload only
		want     upload.Outcome
		tries    int // exact; 0 = at least 2; -1 = any
		class    upload.Class
		wantText string
	}{
		{"drop@50%", true, upload.OutcomeUpdated, 2, "", ""},
		{"drop@50%", false, upload.OutcomeFailed, 4, upload.ClassNetwork, ""},
		// On loopback the kernel acknowledges what a stalled sim does not read,
		// so a stall shorter than the answer wait may pass without a retry.
		{"stall@50%:600ms", true, upload.OutcomeUpdated, -1, "", ""},
		{"error@30%", true, upload.OutcomeUpdated, 2, "", ""},
		{"error@30%", false, upload.OutcomeFailed, 2, upload.ClassWriteFailed, "Write failed"},
		{"power-loss@60%", true, upload.OutcomeUpdated, 0, "", ""},
		{"refuse:150ms", false, upload.OutcomeUpdated, 0, "", ""},
		{"no-return", false, upload.OutcomeUnreachable, 1, "", ""},
	}
	for _, c := range cases {
		name := c.fault
		if c.once {
			name += " once"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var fl *sim.Fleet
			var hook func(sim.Event)
			if c.once {
				hook = clearAfterFirst(&fl)
			}
			fl = startFaultFleet(t, func(cfg *sim.Config) { cfg.Faults = []sim.Fault{mustFault(c.fault)} }, hook)
			o := simOptions()
			o.Transports[upload.HTTP] = &rawhttp.Transport{ConnectTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
			o.Backoff, o.MaxBackoff = 50*time.Millisecond, 400*time.Millisecond
			o.VerifyTimeout = 3 * time.Second
			ts := targetsOf(fl)
			ts[0].Protocol = upload.HTTP // a refusing device must not be taken for espota
			res := upload.Run(context.Background(), simFirmware(t, "1.0.1"), ts, o)
			r := res[0]
			if r.Outcome != c.want {
				t.Fatalf("outcome %s (%s), want %s", r.Outcome, r.Message, c.want)
			}
			if c.tries > 0 && r.Tries != c.tries || c.tries == 0 && r.Tries < 2 || c.tries < 0 && r.Tries < 1 {
				t.Errorf("tries %d, want %d (0 = at least 2)", r.Tries, c.tries)
			}
			if r.Class != c.class || !strings.Contains(r.Words, c.wantText) {
				t.Errorf("class %q words %q, want %q %q", r.Class, r.Words, c.class, c.wantText)
			}
			checkTruth(t, fl, res, "1.0.1")
			ups := fl.Devices()[0].State().Uploads
			// Bytes is the last try's that reached the device, however it
			// ended: what its handler read, plus at most the TCP window its
			// stack acknowledged unread.
			if len(ups) > 0 {
				read := ups[len(ups)-1].Bytes
				if r.Bytes == nil || *r.Bytes < read || *r.Bytes-read > 16<<10 {
					t.Errorf("bytes %v, the device read %d in its last upload", fmtBytes(r.Bytes), read)
				}
			}
			uploads := len(ups)
			// Tries that found the device still rebooting reach no handler.
			if uploads > r.Tries || c.tries > 0 && uploads != r.Tries {
				t.Errorf("the device saw %d uploads, the result says %d tries", uploads, r.Tries)
			}
		})
	}
}

func fmtBytes(p *int64) string {
	if p == nil {
		return "nil"
	}
	return strconv.FormatInt(*p, 10)
}

// TestRunWriteFailedWithRST: the RST right behind the answer (lwIP's
// immediate close) still gives the device's words.
func TestRunWriteFailedWithRST(t *testing.T) {
	tm := sim.FastTiming()
	tm.ErrorCloseDelay = 0
	fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{N: 1, BaseIP: nextBase(t), WebPort: 18080,
		Template: sim.Config{Timing: &tm, Project: "proj", Extensions: true, Faults: []sim.Fault{mustFault("error@30%")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	r := upload.Run(context.Background(), simFirmware(t, "1.0.1"), targetsOf(fl), simOptions())[0]
	if r.Outcome != upload.OutcomeFailed || r.Words != "Write failed" || r.Status != 500 || r.Tries != 2 {
		t.Fatalf("%s %d %q tries %d: %s", r.Outcome, r.Status, r.Words, r.Tries, r.Message)
	}
}

// TestRunWrongTokenOnce: a wrong token fails once, never retried.
func TestRunWrongTokenOnce(t *testing.T) {
	fl := startFaultFleet(t, func(c *sim.Config) { c.Password = auth.NewSecret("right") }, nil)
	o := simOptions()
	o.Credentials = upload.Credentials{Token: auth.NewSecret("wrong")}
	r := upload.Run(context.Background(), simFirmware(t, "1.0.1"), targetsOf(fl), o)[0]
	if r.Outcome != upload.OutcomeFailed || r.Class != upload.ClassAuth || r.Tries != 1 || r.Words != "Invalid credentials" {
		t.Fatalf("%s %s tries %d %q", r.Outcome, r.Class, r.Tries, r.Words)
	}
	if n := len(fl.Devices()[0].State().Uploads); n > 1 {
		t.Errorf("device saw %d uploads", n)
	}
}

// TestRunBusyDevice: a device still pending_verify answers "OTA begin
// failed"; push waits past the stability window and tries once more.
func TestRunBusyDevice(t *testing.T) {
	fl := startFaultFleet(t, func(c *sim.Config) {
		c.Behaviours = map[string]sim.Behaviour{"1.0.1": sim.Unconfirmed}
	}, nil)
	o := simOptions()
	o.NoWaitValid = true
	r := upload.Run(context.Background(), simFirmware(t, "1.0.1"), targetsOf(fl), o)[0]
	if r.Outcome != upload.OutcomeUpdated || !r.Pending {
		t.Fatalf("first push: %s (%s)", r.Outcome, r.Message)
	}
	var why string
	o.OnEvent = func(e upload.FleetEvent) {
		if e.Phase == upload.PhaseRetrying {
			why = e.Message
		}
	}
	r = upload.Run(context.Background(), simFirmware(t, "1.0.2"), targetsOf(fl), o)[0]
	if r.Outcome != upload.OutcomeFailed || r.Class != upload.ClassBusy || r.Tries != 2 || r.Words != "OTA begin failed" {
		t.Fatalf("second push: %s %s tries %d %q", r.Outcome, r.Class, r.Tries, r.Words)
	}
	if !strings.Contains(why, "pending_verify") {
		t.Errorf("retry message %q", why)
	}
}

// TestRunFifty: 50 devices at once, all updated, as the simulators say.
func TestRunFifty(t *testing.T) {
	if testing.Short() {
		t.Skip("50 devices")
	}
	tm := sim.FastTiming()
	fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{N: 50, BaseIP: nextBase(t), WebPort: 18080, Seed: 5,
		Template: sim.Config{Timing: &tm, Project: "proj", Extensions: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	o := simOptions()
	o.Parallel = 0
	res := upload.Run(context.Background(), simFirmware(t, "1.0.1"), targetsOf(fl), o)
	for i, r := range res {
		if r.Outcome != upload.OutcomeUpdated || r.Tries != 1 {
			t.Errorf("device %d: %s tries %d (%s)", i, r.Outcome, r.Tries, r.Message)
		}
	}
	checkTruth(t, fl, res, "1.0.1")
}

// TestRunDryRunAgainstSim: --dry-run reads, plans and sends nothing: the
// devices' upload logs stay empty.
func TestRunDryRunAgainstSim(t *testing.T) {
	fl := startFleet(t, 3, func(i int, c *sim.Config) {
		c.Extensions = true
		if i == 1 {
			c.Chip = "esp32c3" // refused
		}
		if i == 2 {
			c.Personality = sim.Arduino
		}
	})
	o := espotaRunOptions(t)
	o.DryRun = true
	res := upload.Run(context.Background(), simFirmware(t, "1.0.1"), targetsOf(fl), o)
	want := []upload.Outcome{upload.OutcomePlanned, upload.OutcomeRefused, upload.OutcomePlanned}
	for i, r := range res {
		if r.Outcome != want[i] {
			t.Errorf("device %d: %s (%s), want %s", i, r.Outcome, r.Message, want[i])
		}
		if n := len(fl.Devices()[i].State().Uploads); n != 0 {
			t.Errorf("device %d logged %d uploads in a dry run", i, n)
		}
	}
	if res[2].Protocol != upload.Espota || !strings.Contains(res[0].Message, "runs 1.0.0 (/ota/status)") {
		t.Errorf("plan: %+v / %+v", res[0], res[2])
	}
}

// TestRunGivenUpTryThatLanded: a device that stalls longer than the idle
// timeout still gets the rest of the image the kernel had buffered, and
// installs it. The retry must find it running the new image and verify it,
// not send the image again and report a failure over an updated device.
func TestRunGivenUpTryThatLanded(t *testing.T) {
	fl := startFaultFleet(t, func(c *sim.Config) { c.Faults = []sim.Fault{mustFault("stall@50%:700ms")} }, nil)
	o := simOptions()
	o.Transports[upload.HTTP] = &rawhttp.Transport{ConnectTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
	// The retry comes after the stalled device finished and restarted.
	o.Backoff, o.MaxBackoff = 1500*time.Millisecond, 1500*time.Millisecond
	res := upload.Run(context.Background(), simFirmware(t, "1.0.1"), targetsOf(fl), o)
	r := res[0]
	st := fl.Devices()[0].State()
	if st.Version != "1.0.1" {
		t.Skipf("the stalled try did not land on this machine (the sim runs %s): nothing to check", st.Version)
	}
	if r.Outcome != upload.OutcomeUpdated {
		t.Fatalf("the sim runs 1.0.1 (%s), push says %s after %d tries: %s", st.AppState, r.Outcome, r.Tries, r.Message)
	}
	if n := len(st.Uploads); n != 1 {
		t.Errorf("the device saw %d uploads, want 1 (the image sent again)", n)
	}
	checkTruth(t, fl, res, "1.0.1")
}
