package rollout

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// source is where a report's facts came from, for Result.VersionSource.
func (r Report) source() string {
	if r.Source != "" {
		return r.Source
	}
	return string(r.Kind)
}

// class is the failure class of a failed report: the family's, else what
// the words suggest. What another command would meet again (no space, an
// image that does not fit or fails its checks, a file the server does not
// have or a proxy refuses) is rejected; anything else (a connection or
// read error, a cut download) is taken for a download that may succeed on
// a further command. The words are the ESP updaters' (Arduino's
// ESP8266httpUpdate and its ESP32 ports), which Tasmota passes on.
func (r Report) class() upload.Class {
	if r.Class != "" {
		return r.Class
	}
	w := strings.ToLower(r.Words)
	for _, k := range []string{"md5", "space", "does not fit", "magic", "bin header", "not found", "forbidden",
		"wrong http code", "did not report size", "partition", "signature", "too big", "too large"} {
		if strings.Contains(w, k) {
			return upload.ClassRejected
		}
	}
	return upload.ClassNetwork
}

// walked is what a device's reports since its first command show, in
// order. Reports before the first command (a retained LWT, an answer to
// the pre-flight read, a boot from before) tell nothing of the update.
type walked struct {
	any bool // any report since the first command (an online/offline too)
	// started / success: the device told it took a command / wrote the
	// image, since the first command; successR is the latest success.
	started  *Report
	successR *Report
	// failed is the latest failed report after the last command, with
	// restart telling whether a success or a boot came since that command.
	failed  *Report
	restart bool
	// inter is the latest report from an intermediate image while it is
	// the device's latest state; interSeen: one was ever seen.
	inter     *Report
	interSeen bool
	// target is the latest report telling the device runs Expect, while
	// that is the device's latest state; hold is when it began to run it
	// without an offline since (zero while offline).
	target *Report
	hold   time.Time
	// noVersion is a boot that told no version, while it is the latest
	// state: the device restarted into something it does not name.
	noVersion *Report
	// old is a status read telling another release than Expect, with no
	// boot after it: concluding only at the reread or the bound.
	old *Report
	// offline: the device's last word was its will (offline), with no
	// online, boot or answer since.
	offline bool
	// since is the latest report of any kind since the first command.
	since time.Time
	// lastSig is the time of the latest report other than online/offline.
	lastSig time.Time
}

