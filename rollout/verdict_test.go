package rollout

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

var t0 = time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func facts(ver string) Facts {
	f := Facts{Version: ver}
	rel, rest, _ := strings.Cut(ver, "(")
	f.Release = rel
	if i := strings.TrimSuffix(rest, ")"); i == "minimal" || i == "safeboot" {
		f.Intermediate = i
	}
	return f
}

func rOn(s float64) Report  { return Report{Kind: ReportOnline, At: at(s)} }
func rOff(s float64) Report { return Report{Kind: ReportOffline, At: at(s)} }
func rStarted(s float64) Report {
	return Report{Kind: ReportStarted, At: at(s), Words: "Version 14.3.0 from http://x/fw.bin"}
}
func rSuccess(s float64) Report {
	return Report{Kind: ReportSuccess, At: at(s), Words: "Successful. Restarting"}
}
func rFailed(s float64, w string) Report {
	return Report{Kind: ReportFailed, At: at(s), Words: w}
}
func rBooted(s float64, ver string) Report {
	return Report{Kind: ReportBooted, At: at(s), Facts: facts(ver), Source: "INFO1"}
}
func rStatus(s float64, ver string) Report {
	return Report{Kind: ReportStatus, At: at(s), Facts: facts(ver), Source: "Status 2"}
}

const (
	oldV = "14.2.0(tasmota)"
	newV = "14.3.0(tasmota)"
	minV = "14.3.0(minimal)"
)

// baseSpec: commanded at 10 s, bound 100 s, reboot window 30 s,
// stability 20 s, one retry.
func baseSpec() DeviceSpec {
	b := facts(oldV)
	return DeviceSpec{Expect: "14.3.0", Before: &b, Commands: []time.Time{at(10)}, Retries: 1,
		Bound: 100 * time.Second, RebootWindow: 30 * time.Second, Stability: 20 * time.Second}
}

type want struct {
	done    bool
	outcome upload.Outcome
	reason  upload.Reason
	retry   bool
	reread  bool
	wake    float64 // seconds; 0 = not checked
	source  string
	msg     string // a part of the message
	class   upload.Class
	running string // Running; "" = not checked
}

