package upload

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The verdict over the whole device-shape space: every subset of the facts
// a device may tell, every behaviour, a failed or good pre-flight read,
// every kind of answer and every source of the expected identity. The
// device here is a model on a simulated clock, written from the contract
// (device-contract.md §3-§4), not from the simulator; the invariants are
// checked against what the device did, never against what it told.

// shapeBehaviour is what a device does after it accepted the image.
type shapeBehaviour int

const (
	installsAndKeeps shapeBehaviour = iota
	neverRestarts
	rollsBackToOld
	rollsBackToSameVersionBuild
	fallsToThirdImage
	crashLoopsThenOld
	pendingThenOld
	runsForeignELF
	neverComesBack
	numBehaviours
)

func (b shapeBehaviour) String() string {
	return [...]string{"installs-and-keeps", "never-restarts", "rolls-back-to-old", "rolls-back-to-same-version-build",
		"falls-to-third-image", "crash-loops-then-old", "pending-then-old", "runs-foreign-elf", "never-comes-back"}[b]
}

// The builds a device may run. The sent image is "1.0.1" with elf newELF.
const (
	newELF     = "aaaaaaaa11111111"
	oldELF     = "bbbbbbbb22222222"
	sameVerELF = "cccccccc33333333" // another build of 1.0.1
	factoryELF = "dddddddd44444444"
	foreignELF = "eeeeeeee55555555"
)

type build struct{ version, elf string }

var (
	bNew     = build{"1.0.1", newELF}
	bOld     = build{"1.0.0", oldELF}
	bSameVer = build{"1.0.1", sameVerELF}
	bFactory = build{"0.9.0", factoryELF}
	bForeign = build{"1.0.1", foreignELF}
)

// tells is which facts the device tells at all.
type tells struct {
	otaVersion, otaELF, otaState, otaUptime bool // GET /ota/status
	apiVersion, apiUptime                   bool // GET /api/status
	txtVersion                              bool // mDNS TXT
}

func (t tells) String() string {
	var b strings.Builder
	for _, f := range []struct {
		on   bool
		name string
	}{{t.otaVersion, "ota.version"}, {t.otaELF, "ota.elf"}, {t.otaState, "ota.state"}, {t.otaUptime, "ota.uptime"},
		{t.apiVersion, "api.version"}, {t.apiUptime, "api.uptime"}, {t.txtVersion, "txt.version"}} {
		if f.on {
			b.WriteString(f.name + "+")
		}
	}
	if b.Len() == 0 {
		return "nothing"
	}
	return strings.TrimSuffix(b.String(), "+")
}

func allTells() []tells {
	var out []tells
	for m := range 1 << 7 {
		out = append(out, tells{m&1 != 0, m&2 != 0, m&4 != 0, m&8 != 0, m&16 != 0, m&32 != 0, m&64 != 0})
	}
	return out
}

// phase is one stretch of the device's life after acceptance, in
// simulated seconds: silent (rebooting), or up running a build in a state
// since a boot at bootAt (for its uptime).
type phase struct {
	from, to float64 // [from, to)
	silent   bool
	b        build
	state    string
	bootAt   float64
}

// timeline is what the device does from acceptance (t=0) on; before it
// the device runs `before` since boot at -3600 s.
func timeline(bh shapeBehaviour) (before build, ph []phase) {
	const forever = 1e9
	up := func(from, to float64, b build, st string, boot float64) phase {
		return phase{from: from, to: to, b: b, state: st, bootAt: boot}
	}
	down := func(from, to float64) phase { return phase{from: from, to: to, silent: true} }
	before = bOld
	// Every behaviour answers on the old image for a second after
	// acceptance (the restart comes 0.5-1 s after the answer), then is
	// silent for 3 s while it reboots (2-6 s on an ESP32-S3).
	pre := up(0, 1, bOld, "valid", -3600)
	switch bh {
	case installsAndKeeps:
		ph = []phase{pre, down(1, 4), up(4, 12, bNew, "pending_verify", 4), up(12, forever, bNew, "valid", 4)}
	case neverRestarts:
		ph = []phase{up(0, forever, bOld, "valid", -3600)}
	case rollsBackToOld:
		ph = []phase{pre, down(1, 4), up(4, 6, bNew, "pending_verify", 4), down(6, 9), up(9, forever, bOld, "valid", 9)}
	case rollsBackToSameVersionBuild:
		before = bSameVer
		ph = []phase{up(0, 1, bSameVer, "valid", -3600), down(1, 4), up(4, 6, bNew, "pending_verify", 4), down(6, 9), up(9, forever, bSameVer, "valid", 9)}
	case fallsToThirdImage:
		ph = []phase{pre, down(1, 4), up(4, 6, bNew, "pending_verify", 4), down(6, 9), up(9, forever, bFactory, "valid", 9)}
	case crashLoopsThenOld:
		ph = []phase{pre, down(1, 4), up(4, 5, bNew, "pending_verify", 4), down(5, 8), up(8, 9, bNew, "pending_verify", 8), down(9, 12), up(12, forever, bOld, "valid", 12)}
	case pendingThenOld:
		// It fails its self-check within the stability window, which
		// --stability-window must cover (a device telling no state that
		// fails after it cannot be told from one that kept the image).
		ph = []phase{pre, down(1, 4), up(4, 12, bNew, "pending_verify", 4), down(12, 15), up(15, forever, bOld, "valid", 15)}
	case runsForeignELF:
		ph = []phase{pre, down(1, 4), up(4, forever, bForeign, "valid", 4)}
	case neverComesBack:
		ph = []phase{pre, down(1, forever)}
	}
	return before, ph
}