// decide implements Decide.
func decide(spec DeviceSpec, reports []Report, now time.Time, final bool) (Verdict, bool) {
	if len(spec.Commands) == 0 {
		return preflightVerdict(spec)
	}
	c0, cl := spec.Commands[0], spec.Commands[len(spec.Commands)-1]
	tries := len(spec.Commands)
	w, v, done := walk(spec, reports, c0, cl)
	if done {
		return v, true
	}

	deadline := cl.Add(spec.Bound)
	if w.interSeen {
		// A two-step: the loader fetches the full image after its own boot.
		deadline = cl.Add(2 * spec.Bound)
	}
	if rw := spec.Resumed.Add(spec.RebootWindow); !spec.Resumed.IsZero() && rw.After(deadline) {
		deadline = rw
	}

	// The target, held through the stability window.
	if w.target != nil {
		t := w.target
		v := Verdict{Running: shownVersion(t.Facts), Source: t.source(), Phase: upload.PhaseVerifying}
		if !w.hold.IsZero() && w.hold.Before(spec.Resumed) {
			// Nobody watched while the rollout was stopped: the window
			// starts again when it resumed.
			w.hold = spec.Resumed
		}
		if !w.hold.IsZero() && !now.Before(w.hold.Add(spec.Stability)) {
			if !changeShown(spec, w) {
				v.Outcome, v.Reason = upload.OutcomeUnverified, upload.ReasonBeforeUnknown
				v.Message = fmt.Sprintf("runs %s, but what it ran before the update is unknown and it told no result, so the change cannot be shown; not verified", t.Facts.Version)
				return v, true
			}
			v.Outcome = upload.OutcomeUpdated
			v.Message = fmt.Sprintf("runs %s (%s) and stayed online through the %s stability window", t.Facts.Version, t.source(), roundD(spec.Stability))
			return v, true
		}
		if !w.hold.IsZero() && !final {
			v.Wake = w.hold.Add(spec.Stability)
			return v, false
		}
		// Offline since it ran the target: it may come back within its bound.
		if !final && now.Before(deadline) {
			v.Wake = deadline
			return v, false
		}
		if w.offline {
			v.Outcome = upload.OutcomeUnreachable
			v.Message = fmt.Sprintf("ran %s, then went offline and did not come back", t.Facts.Version)
			return v, true
		}
		v.Outcome, v.Reason = upload.OutcomeUnverified, upload.ReasonWindowIncomplete
		v.Message = fmt.Sprintf("runs %s, but the update ended before it had stayed online through the %s stability window", t.Facts.Version, roundD(spec.Stability))
		return v, true
	}

	// A failed download: command again, or conclude.
	if w.failed != nil {
		f := w.failed
		cls := f.class()
		v := Verdict{Outcome: upload.OutcomeFailed, Class: cls, Words: f.Words}
		// The device's words quoted alone, then what the server saw.
		said := quoteWords(f.Words)
		if spec.Fetched != "" {
			said += "; " + spec.Fetched
		}
		if w.inter != nil {
			// The loader failed to fetch the full image.
			v.Running, v.Source = shownVersion(w.inter.Facts), w.inter.source()
			v.Message = fmt.Sprintf("the device still runs its %s image (%s), a step of the upgrade, and its download of the new firmware failed (%s): it needs the full image installed (from its own web page, or roll out again)", w.inter.Facts.Intermediate, w.inter.Facts.Version, said)
			return v, true
		}
		if !w.restart && cls != upload.ClassRejected && tries < 1+max(spec.Retries, 0) && spec.Resumed.IsZero() && !final {
			return Verdict{Retry: true, Phase: upload.PhaseRetrying, Class: cls, Words: f.Words,
				Message: fmt.Sprintf("reported a failed download (%s); commanding it again", said)}, false
		}
		v.Message = fmt.Sprintf("reported a failed download: %s", said)
		switch {
		case w.restart:
			v.Message += "; not commanded again: it restarted since the command"
		case cls == upload.ClassRejected:
			v.Message += "; not commanded again: the image itself was refused"
		case !spec.Resumed.IsZero() && tries < 1+max(spec.Retries, 0) && spec.Outage:
			v.Message += "; not commanded again: it was in flight while the link to the devices was down (what it told then may be lost)"
		case !spec.Resumed.IsZero() && tries < 1+max(spec.Retries, 0):
			v.Message += "; not commanded again: it was in flight when the rollout was interrupted (its download may have been cut then)"
		case tries > 1:
			v.Message += fmt.Sprintf(" (after %d commands)", tries)
		}
		return v, true
	}

	phase := upload.PhaseConnecting
	switch {
	case w.inter != nil:
		phase = upload.PhaseUploading
	case w.successR != nil || w.noVersion != nil:
		phase = upload.PhaseRebooting
	case w.started != nil:
		phase = upload.PhaseUploading
	}

	// The one read, when a report is missed. Never during an upgrade: not
	// while the device fetches (before its bound), nor on a loader image.
	rereadDone := !spec.Reread.IsZero()
	if !rereadDone && w.inter == nil {
		due := deadline
		if p := w.restartPending(); !p.IsZero() && !w.offline {
			// It restarted (or said it would) and no boot naming the
			// target came: the report may have been missed.
			due = p.Add(spec.RebootWindow)
			if r := spec.Resumed.Add(spec.RebootWindow); !spec.Resumed.IsZero() && r.After(due) {
				due = r
			}
			due = minTime(due, deadline)
		}
		if !now.Before(due) || final {
			return Verdict{Reread: true, Phase: phase}, false
		}
		return Verdict{Wake: due, Phase: phase}, false
	}
	if !final && now.Before(deadline) && !(rereadDone && w.inter == nil) {
		return Verdict{Wake: deadline, Phase: phase}, false
	}

	// Conclude: the bound is over, or the one read was made.
	switch {
	case w.inter != nil:
		return stuck(w), true
	case w.noVersion != nil:
		b := w.noVersion
		return Verdict{Outcome: upload.OutcomeUnverified, Reason: upload.ReasonTellsNothing, Source: b.source(),
			Message: "restarted after the update but told no version, and the read after it told none either; not verified"}, true
	case w.old != nil:
		return oldVerdict(spec, w, w.old), true
	case w.successR != nil:
		return Verdict{Outcome: upload.OutcomeUnreachable,
			Message: fmt.Sprintf("told it wrote the image and restarts (%s), then never came back", quoteWords(w.successR.Words))}, true
	case w.started != nil:
		return Verdict{Outcome: upload.OutcomeUnreachable,
			Message: fmt.Sprintf("took the command (%s), then told nothing more and did not answer the read after its bound", quoteWords(w.started.Words))}, true
	case w.lastSig.IsZero() && w.any:
		return Verdict{Outcome: upload.OutcomeUnreachable,
			Message: "told no result of the command (only its link came and went) and did not answer the read after its bound"}, true
	}
	return Verdict{Outcome: upload.OutcomeUnreachable,
		Message: "told nothing since the command and did not answer the read after its bound"}, true
}