func TestDecide(t *testing.T) {
	happy := []Report{rStarted(11), rSuccess(40), rOff(41), rOn(60), rBooted(61, newV)}
	cases := []struct {
		name    string
		spec    func(*DeviceSpec)
		reports []Report
		now     float64
		final   bool
		want    want
	}{
		// Pre-flight.
		{"preflight unanswered", func(s *DeviceSpec) { s.Before, s.Commands = nil, nil }, nil, 1, false,
			want{done: true, outcome: upload.OutcomeUnreachable, msg: "not commanded"}},
		{"preflight already runs it", func(s *DeviceSpec) { f := facts(newV); s.Before, s.Commands = &f, nil }, nil, 1, false,
			want{done: true, outcome: upload.OutcomeSkipped, msg: "already runs 14.3.0(tasmota)", running: "14.3.0"}},
		{"preflight on the loader of the target is not skipped", func(s *DeviceSpec) { f := facts(minV); s.Before, s.Commands = &f, nil }, nil, 1, false,
			want{}},
		{"preflight refused", func(s *DeviceSpec) { s.Commands, s.Refusal = nil, "the image is for esp32, the device is an esp8266" }, nil, 1, false,
			want{done: true, outcome: upload.OutcomeRefused, msg: "esp8266"}},
		{"preflight told no version: commanded", func(s *DeviceSpec) { s.Before, s.Commands = &Facts{}, nil }, nil, 1, false,
			want{}},

		// The normal course.
		{"updated after the stability window", nil, happy, 81, false,
			want{done: true, outcome: upload.OutcomeUpdated, source: "INFO1", msg: "runs 14.3.0(tasmota) (INFO1) and stayed online", running: "14.3.0"}},
		// Tasmota's own order on ESP8266 (docs/protocols/tasmota-mqtt.md): the
		// link drops while the body is fetched, no Offline for the planned
		// restart, and the UPGRADE message may be lost.
		{"ESP8266 order", nil, []Report{rStarted(11), rOff(14), rOn(16), rSuccess(40), rOn(45), rBooted(46, newV)}, 66, false,
			want{done: true, outcome: upload.OutcomeUpdated, source: "INFO1"}},
		{"ESP8266 order, the success lost", nil, []Report{rStarted(11), rOff(14), rOn(16), rOn(45), rBooted(46, newV)}, 66, false,
			want{done: true, outcome: upload.OutcomeUpdated}},
		{"ESP8266 two-step order", nil, []Report{rStarted(11), rOff(14), rOn(16), rSuccess(40), rOn(45), rBooted(46, minV),
			rOff(50), rOn(52), rSuccess(80), rOn(85), rBooted(86, newV)}, 106, false,
			want{done: true, outcome: upload.OutcomeUpdated}},
		{"success, no Offline (a clean goodbye), boot report missed: the read", nil, []Report{rStarted(11), rSuccess(40)}, 70, false, want{reread: true}},
		{"target seen, window running", nil, happy, 70, false, want{wake: 81}},
		{"booted before any command is no proof", nil, []Report{rBooted(5, newV)}, 80, false, want{wake: 110}},
		{"a stale boot from before the command, at the bound: the read", nil, []Report{rBooted(9.9, newV)}, 110, false, want{reread: true}},
		{"stale boot, read unanswered", func(s *DeviceSpec) { s.Reread = at(110) }, []Report{rBooted(9.9, newV)}, 111, false,
			want{done: true, outcome: upload.OutcomeUnreachable, msg: "told nothing since the command"}},
		{"duplicate reports keep the window's start", nil,
			[]Report{rStarted(11), rStarted(11), rSuccess(40), rSuccess(40.1), rBooted(61, newV), rBooted(61.2, newV)}, 81.1, false,
			want{done: true, outcome: upload.OutcomeUpdated}},
		{"offline after the target: waits for the bound", nil, append(happy[:5:5], rOff(70)), 100, false, want{wake: 110}},
		{"offline after the target, never back", nil, append(happy[:5:5], rOff(70)), 110, false,
			want{done: true, outcome: upload.OutcomeUnreachable, msg: "went offline"}},
		{"broker flap in the window restarts it, not a restart", nil, append(happy[:5:5], rOff(70), rOn(72)), 85, false, want{wake: 92}},
		{"broker flap in the window, then updated", nil, append(happy[:5:5], rOff(70), rOn(72)), 92, false,
			want{done: true, outcome: upload.OutcomeUpdated}},
		{"final before the window ends", nil, happy, 70, true,
			want{done: true, outcome: upload.OutcomeUnverified, reason: upload.ReasonWindowIncomplete}},

		// Crashes and rollbacks.
		{"success then booted the old one: rolled back", nil, []Report{rSuccess(40), rOff(41), rBooted(61, oldV)}, 62, false,
			want{done: true, outcome: upload.OutcomeRolledBack, source: "INFO1", msg: "came back on 14.2.0", running: "14.2.0"}},
		{"ran the target, then came back on the old one", nil, append(happy[:5:5], rOff(65), rBooted(70, oldV)), 71, false,
			want{done: true, outcome: upload.OutcomeRolledBack, msg: "ran 14.3.0(tasmota), then came back on 14.2.0"}},
		{"restarted without any result: unchanged", nil, []Report{rOff(20), rBooted(30, oldV)}, 31, false,
			want{done: true, outcome: upload.OutcomeUnchanged, msg: "restarted without installing"}},
		{"took the command, restarted on the old one: unchanged, no claim it did not install", nil, []Report{rStarted(11), rOff(20), rBooted(30, oldV)}, 31, false,
			want{done: true, outcome: upload.OutcomeUnchanged, msg: "restarted, and came back on 14.2.0(tasmota) (the new image was not written, or did not boot)"}},
		{"success, then a third version: unverified, not rolled back", nil, []Report{rSuccess(40), rOff(41), rBooted(61, "14.4.0(tasmota)")}, 62, false,
			want{done: true, outcome: upload.OutcomeUnverified, msg: "neither 14.2.0(tasmota) as before nor 14.3.0", running: "14.4.0"}},

		// Absent or contradicting facts.
		{"booted without a version: the read after the window", nil, []Report{rSuccess(40), rBooted(61, "")}, 91, false, want{reread: true}},
		{"booted without a version, waiting", nil, []Report{rSuccess(40), rBooted(61, "")}, 70, false, want{wake: 91}},
		{"booted without a version, read unanswered", func(s *DeviceSpec) { s.Reread = at(91) }, []Report{rSuccess(40), rBooted(61, "")}, 92, false,
			want{done: true, outcome: upload.OutcomeUnverified, reason: upload.ReasonTellsNothing}},
		{"booted without a version, read tells the target", func(s *DeviceSpec) { s.Reread, s.RereadAnswered = at(91), true },
			[]Report{rSuccess(40), rBooted(61, ""), rStatus(91.5, newV)}, 112, false,
			want{done: true, outcome: upload.OutcomeUpdated, source: "Status 2", running: "14.3.0"}},
		{"what it ran before is unknown, booted the target", func(s *DeviceSpec) { s.Before = &Facts{} },
			[]Report{rOff(41), rBooted(61, newV)}, 82, false,
			want{done: true, outcome: upload.OutcomeUnverified, reason: upload.ReasonBeforeUnknown}},
		{"a read telling the old release mid-update concludes nothing", nil, []Report{rStarted(11), rStatus(20, oldV)}, 50, false, want{wake: 110}},
		{"an answer without a version changes nothing", nil, append(happy[:5:5], rStatus(65, "")), 81, false,
			want{done: true, outcome: upload.OutcomeUpdated}},

		// Missed reports: the one read.
		{"nothing after the command: wait for the bound", nil, nil, 50, false, want{wake: 110}},
		{"nothing after the command: the read at the bound", nil, nil, 110, false, want{reread: true}},
		{"nothing, read unanswered", func(s *DeviceSpec) { s.Reread = at(110) }, nil, 111, false,
			want{done: true, outcome: upload.OutcomeUnreachable, msg: "told nothing since the command"}},
		{"nothing, read tells the old release", func(s *DeviceSpec) { s.Reread, s.RereadAnswered = at(110), true }, []Report{rStatus(110.5, oldV)}, 111, false,
			want{done: true, outcome: upload.OutcomeUnchanged, source: "Status 2", msg: "still runs 14.2.0", running: "14.2.0"}},
		{"took the command, read tells the old release", func(s *DeviceSpec) { s.Reread, s.RereadAnswered = at(110), true },
			[]Report{rStarted(11), rStatus(110.5, oldV)}, 111, false,
			want{done: true, outcome: upload.OutcomeUnchanged, msg: "took the command"}},
		{"only link flaps, read unanswered", func(s *DeviceSpec) { s.Reread = at(110) }, []Report{rOff(20), rOn(25), rOff(30), rOn(31)}, 111, false,
			want{done: true, outcome: upload.OutcomeUnreachable, msg: "only its link"}},
		{"success, offline: no read while it is away", nil, []Report{rSuccess(40), rOff(41)}, 75, false, want{wake: 110}},
		{"success, offline, bound: the read", nil, []Report{rSuccess(40), rOff(41)}, 110, false, want{reread: true}},
		{"success, offline, never came back", func(s *DeviceSpec) { s.Reread = at(110) }, []Report{rSuccess(40), rOff(41)}, 111, false,
			want{done: true, outcome: upload.OutcomeUnreachable, msg: "never came back"}},
		{"success, back online, boot report missed: the read", nil, []Report{rSuccess(40), rOff(41), rOn(50)}, 70, false, want{reread: true}},
		{"missed boot report, the read tells the target", func(s *DeviceSpec) { s.Reread, s.RereadAnswered = at(70), true },
			[]Report{rSuccess(40), rOff(41), rOn(50), rStatus(70.5, newV)}, 91, false,
			want{done: true, outcome: upload.OutcomeUpdated, source: "Status 2"}},
		{"missed boot report, the read tells the old release", func(s *DeviceSpec) { s.Reread, s.RereadAnswered = at(70), true },
			[]Report{rSuccess(40), rOff(41), rOn(50), rStatus(70.5, oldV)}, 71, false,
			want{done: true, outcome: upload.OutcomeRolledBack, msg: "yet runs 14.2.0"}},
		{"a read telling the target without a boot: identity changed", nil, []Report{rStatus(80, newV)}, 100, false,
			want{done: true, outcome: upload.OutcomeUpdated, source: "Status 2"}},

		// Failures and retries.
		{"failed download: command again", nil, []Report{rStarted(11), rFailed(30, "Failed. HTTP error: connection lost")}, 31, false,
			want{retry: true}},
		{"failed, then a broker flap: still commanded again", nil, []Report{rFailed(30, "Failed"), rOff(31), rOn(35)}, 36, false,
			want{retry: true}},
		{"failed twice: no retries left", func(s *DeviceSpec) { s.Commands = append(s.Commands, at(35)) },
			[]Report{rFailed(30, "Failed"), rStarted(36), rFailed(50, "Failed. HTTP error: connection lost")}, 51, false,
			want{done: true, outcome: upload.OutcomeFailed, class: upload.ClassNetwork, msg: "after 2 commands"}},
		{"the failure of the first command is not the second's", func(s *DeviceSpec) { s.Commands = append(s.Commands, at(35)) },
			[]Report{rFailed(30, "Failed")}, 50, false, want{wake: 135}},
		{"no retries", func(s *DeviceSpec) { s.Retries = 0 }, []Report{rFailed(30, "Failed 3")}, 31, false,
			want{done: true, outcome: upload.OutcomeFailed, msg: `"Failed 3"`}},
		{"failed after it restarted: never again", nil, []Report{rSuccess(20), rFailed(30, "Failed")}, 31, false,
			want{done: true, outcome: upload.OutcomeFailed, msg: "restarted since"}},
		{"failed on an MD5 mismatch: not again", nil, []Report{rFailed(30, "Failed. MD5 mismatch")}, 31, false,
			want{done: true, outcome: upload.OutcomeFailed, class: upload.ClassRejected}},
		{"a file the server does not have: not again", nil, []Report{rFailed(30, "Failed File Not Found (404)")}, 31, false,
			want{done: true, outcome: upload.OutcomeFailed, class: upload.ClassRejected}},
		{"no space (after the device's own tries of -minimal): not again", nil, []Report{rFailed(30, "Failed Not Enough space")}, 31, false,
			want{done: true, outcome: upload.OutcomeFailed, class: upload.ClassRejected}},
		{"a cut download: again", nil, []Report{rFailed(30, "Failed Update error: Stream Read Timeout")}, 31, false,
			want{retry: true}},
		{"the family's class decides", nil, []Report{{Kind: ReportFailed, At: at(30), Words: "Failed 5", Class: upload.ClassRejected}}, 31, false,
			want{done: true, outcome: upload.OutcomeFailed, class: upload.ClassRejected}},

		// Two steps.
		{"two-step updated", nil, []Report{rSuccess(40), rOff(41), rBooted(61, minV), rSuccess(90), rOff(91), rBooted(120, newV)}, 140, false,
			want{done: true, outcome: upload.OutcomeUpdated}},
		{"on the loader: no read, twice the bound", nil, []Report{rSuccess(40), rOff(41), rBooted(61, minV)}, 150, false, want{wake: 210}},
		{"stuck on the loader", nil, []Report{rSuccess(40), rOff(41), rBooted(61, minV)}, 210, false,
			want{done: true, outcome: upload.OutcomeFailed, msg: "still runs its minimal image", running: "14.3.0(minimal)"}},
		{"silent after the loader", nil, []Report{rSuccess(40), rOff(41), rBooted(61, minV), rOff(70)}, 210, false,
			want{done: true, outcome: upload.OutcomeUnreachable, msg: "then went silent"}},
		{"the loader's download failed", nil, []Report{rSuccess(40), rBooted(61, minV), rFailed(80, "Failed")}, 81, false,
			want{done: true, outcome: upload.OutcomeFailed, msg: "minimal image"}},
		{"loader, then the old release: rolled back", nil, []Report{rSuccess(40), rBooted(61, minV), rBooted(90, oldV)}, 91, false,
			want{done: true, outcome: upload.OutcomeRolledBack, msg: "minimal"}},

		// Resume.
		{"resumed: the window starts again", func(s *DeviceSpec) { s.Resumed = at(200) }, happy, 205, false, want{wake: 220}},
		{"resumed: updated after a window watched", func(s *DeviceSpec) { s.Resumed = at(200) }, happy, 221, false,
			want{done: true, outcome: upload.OutcomeUpdated}},
		{"resumed after the bound: a reboot window before the read", func(s *DeviceSpec) { s.Resumed = at(200) }, []Report{rStarted(11)}, 205, false,
			want{wake: 230}},
		{"resumed: a failed download is not commanded again", func(s *DeviceSpec) { s.Resumed = at(200) }, []Report{rFailed(201, "Failed")}, 202, false,
			want{done: true, outcome: upload.OutcomeFailed, msg: "interrupted"}},
		{"resumed: the read", func(s *DeviceSpec) { s.Resumed = at(200) }, []Report{rStarted(11)}, 230, false, want{reread: true}},
		{"after a link outage: a failed download is not commanded again", func(s *DeviceSpec) { s.Resumed, s.Outage = at(50), true }, []Report{rFailed(51, "Failed")}, 52, false,
			want{done: true, outcome: upload.OutcomeFailed, msg: "while the link to the devices was down"}},
		{"after a link outage: the stability window starts again", func(s *DeviceSpec) { s.Resumed, s.Outage = at(70), true }, happy, 75, false, want{wake: 90}},
	}
	for _, c := range cases {
		spec := baseSpec()
		if c.spec != nil {
			c.spec(&spec)
		}
		v, done := Decide(spec, c.reports, at(c.now), c.final)
		w := c.want
		switch {
		case done != w.done:
			t.Errorf("%s: done %v (%+v), want %v", c.name, done, v, w.done)
			continue
		case done && v.Outcome != w.outcome:
			t.Errorf("%s: %s (%s), want %s", c.name, v.Outcome, v.Message, w.outcome)
		case w.reason != "" && v.Reason != w.reason:
			t.Errorf("%s: reason %q, want %q", c.name, v.Reason, w.reason)
		case !done && (v.Retry != w.retry || v.Reread != w.reread):
			t.Errorf("%s: retry %v reread %v, want %v %v (%+v)", c.name, v.Retry, v.Reread, w.retry, w.reread, v)
		case w.wake != 0 && !v.Wake.Equal(at(w.wake)):
			t.Errorf("%s: wake at %v, want %vs", c.name, v.Wake.Sub(t0), w.wake)
		case w.source != "" && v.Source != w.source:
			t.Errorf("%s: source %q, want %q", c.name, v.Source, w.source)
		case w.msg != "" && !strings.Contains(v.Message, w.msg):
			t.Errorf("%s: message %q, want it to say %q", c.name, v.Message, w.msg)
		case w.class != "" && v.Class != w.class:
			t.Errorf("%s: class %q, want %q", c.name, v.Class, w.class)
		case w.running != "" && v.Running != w.running:
			t.Errorf("%s: running %q, want %q", c.name, v.Running, w.running)
		}
		checkInvariants(t, c.name, spec, c.reports, at(c.now), c.final, v, done)
	}
}