// read is what a read at simulated second t returns: the facts the device
// tells of the build it runs, as DeviceObserver would give them.
func read(tl tells, b build, state string, uptime float64) Facts {
	f := Facts{Answered: true}
	switch {
	case tl.otaVersion:
		f.Version, f.VersionSource = b.version, "/ota/status"
	case tl.apiVersion:
		f.Version, f.VersionSource = b.version, "/api/status"
	case tl.txtVersion:
		f.Version, f.VersionSource = b.version, "txt"
	}
	if tl.otaELF {
		f.ELFSHA256 = b.elf
	}
	if tl.otaState {
		f.State = state
	}
	switch {
	case tl.otaUptime:
		f.Uptime, f.UptimeKnown, f.UptimeSource = time.Duration(uptime)*time.Second, true, "/ota/status"
	case tl.apiUptime:
		f.Uptime, f.UptimeKnown, f.UptimeSource = time.Duration(uptime)*time.Second, true, "/api/status"
	}
	return f
}

type expectFrom int

const (
	expectImage   expectFrom = iota // the image's elf and version
	expectVersion                   // --expect-version on an image with no identity
	expectNone                      // an image with no identity
)

func (e expectFrom) String() string {
	return [...]string{"expect-image", "expect-version", "expect-none"}[e]
}

type shapeCase struct {
	tells     tells
	bh        shapeBehaviour
	preflight bool // the pre-flight read succeeded
	answer    Answer
	expect    expectFrom
}

func (c shapeCase) String() string {
	pf := "preflight-ok"
	if !c.preflight {
		pf = "preflight-failed"
	}
	return fmt.Sprintf("%s/%s/%s/answer-%d/%s", c.tells, c.bh, pf, c.answer, c.expect)
}

// Timing of the modelled run (seconds): reads every second, each silent
// read waits out a 1 s connect timeout.
const (
	shapeStability = 10 * time.Second
	shapeGrace     = 15 * time.Second
	shapeVerify    = 45 * time.Second
)

// runShape drives Decide the way the runner does: a read, then Decide,
// until it concludes or the verify timeout.
func runShape(c shapeCase) Verdict {
	before, ph := timeline(c.bh)
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }
	spec := VerdictSpec{
		Accepted: t0, Answer: c.answer, BeforeAt: at(-10),
		StabilityWindow: shapeStability, RebootGrace: shapeGrace,
	}
	if c.preflight {
		spec.Before = read(c.tells, before, "valid", 3600-10)
	}
	switch c.expect {
	case expectImage:
		spec.Expected = Identity{ELF: newELF, Version: "1.0.1"}
	case expectVersion:
		spec.Expected = Identity{Version: "1.0.1"}
	}
	var obs []Observation
	for sec := 0.0; ; {
		var p phase
		for _, x := range ph {
			if sec >= x.from && sec < x.to {
				p = x
			}
		}
		o := Observation{At: at(sec)}
		if p.silent {
			o.Silent, o.End = true, at(sec+1) // a connect timeout
			sec += 2                          // the timeout, then the poll interval
		} else {
			o.Facts, o.End = read(c.tells, p.b, p.state, sec-p.bootAt), at(sec+0.01)
			sec++
		}
		obs = append(obs, o)
		if v, done := Decide(spec, obs, o.End, false); done {
			return v
		}
		if at(sec).After(t0.Add(shapeVerify)) {
			v, _ := Decide(spec, obs, at(sec), true)
			return v
		}
	}
}

func allShapes() []shapeCase {
	var out []shapeCase
	for _, tl := range allTells() {
		for bh := range numBehaviours {
			for _, pf := range []bool{true, false} {
				for _, a := range []Answer{AnswerNormal, AnswerLost, AnswerEarly} {
					for _, e := range []expectFrom{expectImage, expectVersion, expectNone} {
						out = append(out, shapeCase{tl, bh, pf, a, e})
					}
				}
			}
		}
	}
	return out
}