// restartPending is when the device last restarted, or said it would,
// without a boot naming what it runs since: a success, or a boot that
// told no version. Zero when none.
func (w walked) restartPending() time.Time {
	if w.noVersion != nil {
		return w.noVersion.At
	}
	if w.successR != nil {
		return w.successR.At
	}
	return time.Time{}
}

// changeShown reports whether the target seen can only be the new image:
// the device ran another release (or a loader) before, or told it wrote
// the image, or went through a loader on the way.
func changeShown(spec DeviceSpec, w walked) bool {
	if w.successR != nil || w.interSeen {
		return true
	}
	b := spec.Before
	return b != nil && (b.Release != "" && b.Release != spec.Expect || b.Intermediate != "")
}

func preflightVerdict(spec DeviceSpec) (Verdict, bool) {
	b := spec.Before
	switch {
	case b == nil:
		return Verdict{Outcome: upload.OutcomeUnreachable, Message: "did not answer the read before the update; not commanded"}, true
	case b.Release != "" && b.Release == spec.Expect && b.Intermediate == "":
		return Verdict{Outcome: upload.OutcomeSkipped, Running: shownVersion(*b), Message: "already runs " + b.Version}, true
	case spec.Refusal != "":
		return Verdict{Outcome: upload.OutcomeRefused, Message: spec.Refusal}, true
	}
	return Verdict{Phase: upload.PhaseChecking}, false
}

// walk goes through the reports since the first command. It concludes at
// once on a report that settles the device: a boot (or a read after a
// proven change) naming another release.
func walk(spec DeviceSpec, reports []Report, c0, cl time.Time) (walked, Verdict, bool) {
	var w walked
	isReread := func(r *Report) bool { return !spec.Reread.IsZero() && !r.At.Before(spec.Reread) }
	for i := range reports {
		r := &reports[i]
		if r.At.Before(c0) {
			continue
		}
		w.any = true
		w.since = r.At
		if r.Kind != ReportOnline && r.Kind != ReportOffline {
			w.lastSig = r.At
		}
		afterLast := !r.At.Before(cl)
		switch r.Kind {
		case ReportOnline:
			if w.offline && w.target != nil {
				// Back after a broker disconnect without a boot: it still
				// runs the target; the window starts again.
				w.hold = r.At
			}
			w.offline = false
		case ReportOffline:
			w.offline = true
			w.hold = time.Time{}
		case ReportStarted:
			w.started = r
		case ReportFailed:
			if afterLast {
				w.failed = r
			}
		case ReportSuccess:
			w.successR = r
			if afterLast {
				w.restart = true
				w.failed = nil
			}
		case ReportBooted, ReportStatus:
			boot := r.Kind == ReportBooted
			if boot && afterLast {
				w.restart = true
			}
			if boot || r.Facts.Version != "" {
				w.offline = false
			}
			f := r.Facts
			switch {
			case f.Version == "" && boot:
				w.noVersion, w.target, w.inter, w.old, w.hold = r, nil, nil, nil, time.Time{}
			case f.Version == "":
				// An answer that tells nothing changes nothing.
			case f.Intermediate != "":
				w.inter, w.interSeen, w.target, w.noVersion, w.old, w.hold = r, true, nil, nil, nil, time.Time{}
			case f.Release == spec.Expect:
				if w.target == nil || w.hold.IsZero() {
					w.hold = r.At
				}
				w.target, w.inter, w.noVersion, w.old = r, nil, nil, nil
			default:
				// Another release than the target.
				if boot || w.target != nil || w.inter != nil {
					return w, otherVerdict(spec, w, r), true
				}
				if isReread(r) {
					return w, oldVerdict(spec, w, r), true
				}
				// A read in the middle of the update: the old image still
				// runs, as it should until the device restarts.
				w.old = r
			}
		}
	}
	return w, Verdict{}, false
}