// checkInvariants: updated only on a boot or read after the first
// command telling the target and no loader; never a verdict that leaves
// the engine nothing to wait for; one-line messages.
func checkInvariants(t *testing.T, name string, spec DeviceSpec, reports []Report, now time.Time, final bool, v Verdict, done bool) {
	t.Helper()
	if done && v.Outcome == upload.OutcomeUpdated {
		ok := false
		for _, r := range reports {
			if len(spec.Commands) > 0 && !r.At.Before(spec.Commands[0]) && (r.Kind == ReportBooted || r.Kind == ReportStatus) &&
				r.Facts.Release == spec.Expect && r.Facts.Intermediate == "" {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s: updated without a report after the command telling %s: %+v", name, spec.Expect, reports)
		}
	}
	if !done && len(spec.Commands) > 0 && !v.Retry && !v.Reread && v.Wake.IsZero() {
		t.Errorf("%s: not done and nothing to wait for: %+v", name, v)
	}
	if !done && final {
		t.Errorf("%s: final but not done: %+v", name, v)
	}
	if !done && !v.Wake.IsZero() && !v.Wake.After(now) {
		t.Errorf("%s: wake %v is not after now %v", name, v.Wake, now)
	}
	if strings.Contains(v.Message, "\n") {
		t.Errorf("%s: message not one line: %q", name, v.Message)
	}
}

// TestDecideRandom drives random report sequences through Decide at
// random times and checks the invariants, and that the engine's loop
// (retry, read, wake) always ends.
func TestDecideRandom(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	vers := []string{oldV, newV, minV, "", "15.0.0(tasmota)"}
	for i := 0; i < 3000; i++ {
		spec := baseSpec()
		if rnd.IntN(4) == 0 {
			spec.Before = &Facts{}
		}
		var reports []Report
		s := 0.0
		for n := rnd.IntN(8); n > 0; n-- {
			s += rnd.Float64() * 40
			var r Report
			switch rnd.IntN(7) {
			case 0:
				r = rOn(s)
			case 1:
				r = rOff(s)
			case 2:
				r = rStarted(s)
			case 3:
				r = rFailed(s, "Failed")
			case 4:
				r = rSuccess(s)
			case 5:
				r = rBooted(s, vers[rnd.IntN(len(vers))])
			default:
				r = rStatus(s, vers[rnd.IntN(len(vers))])
			}
			reports = append(reports, r)
		}
		now := at(s + rnd.Float64()*300)
		// The engine's loop, without new reports: it must conclude.
		for step := 0; ; step++ {
			if step > 20 {
				t.Fatalf("no conclusion after 20 steps: %+v", reports)
			}
			v, done := Decide(spec, reports, now, false)
			checkInvariants(t, "random", spec, reports, now, false, v, done)
			if done {
				break
			}
			switch {
			case v.Retry:
				spec.Commands = append(spec.Commands, now)
			case v.Reread:
				spec.Reread = now
			default:
				now = v.Wake
			}
		}
		if v, done := Decide(spec, reports, now, true); !done {
			t.Fatalf("final not done: %+v", v)
		}
	}
}