// TestVerdictOver20736DeviceShapes: 128 fact subsets × 9 behaviours × 2
// pre-flight reads × 3 answers × 3 expected identities.
func TestVerdictOver20736DeviceShapes(t *testing.T) {
	shapes := allShapes()
	if len(shapes) != 20736 {
		t.Fatalf("%d shapes, the test's name says 20736", len(shapes))
	}
	counts := map[Outcome]int{}
	for _, c := range shapes {
		v := runShape(c)
		counts[v.Outcome]++
		fail := func(invariant string) {
			t.Errorf("%s: %s %s (%s): %s", c, v.Outcome, v.Reason, v.Message, invariant)
		}
		tl := c.tells
		versionTold := tl.otaVersion || tl.apiVersion || tl.txtVersion
		elfDecides := tl.otaELF && c.expect == expectImage
		idKnown := c.expect != expectNone
		// A foreign build with the new version string can be told from the
		// new build by its elf only.
		indistinguishable := c.bh == runsForeignELF && !elfDecides
		// (a) updated ⇒ the device installed the image and kept it.
		if v.Outcome == OutcomeUpdated && c.bh != installsAndKeeps && !indistinguishable {
			fail("(a) updated, but the device did not install and keep the image")
		}
		// (b) installs and keeps, telling its elf or a version other than
		// the pre-flight one, and a valid state or a complete window ⇒
		// updated. (The window completes in every timeline here.)
		if c.bh == installsAndKeeps && idKnown && (elfDecides || versionTold && c.preflight) && v.Outcome != OutcomeUpdated {
			fail("(b) the device installed and kept the image and told enough, but it is not updated")
		}
		// (c) the same identity as before and no elf told ⇒ never updated.
		if c.bh == rollsBackToSameVersionBuild && !elfDecides && v.Outcome == OutcomeUpdated {
			fail("(c) updated on a version string the old build shares")
		}
		// (d) exit 0 ⇒ no device that told a distinguishing identity
		// rolled back.
		rolledBack := c.bh != installsAndKeeps && c.bh != neverRestarts && c.bh != neverComesBack
		distinguishing := idKnown && (elfDecides || versionTold && c.bh != rollsBackToSameVersionBuild && c.bh != runsForeignELF)
		if rolledBack && distinguishing && !v.Outcome.Bad() {
			fail("(d) a device that told its identity did not end up on the image, and the run would exit 0")
		}
		// Only a device that never installed the image may get it again.
		if v.NotInstalled && c.bh != neverRestarts {
			fail("NotInstalled (the image may be sent again), but the device restarted")
		}
		// Every unverified outcome says why, and only unverified ones do.
		if (v.Outcome == OutcomeUnverified) != (v.Reason != "") {
			fail("an unverified outcome needs a reason, and only it")
		}
		// What was never told is never claimed.
		if v.Outcome == OutcomeRolledBack && !versionTold && !tl.otaELF {
			fail("rolled-back names an image the device never told")
		}
		if c.bh == neverComesBack && v.Outcome != OutcomeUnreachable && v.Outcome != OutcomeUnverified {
			fail("a device that never came back is unreachable (or unverified when nothing can be compared)")
		}
	}
	t.Logf("outcomes over %d shapes: %v", len(shapes), counts)
}

