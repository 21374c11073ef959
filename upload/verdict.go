package upload

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Reason says why a device ended unverified (Result.Reason, "reason" in
// the JSON). The values are stable.
type Reason string

// The reasons an update is not verified.
const (
	// ReasonTellsNothing: the device tells no version or build at all.
	ReasonTellsNothing Reason = "tells-nothing"
	// ReasonNoIdentity: the image carries nothing the device would report
	// (a filesystem image, no app descriptor, an ESP8266 image) and no
	// --expect-version was given.
	ReasonNoIdentity Reason = "image-has-no-identity"
	// ReasonNotYetValid: the device runs the image but still tells an app
	// state other than valid when verification ends.
	ReasonNotYetValid Reason = "not-yet-valid"
	// ReasonWindowIncomplete: the device runs the image and tells no app
	// state, but verification ended before the stability window did.
	ReasonWindowIncomplete Reason = "window-incomplete"
	// ReasonSameIdentity: what the device tells cannot tell the new image
	// from the one it ran before (the same version and no build hash, or
	// the same build and no restart seen).
	ReasonSameIdentity Reason = "same-identity"
	// ReasonBeforeUnknown: the device runs the image, but what it ran
	// before is unknown (the pre-flight read failed), so neither a change
	// of image nor, where only a version is told, a same-version rollback
	// can be ruled out.
	ReasonBeforeUnknown Reason = "before-unknown"
)

// Identity is what tells one build from another: the elf_sha256 and the
// version string, each "" when not told (or, for an image, not known).
type Identity struct {
	ELF     string
	Version string
	// Source is where the device told Version; identities from different
	// sources are compared by elf only (a web app may word the version
	// otherwise than /ota/status).
	Source string
	// Build is a build identity other than the elf (Facts.Build: ESPHome's
	// config hash), "" when not told or not expected.
	Build string
}

// Known reports whether the identity tells anything.
func (i Identity) Known() bool { return i.ELF != "" || i.Version != "" || i.Build != "" }

// overlap reports whether the two identities tell a common field, so that
// they can be compared at all.
func overlap(a, b Identity) bool {
	return a.ELF != "" && b.ELF != "" || a.Build != "" && b.Build != "" || a.Version != "" && b.Version != ""
}

func (i Identity) String() string {
	if i.Build != "" && i.ELF == "" {
		if i.Version != "" {
			return i.Version + " (build " + i.Build + ")"
		}
		return "build " + i.Build
	}
	switch {
	case i.Version != "" && i.ELF != "":
		return i.Version + " (elf " + shortELF(i.ELF) + ")"
	case i.Version != "":
		return i.Version
	case i.ELF != "":
		return "elf " + shortELF(i.ELF)
	}
	return "an unknown image"
}

func shortELF(s string) string { return s[:min(len(s), 8)] }

// identityOf is what f tells of the running image. An elf_sha256 shorter
// than 8 hex digits identifies nothing.
func identityOf(f Facts) Identity {
	id := Identity{Version: f.Version, Source: f.VersionSource, Build: strings.ToLower(strings.TrimSpace(f.Build))}
	// An all-zero elf is a placeholder, as the image side treats it.
	if e := strings.ToLower(strings.TrimSpace(f.ELFSHA256)); len(e) >= 8 && strings.Trim(e, "0") != "" {
		id.ELF = e
	}
	return id
}

// match is a three-way answer: the facts say yes, no, or nothing.
type match int

const (
	unknown match = iota
	yes
	no
)

// matches compares what a device runs with the expected image. Where the
// device tells its elf and the image's is known, the elf decides alone;
// else the build and the version must both match where both are told.
func matches(expected, seen Identity) match {
	if expected.ELF != "" && seen.ELF != "" {
		if sameELF(seen.ELF, expected.ELF) {
			return yes
		}
		return no
	}
	m := unknown
	if expected.Build != "" && seen.Build != "" {
		if seen.Build != expected.Build {
			return no
		}
		m = yes
	}
	if expected.Version != "" && seen.Version != "" {
		if seen.Version != expected.Version {
			return no
		}
		m = yes
	}
	return m
}

// sameBuild compares two identities a device told: by elf where both have
// one, else by version where both came from the same source.
func sameBuild(a, b Identity) match {
	switch {
	case a.ELF != "" && b.ELF != "":
		if sameELF(a.ELF, b.ELF) || sameELF(b.ELF, a.ELF) {
			return yes
		}
		return no
	case a.Build != "" && b.Build != "":
		if a.Build == b.Build {
			return yes
		}
		return no
	case a.ELF != "" || b.ELF != "":
		// One told its elf, the other not: a source changed, not the build.
		if a.Version != "" && a.Version == b.Version && a.Source == b.Source {
			return yes
		}
		return unknown
	case a.Version != "" && b.Version != "" && a.Source == b.Source:
		if a.Version == b.Version {
			return yes
		}
		return no
	}
	return unknown
}

// Answer is how the device's answer to the upload came.
type Answer int

const (
	// AnswerNormal: the device accepted after taking the whole image.
	AnswerNormal Answer = iota
	// AnswerLost: the device took, or may have taken, the whole image,
	// but its answer never came.
	AnswerLost
	// AnswerEarly: the device said success before it had taken the whole
	// image.
	AnswerEarly
)

// Observation is one read of a device after it accepted the image.
type Observation struct {
	// At is when the read started, End when it ended.
	At, End time.Time
	// Silent: the connect met silence (timed out, or no route), as a
	// rebooting device does. A refusal is not silence.
	Silent bool
	// Facts is what the device told; Facts.Answered says it answered.
	Facts Facts
}

// VerdictSpec is what the verdict knows besides the observations: what was
// sent and what the device told before.
type VerdictSpec struct {
	// Expected is the identity the device must be seen running: the
	// image's elf and version, or --expect-version. Unknown when the image
	// carries none.
	Expected Identity
	// Before is the pre-flight read (Answered false when it failed), read
	// at BeforeAt.
	Before   Facts
	BeforeAt time.Time
	// Accepted is when the device accepted the image (or its answer was
	// found lost).
	Accepted time.Time
	Answer   Answer
	// Since is the last moment the device was known to be up before the
	// reads began (the last byte it took); zero means Accepted. After a
	// lost answer the reads start late, and a restart in between is seen
	// only through the uptime.
	Since time.Time
	// Unobservable: nothing can be read from the device after the upload
	// (an espota device with no TXT version).
	Unobservable bool
	// WatchUntold: the device told nothing before that the expected
	// identity could be compared with, but the new image may tell it (an
	// ESPHome YAML that adds a project:, a release that adds config_hash):
	// a read that tells nothing comparable concludes nothing until final.
	WatchUntold bool

	StabilityWindow time.Duration
	RebootGrace     time.Duration
	NoWaitValid     bool
}

// Verdict is the verification's conclusion.
type Verdict struct {
	Outcome Outcome
	Reason  Reason
	Pending bool
	Running string
	State   string
	Source  string
	Message string
	// NotInstalled (with Unchanged): the device demonstrably did not
	// install the image: no restart was seen, and either its uptime shows
	// it has been up since before Since or the reads watched it without a
	// gap since then. Only then may the image be sent again after a lost
	// or early answer.
	NotInstalled bool
	// NoRestart (with Unverified, image-has-no-identity): every read after
	// the upload answered and none showed a restart, so the device most
	// likely did not install the image; NoRestartUptime: its told uptime
	// ran on through the upload, which proves it.
	NoRestart, NoRestartUptime bool
}

// Restart evidence: silence on at least silenceReads consecutive reads
// spanning at least silenceSpan, then an answer; or a told uptime that
// fell by more than uptimeSlack against the time passed (uptime_s counts
// whole seconds).
const (
	silenceReads = 2
	silenceSpan  = time.Second
	uptimeSlack  = 2 * time.Second
)

// Decide is the verdict: from what was sent and told before, and the reads
// since the device accepted the image, the outcome, or done false while it
// must keep reading. now is the time of the call; final says verification
// has run out of time and must conclude. It is a pure function: the
// runner calls it after every read, and the tests call it over every
// device shape.
//
// Only Updated claims the image runs, and only when the device was seen
// running the expected identity after a proven restart or a change of
// identity, in state valid (or, telling no state, for the whole stability
// window). An absent fact proves nothing.
func Decide(s VerdictSpec, obs []Observation, now time.Time, final bool) (Verdict, bool) {
	before := identityOf(s.Before)
	if !s.Before.Answered {
		before = Identity{}
	}
	graceOver := !now.Before(s.Accepted.Add(s.RebootGrace))
	lost := ""
	switch s.Answer {
	case AnswerLost:
		lost = " (its answer to the upload was lost)"
	case AnswerEarly:
		lost = " (it answered before it had taken the whole image)"
	}

	if !s.Expected.Known() {
		return decideNoIdentity(s, obs, graceOver || s.Unobservable, final || s.Unobservable)
	}
	if final {
		if v, ok := stuckIntermediate(obs, lost); ok {
			return v, true
		}
	}
	if s.Unobservable {
		msg := "the device accepted the image but tells no version on the network; not verified"
		if s.Answer != AnswerNormal {
			msg = "the device took the whole image" + lost + " and tells no version on the network: whether it installed it is not known; not verified"
		}
		return Verdict{Outcome: OutcomeUnverified, Reason: ReasonTellsNothing, Message: msg}, true
	}
	// same: the expected identity is the one the device ran before, so
	// only a proven restart can show anything new happened.
	same := matches(s.Expected, before) == yes

	w := walk(s, obs)
	if w.rolledBack != nil {
		f := w.rolledBack.Facts
		msg := fmt.Sprintf("accepted %s, restarted, and came back on %s%s", s.Expected, identityOf(f), lost)
		if !w.rolledBackRestart {
			msg = fmt.Sprintf("accepted %s, and now runs another image, %s%s", s.Expected, identityOf(f), lost)
		}
		return Verdict{Outcome: OutcomeRolledBack, Running: f.Version, State: f.State, Source: f.VersionSource, Message: msg}, true
	}
	// Decide on the last read that told an identity; a later answer that
	// tells none (a server still starting) neither confirms nor denies it.
	last := w.lastID
	if last == nil {
		last = w.last
	}
	if last != nil && !(w.silentNow && (!final || w.awayProven)) {
		f := last.Facts
		id := identityOf(f)
		v := Verdict{Running: f.Version, State: f.State, Source: f.VersionSource}
		switch m := matches(s.Expected, id); {
		case m == yes && same && (id.ELF == "" || !w.restartSeen):
			if w.restartSeen || graceOver || final {
				v.Outcome, v.Reason = OutcomeUnverified, ReasonSameIdentity
				v.Message = sameIdentityMessage(id)
				return v, true
			}
		case m == yes && w.evidence:
			switch f.State {
			case "valid", "undefined":
				v.Outcome = OutcomeUpdated
				v.Message = "runs " + id.String()
				if f.State == "valid" {
					v.Message += ", marked valid"
				}
				return withNote(v, lost), true
			case "pending_verify", "new":
				if s.NoWaitValid {
					v.Outcome, v.Pending = OutcomeUpdated, true
					v.Message = "runs " + id.String() + ", not yet marked valid (--no-wait-valid)"
					return withNote(v, lost), true
				}
			case "":
				if s.NoWaitValid {
					v.Outcome = OutcomeUpdated
					v.Message = "runs " + id.String() + " (it tells no app state; --no-wait-valid)"
					return withNote(v, lost), true
				}
				if !w.tellsState && last.At.Sub(w.heldSince) >= s.StabilityWindow {
					v.Outcome = OutcomeUpdated
					v.Message = fmt.Sprintf("runs %s and kept running it through the %s stability window (it tells no app state)", id, round(s.StabilityWindow))
					return withNote(v, lost), true
				}
			}
			if final {
				v.Outcome = OutcomeUnverified
				if f.State == "" {
					v.Reason = ReasonWindowIncomplete
					v.Message = fmt.Sprintf("runs %s, but verification ended before it had run it through the %s stability window (it tells no app state)", id, round(s.StabilityWindow))
				} else {
					v.Reason = ReasonNotYetValid
					v.Message = fmt.Sprintf("runs %s but its app state is still %s; it may roll back at its next restart", id, f.State)
				}
				return v, true
			}
		case m == yes:
			// It runs the image, but nothing shows it changed: what it ran
			// before is unknown, and either no restart was seen or only a
			// version is told (a same-version build would tell the same).
			if w.restartSeen || graceOver || final {
				v.Outcome, v.Reason = OutcomeUnverified, ReasonBeforeUnknown
				v.Message = fmt.Sprintf("runs %s, but what it ran before the update is unknown (the first read failed), so the change cannot be shown; not verified", id)
				if s.Before.Answered {
					v.Message = fmt.Sprintf("runs %s, but what it told before cannot be compared with what it tells now, and no restart was seen; not verified", id)
				}
				return v, true
			}
		case m == no && !w.restartSeen:
			// Not restarted yet, or never will: still the old image.
			if graceOver || final {
				v.Outcome = OutcomeUnchanged
				v.Message = fmt.Sprintf("still runs %s and showed no sign of a restart %s after accepting the image%s", id, round(now.Sub(s.Accepted)), lost)
				v.NotInstalled = upThroughout(s, last) || watchedThroughout(s, obs)
				if f.Boot != "" && f.Running != "" && f.Boot != f.Running {
					// otadata points at the other slot: it took an image and
					// waits for a restart to boot it.
					v.NotInstalled = false
					v.Message = fmt.Sprintf("still runs %s, but boots %s next: it took the image and has not restarted%s", id, f.Boot, lost)
					return v, true
				}
				if s.Answer != AnswerNormal && !v.NotInstalled {
					v.Message = fmt.Sprintf("still runs %s%s; a restart (and rollback) while its answer was awaited cannot be ruled out, so the image is not sent again", id, lost)
				} else if s.Answer != AnswerNormal {
					v.Message = fmt.Sprintf("still runs %s and has been up since before it took the image%s", id, lost)
				}
				return v, true
			}
		case m == unknown && !before.Known() && !w.toldIdentity:
			if final || !s.WatchUntold && (w.restartSeen || graceOver) {
				v.Outcome, v.Reason = OutcomeUnverified, ReasonTellsNothing
				v.Message = "took the image but tells no version or build on the network (no /ota/status, /api/status or TXT version); not verified"
				return v, true
			}
		case m == unknown && final:
			v.Outcome, v.Reason = OutcomeUnverified, ReasonTellsNothing
			v.Message = "answers again but no longer tells its version or build; not verified"
			if s.WatchUntold {
				v.Message = fmt.Sprintf("took the image and answers again, but tells no version or build to compare with %s; not verified", s.Expected)
			}
			return v, true
		}
	}
	if !final {
		return Verdict{}, false
	}
	if last == nil {
		return Verdict{Outcome: OutcomeUnreachable, Message: "accepted the image and did not answer again" + lost}, true
	}
	return Verdict{Outcome: OutcomeUnreachable, Message: "accepted the image, went silent (restarting) and did not come back" + lost}, true
}

// since is Since, or Accepted when not set.
func (s VerdictSpec) since() time.Time {
	if s.Since.IsZero() {
		return s.Accepted
	}
	return s.Since
}

// upThroughout reports whether o's told uptime shows the device up since
// before s.Since: no restart could have slipped by unseen.
func upThroughout(s VerdictSpec, o *Observation) bool {
	f := o.Facts
	return f.UptimeKnown && f.Uptime > o.At.Sub(s.since())+uptimeSlack
}

// watchedThroughout reports whether the reads left no gap a restart could
// hide in: the first came within silenceSpan of s.Since and every one was
// answered (an ESP32 is silent for seconds while it restarts).
func watchedThroughout(s VerdictSpec, obs []Observation) bool {
	if len(obs) == 0 || obs[0].At.Sub(s.since()) >= silenceSpan {
		return false
	}
	for i, o := range obs {
		if !o.Facts.Answered || i > 0 && o.At.Sub(obs[i-1].End) >= silenceSpan {
			return false
		}
	}
	return true
}

func withNote(v Verdict, note string) Verdict {
	v.Message += note
	return v
}

func sameIdentityMessage(id Identity) string {
	if id.ELF == "" && id.Build != "" {
		return fmt.Sprintf("the device reports the build it reported before (%s), so the new image cannot be told from the old one; not verified", id)
	}
	if id.ELF == "" {
		return fmt.Sprintf("the device reports %s as before and no build hash (elf_sha256), so the new image cannot be told from the old one; not verified", id)
	}
	return fmt.Sprintf("the device runs the build it ran before (%s) and no restart was seen, so the reinstall is not verified", id)
}

// stuckIntermediate: the device's latest answer came from a loader image
// (Facts.Intermediate), a step of the upgrade that never ended in the
// firmware: failed when it still answers so, unreachable when it went
// silent after it. ok false when the latest answer came from firmware.
func stuckIntermediate(obs []Observation, lost string) (Verdict, bool) {
	var latest *Observation
	silentAfter := false
	for i := range obs {
		o := &obs[i]
		switch {
		case o.Facts.Answered:
			latest, silentAfter = o, false
		case o.Silent:
			silentAfter = true
		}
	}
	if latest == nil || latest.Facts.Intermediate == "" {
		return Verdict{}, false
	}
	f := latest.Facts
	runs := f.Image
	if runs == "" {
		runs = f.Version
	}
	if silentAfter {
		return Verdict{Outcome: OutcomeUnreachable, Running: f.Version, Source: f.VersionSource,
			Message: fmt.Sprintf("last seen running its %s image (%s), a step of the upgrade, then went silent and did not come back%s", f.Intermediate, runs, lost)}, true
	}
	return Verdict{Outcome: OutcomeFailed, Running: f.Version, Source: f.VersionSource,
		Message: fmt.Sprintf("the device still runs its %s image (%s), a step of the upgrade, and did not go on to the new firmware%s: it needs the full image installed (from its own web page, or push again)", f.Intermediate, runs, lost)}, true
}

// decideNoIdentity: with nothing to compare, the device's return is all
// that can be seen (a loader image's answer is no return: it goes on).
func decideNoIdentity(s VerdictSpec, obs []Observation, graceOver, final bool) (Verdict, bool) {
	if final {
		if v, ok := stuckIntermediate(obs, ""); ok {
			return v, true
		}
	}
	answered := false
	for _, o := range obs {
		answered = answered || o.Facts.Answered && o.Facts.Intermediate == ""
	}
	// Once a restart was seen and the device answered after it, there is
	// nothing more to wait for: no grace for an old image to hold on.
	w := walk(s, obs)
	if answered && (graceOver || w.restartSeen && w.last != nil && w.last.Facts.Intermediate == "") || final && (answered || len(obs) == 0) {
		v := Verdict{Outcome: OutcomeUnverified, Reason: ReasonNoIdentity,
			Message: "the image carries no version the device would report (a filesystem image, no app descriptor, or an ESP8266 image); give --expect-version to verify"}
		if answered && !w.restartSeen && !slices.ContainsFunc(obs, func(o Observation) bool { return o.Silent }) {
			var last *Observation
			for i := range obs {
				if obs[i].Facts.Answered {
					last = &obs[i]
				}
			}
			v.NoRestart, v.NoRestartUptime = true, upThroughout(s, last)
			v.Message = noRestartNote(v.NoRestartUptime) + "; " + v.Message
		}
		return v, true
	}
	if final {
		return Verdict{Outcome: OutcomeUnreachable, Message: "accepted the image and did not answer again"}, true
	}
	return Verdict{}, false
}

// noRestartNote words Verdict.NoRestart.
func noRestartNote(uptime bool) string {
	if uptime {
		return "the device did not restart after the upload (its uptime ran on through it), so it did not install the image"
	}
	return "no restart was seen after the upload (every read answered), so the device most likely did not install the image"
}

// walked is what the observations show, in order.
type walked struct {
	// last is the last read that answered, nil when none did; lastID the
	// last that told an identity.
	last, lastID *Observation
	// silentNow: the reads since the last answer met silence: the device
	// is away (restarting, or gone).
	silentNow, awayProven bool
	// tellsState: some read told an app state: a later read without one
	// (another source answering) is no "tells no state".
	tellsState bool
	// restartSeen: a restart was proven before or at last.
	restartSeen bool
	// evidence: a restart was proven or the identity changed to the
	// expected one, before or at last.
	evidence bool
	// heldSince is when the device began running the expected identity
	// without a restart since (the stability window's start).
	heldSince time.Time
	// toldIdentity: some read after acceptance told an identity.
	toldIdentity bool
	// rolledBack is the read that shows a rollback: after a proven
	// restart or a change of identity, an identity other than the
	// expected one. rolledBackRestart says which.
	rolledBack        *Observation
	rolledBackRestart bool
}

func walk(s VerdictSpec, obs []Observation) walked {
	var w walked
	prev := Identity{}
	if s.Before.Answered {
		prev = identityOf(s.Before)
	}
	same := matches(s.Expected, prev) == yes
	// sawOther: some read told a version other than the expected one, so
	// a version-only match shows a change of image, not a same-version
	// build.
	sawOther := prev.Version != "" && s.Expected.Version != "" && prev.Version != s.Expected.Version
	// WatchUntold: the device's record, read before, told no version at
	// all where its family's records tell everything it runs: the old
	// image had none, so the expected one seen later is another image.
	sawOther = sawOther || s.WatchUntold && s.Before.Answered && prev.Version == "" && s.Expected.Version != ""
	// The last told uptime and when: pre-flight's first.
	upKnown, up, upAt, upSrc := s.Before.Answered && s.Before.UptimeKnown, s.Before.Uptime, s.BeforeAt, s.Before.UptimeSource
	before := prev
	// tellsELF: the device told its elf; a later read without it (another
	// source answering) identifies nothing, lest a version-only read undo
	// what the elf decided.
	tellsELF := prev.ELF != ""
	w.tellsState = s.Before.Answered && s.Before.State != ""
	run, runStart := 0, 0
	holding := false
	for i := range obs {
		o := &obs[i]
		if o.Silent {
			if run == 0 {
				runStart = i
			}
			run++
			continue
		}
		if !o.Facts.Answered || o.Facts.Intermediate != "" {
			// A refusal or an error breaks the silence; so does a loader
			// image, which tells nothing of the firmware to come.
			run = 0
			continue
		}
		restart := run >= silenceReads && obs[i-1].End.Sub(obs[runStart].At) >= silenceSpan
		run = 0
		f := o.Facts
		if f.UptimeKnown {
			// Uptimes from different sources are not compared.
			if upKnown && upSrc == f.UptimeSource && f.Uptime+uptimeSlack < up+o.At.Sub(upAt) {
				restart = true
			}
			upKnown, up, upAt, upSrc = true, f.Uptime, o.At, f.UptimeSource
		}
		w.tellsState = w.tellsState || f.State != ""
		if restart {
			w.restartSeen = true
			holding = false // a restart during the window starts it again
		}
		id := identityOf(f)
		if id.ELF != "" {
			tellsELF = true
		} else if tellsELF {
			id = Identity{}
		}
		w.toldIdentity = w.toldIdentity || id.Known()
		changed := sameBuild(prev, id) == no || sameBuild(before, id) == no
		if id.Known() {
			prev = id
		}
		if id.Version != "" && s.Expected.Version != "" && id.Version != s.Expected.Version {
			sawOther = true
		}
		switch matches(s.Expected, id) {
		case yes:
			byELF := s.Expected.ELF != "" && id.ELF != ""
			// A build the user expects names the new image as an elf does.
			byBuild := s.Expected.Build != "" && id.Build != ""
			switch {
			case same:
				w.evidence = w.evidence || w.restartSeen && byELF
			case byELF || byBuild:
				w.evidence = w.evidence || w.restartSeen || changed
			default:
				w.evidence = w.evidence || sawOther && (w.restartSeen || changed)
			}
			if !holding {
				holding, w.heldSince = true, o.At
			}
		case no:
			holding = false
			if w.restartSeen || changed {
				w.rolledBack, w.rolledBackRestart = o, w.restartSeen
				return w
			}
		default:
			// A read that tells no identity neither holds nor breaks the
			// window: a server still starting answers without it.
		}
		w.last = o
		if id.Known() {
			w.lastID = o
		}
	}
	// Away: silent now, with the silence proven; or, until time is up, any
	// silence at all (the next read may show the restart).
	w.silentNow = run > 0
	w.awayProven = run >= silenceReads && obs[len(obs)-1].End.Sub(obs[runStart].At) >= silenceSpan
	return w
}