// otherVerdict: the device booted (or, after running the target or a
// loader, answered) another release than the target.
func otherVerdict(spec DeviceSpec, w walked, r *Report) Verdict {
	f := r.Facts
	v := Verdict{Running: shownVersion(f), Source: r.source()}
	switch {
	case w.target != nil:
		v.Outcome = upload.OutcomeRolledBack
		v.Message = fmt.Sprintf("ran %s, then came back on %s", w.target.Facts.Version, f.Version)
	case w.inter != nil || w.interSeen:
		v.Outcome = upload.OutcomeRolledBack
		v.Message = fmt.Sprintf("went through its %s image, then came back on %s, not %s", lastInterName(w, r), f.Version, spec.Expect)
	case spec.Before != nil && spec.Before.Release != "" && f.Release != "" && f.Release != spec.Before.Release:
		// Neither the old release nor the target: something was
		// installed, but not what --expect-version names.
		v.Outcome = upload.OutcomeUnverified
		v.Message = fmt.Sprintf("came back on %s, neither %s as before nor %s: is --expect-version the image's own version?", f.Version, spec.Before.Version, spec.Expect)
	case w.successR != nil:
		v.Outcome = upload.OutcomeRolledBack
		v.Message = fmt.Sprintf("told it wrote the image (%s), restarted, and came back on %s", quoteWords(w.successR.Words), f.Version)
	case w.started != nil:
		v.Outcome = upload.OutcomeUnchanged
		v.Message = fmt.Sprintf("took the command (%s), restarted, and came back on %s (the new image was not written, or did not boot)", quoteWords(w.started.Words), f.Version)
	default:
		v.Outcome = upload.OutcomeUnchanged
		v.Message = fmt.Sprintf("restarted without installing the image (it told no result): it runs %s", f.Version)
	}
	return v
}

func lastInterName(w walked, _ *Report) string {
	if w.inter != nil {
		return w.inter.Facts.Intermediate
	}
	return "intermediate"
}

// oldVerdict: the read after the reboot window (or the last one before the
// bound) tells another release than the target, and no boot was seen.
func oldVerdict(spec DeviceSpec, w walked, r *Report) Verdict {
	f := r.Facts
	v := Verdict{Running: shownVersion(f), Source: r.source()}
	switch {
	case w.successR != nil:
		v.Outcome = upload.OutcomeRolledBack
		v.Message = fmt.Sprintf("told it wrote the image (%s), yet runs %s after its reboot window", quoteWords(w.successR.Words), f.Version)
	case w.started != nil:
		v.Outcome = upload.OutcomeUnchanged
		v.Message = fmt.Sprintf("took the command (%s) but told no result, and still runs %s", quoteWords(w.started.Words), f.Version)
	default:
		v.Outcome = upload.OutcomeUnchanged
		v.Message = fmt.Sprintf("told nothing of the update and still runs %s", f.Version)
	}
	return v
}

// stuck: the device's latest state is a loader image, at its bound.
func stuck(w walked) Verdict {
	f := w.inter.Facts
	v := Verdict{Running: shownVersion(f), Source: w.inter.source()}
	if w.offline {
		v.Outcome = upload.OutcomeUnreachable
		v.Message = fmt.Sprintf("last seen running its %s image (%s), a step of the upgrade, then went silent and did not come back", f.Intermediate, f.Version)
		return v
	}
	v.Outcome = upload.OutcomeFailed
	v.Message = fmt.Sprintf("the device still runs its %s image (%s), a step of the upgrade, and did not go on to the new firmware: it needs the full image installed (from its own web page, or roll out again)", f.Intermediate, f.Version)
	return v
}

// shownVersion is a version as results show it beside To (the release
// --expect-version names): the release, not the whole Version the device
// tells ("15.4.0" of "15.4.0(tasmota32)"; messages keep the whole one);
// the whole Version when it names a loader image, whose number is not a
// release it runs ("15.5.0(minimal)"), or when it has no release.
func shownVersion(f Facts) string {
	if f.Release == "" || f.Intermediate != "" {
		return f.Version
	}
	return f.Release
}

func quoteWords(w string) string {
	if w == "" {
		return "no words"
	}
	return strconv.Quote(w)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// roundD prints a duration without sub-second noise.
func roundD(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d
}