// TestDecideEdges: single shapes the product above does not reach.
func TestDecideEdges(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	base := VerdictSpec{Expected: Identity{ELF: newELF, Version: "1.0.1"}, Accepted: t0, BeforeAt: sec(-5),
		StabilityWindow: 5 * time.Second, RebootGrace: 10 * time.Second}
	up := func(at float64, v, elf, state string) Observation {
		return Observation{At: sec(at), End: sec(at + 0.01), Facts: Facts{Answered: true, Version: v, ELFSHA256: elf, State: state, VersionSource: "/ota/status"}}
	}
	silent := func(at float64) Observation { return Observation{At: sec(at), End: sec(at + 1), Silent: true} }

	t.Run("an absent uptime proves no restart", func(t *testing.T) {
		// The OTS firmware as shipped: /api/status tells a version and no
		// uptime. A read a moment after the answer is the old image, not
		// a rollback.
		s := base
		s.Expected = Identity{Version: "1.0.1"}
		s.Before = Facts{Answered: true, Version: "1.0.0", VersionSource: "/api/status"}
		obs := []Observation{{At: sec(0.001), End: sec(0.002), Facts: Facts{Answered: true, Version: "1.0.0", VersionSource: "/api/status"}}}
		if v, done := Decide(s, obs, sec(0.002), false); done {
			t.Fatalf("concluded %s (%s) before the device restarted", v.Outcome, v.Message)
		}
	})
	t.Run("one short silence proves no restart", func(t *testing.T) {
		s := base
		s.Before = Facts{Answered: true, Version: "1.0.0", ELFSHA256: oldELF}
		obs := []Observation{silent(0), up(0.5, "1.0.0", oldELF, "valid")}
		obs[0].End = sec(0.3)
		if v, done := Decide(s, obs, sec(1), false); done {
			t.Fatalf("concluded %s (%s) on one short silence", v.Outcome, v.Message)
		}
	})
	t.Run("a refusal is not silence", func(t *testing.T) {
		s := base
		s.Before = Facts{Answered: true, Version: "1.0.0", ELFSHA256: oldELF}
		refused := Observation{At: sec(0), End: sec(0.01)}
		obs := []Observation{refused, refused, refused, {At: sec(2), End: sec(2.01)}, up(3, "1.0.0", oldELF, "valid")}
		if v, done := Decide(s, obs, sec(3), false); done {
			t.Fatalf("concluded %s (%s) on refusals", v.Outcome, v.Message)
		}
	})
	t.Run("the elf vetoes the version", func(t *testing.T) {
		s := base
		s.Before = Facts{Answered: true, Version: "1.0.0", ELFSHA256: oldELF}
		obs := []Observation{silent(0), silent(1.5), up(3, "1.0.1", foreignELF, "valid")}
		v, done := Decide(s, obs, sec(3), false)
		if !done || v.Outcome != OutcomeRolledBack {
			t.Fatalf("%v %s (%s), want rolled-back", done, v.Outcome, v.Message)
		}
	})
	t.Run("a still-silent device is not unchanged", func(t *testing.T) {
		s := base
		s.Before = Facts{Answered: true, Version: "1.0.0", ELFSHA256: oldELF}
		obs := []Observation{up(0.1, "1.0.0", oldELF, "valid"), silent(9), silent(10.5)}
		if v, done := Decide(s, obs, sec(11.5), false); done {
			t.Fatalf("concluded %s (%s) while the device is away", v.Outcome, v.Message)
		}
		v, _ := Decide(s, obs, sec(11.5), true)
		if v.Outcome != OutcomeUnreachable {
			t.Fatalf("%s (%s), want unreachable", v.Outcome, v.Message)
		}
	})
	t.Run("a read without the elf does not undo what the elf decided", func(t *testing.T) {
		// /ota/status tells the new build pending once; afterwards only
		// /api/status answers, with the version every 1.0.1 build shares.
		s := base
		s.StabilityWindow = 30 * time.Second
		s.Before = Facts{Answered: true, Version: "1.0.1", ELFSHA256: sameVerELF, State: "valid", VersionSource: "/ota/status"}
		obs := []Observation{silent(1), silent(2), up(3, "1.0.1", newELF, "pending_verify")}
		for x := 4.0; x < 40; x++ {
			obs = append(obs, Observation{At: sec(x), End: sec(x + 0.01), Facts: Facts{Answered: true, Version: "1.0.1", VersionSource: "/api/status"}})
		}
		v, _ := Decide(s, obs, sec(40), true)
		if v.Outcome == OutcomeUpdated {
			t.Fatalf("updated (%s) on version-only reads after the elf said pending", v.Message)
		}
	})
	t.Run("uptimes from two sources are not compared", func(t *testing.T) {
		s := base
		s.Before = Facts{Answered: true, Version: "1.0.0", ELFSHA256: oldELF, Uptime: 100 * time.Second, UptimeKnown: true, UptimeSource: "/ota/status"}
		o := up(3, "1.0.0", oldELF, "valid")
		o.Facts.Uptime, o.Facts.UptimeKnown, o.Facts.UptimeSource = 60*time.Second, true, "/api/status"
		if v, done := Decide(s, []Observation{o}, sec(3), false); done && v.Outcome == OutcomeRolledBack {
			t.Fatalf("rolled-back (%s) on uptimes from two sources", v.Message)
		}
	})
	t.Run("unobservable espota", func(t *testing.T) {
		s := base
		s.Unobservable = true
		v, done := Decide(s, nil, t0, false)
		if !done || v.Outcome != OutcomeUnverified || v.Reason != ReasonTellsNothing {
			t.Fatalf("%v %s %s", done, v.Outcome, v.Reason)
		}
	})
	t.Run("no-wait-valid stops at pending", func(t *testing.T) {
		s := base
		s.NoWaitValid = true
		s.Before = Facts{Answered: true, Version: "1.0.0", ELFSHA256: oldELF}
		v, done := Decide(s, []Observation{silent(1), silent(2.5), up(4, "1.0.1", newELF, "pending_verify")}, sec(4), false)
		if !done || v.Outcome != OutcomeUpdated || !v.Pending {
			t.Fatalf("%v %s pending=%v", done, v.Outcome, v.Pending)
		}
	})
}
