package rollout

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/ots-ota/ots-ota/internal/oneline"
	"github.com/ots-ota/ots-ota/upload"
)

// device runs one device: the read before, the command, and the watch
// until its verdict; a device the state holds as commanded is only
// watched. Any other comes holding a MaxFetches slot.
func (e *engine) device(ctx context.Context, d *dev, resumed time.Time) {
	if d.start.IsZero() {
		d.start = time.Now()
	}
	spec := e.spec(d)
	d.mu.Lock()
	phase := d.phase
	d.mu.Unlock()

	if phase == PhaseCommanded {
		// Interrupted in flight: watched again, never commanded again.
		_, d.linkGen, _ = e.link()
		spec.Resumed = resumed
		if spec.Before != nil {
			spec.Refusal = e.cfg.Family.Screen(*spec.Before, e.img, e.have)
		}
		e.emit(d, upload.Event{Phase: upload.PhaseVerifying, Try: len(spec.Commands), Message: "watched again after the rollout resumed"})
		if !e.fetchOver(d, spec, time.Now()) && !e.acquire(ctx, d) {
			e.cancelled(d)
			return
		}
	} else {
		rd, readier := e.cfg.Family.(Readier)
		if readier {
			// Read before the wave's announcement (runWave).
			if !d.read {
				return
			}
			spec = d.readSpec
		}
		for again := false; ; again = true {
			if readier {
				// Wait for the device to see the announcement (all the
				// wave's devices at once, for as long as the family waits);
				// only then a MaxFetches slot.
				ok, self := e.ready(ctx, d, rd, spec)
				if !ok {
					return
				}
				if !self && (spec.Before == nil || spec.Before.Release == "") {
					e.readAgain(ctx, d, &spec)
				}
				if e.stopped() != "" || !e.acquire(ctx, d) {
					return
				}
				// Its result's duration runs from its slot to its verdict,
				// as a device without a Readier's does (the wait for the
				// announcement is no part of its update); a device that
				// ended before its slot keeps the read's start.
				d.start = time.Now()
				if self {
					// Installing on its own since the read: no command; the
					// reports since the read are its verdict's.
					if _, ok := e.record(d, &spec, d.readAt); !ok {
						e.release(d)
						return
					}
					e.emit(d, upload.Event{Phase: upload.PhaseVerifying, Try: 1, Message: "installing on its own (the announcement was its command)"})
					e.observe(ctx, d, &spec)
					return
				}
			} else if !e.preflight(ctx, d, &spec) {
				// runWave gave it a MaxFetches slot.
				e.release(d)
				return
			}
			if e.stopped() == "" && e.command(ctx, d, &spec) {
				break
			}
			if readier && !again && errors.Is(d.notSent, ErrNotReady) && ctx.Err() == nil && e.stopped() == "" {
				// No longer ready (restarted while it waited for a slot):
				// the command would be ignored. Wait for it again, once,
				// its slot given up meanwhile.
				e.log.Info("no longer ready at its command; waiting again", "device", d.d.label(), "err", d.notSent)
				d.notSent = nil
				e.release(d)
				continue
			}
			if d.notSent != nil && ctx.Err() == nil {
				e.finish(ctx, d, notSentVerdict(d.notSent, false), spec)
				return
			}
			// A budget was exceeded during the read, or the state file
			// cannot record the command: not started, left pending.
			e.release(d)
			return
		}
	}
	e.observe(ctx, d, &spec)
}

// readAgain reads a device whose read before the update told no version
// once more, now that it is ready (an ESPHome node tells its installed
// version only after its first check): what it tells is the "before" of its
// verdict and its result. Unanswered, the first read stands.
func (e *engine) readAgain(ctx context.Context, d *dev, spec *DeviceSpec) {
	rctx, cancel := context.WithTimeout(ctx, e.cfg.ReadTimeout)
	f, err := e.cfg.Family.Reread(rctx, d.d)
	cancel()
	if err != nil || f.Release == "" {
		return
	}
	spec.Before = &f
	d.mu.Lock()
	d.before = &f
	d.mu.Unlock()
	safe, now := safeFacts(&f), time.Now()
	e.cfg.State.updateDevSoon(d.idx, func(dr *DeviceRecord) {
		dr.Before, dr.BeforeAt = safe, now.UTC()
	})
}

// spec is what the verdict knows of d before this run's read.
func (e *engine) spec(d *dev) DeviceSpec {
	spec := DeviceSpec{Expect: e.cfg.Expect, Retries: e.cfg.Retries, Bound: e.bound,
		RebootWindow: e.cfg.RebootWindow, Stability: e.cfg.Stability}
	d.mu.Lock()
	spec.Before, spec.Commands = d.before, slices.Clone(d.commands)
	d.mu.Unlock()
	return spec
}

// preflight reads the device before any command; false when it is done
// (skipped, refused, unreachable) or ctx ended.
func (e *engine) preflight(ctx context.Context, d *dev, spec *DeviceSpec) bool {
	select {
	case e.pre <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-e.pre }()
	e.emit(d, upload.Event{Phase: upload.PhaseChecking, Message: "reading what the device tells"})
	var f Facts
	var err error
	for {
		if e.waitLink(ctx) != nil {
			return false
		}
		_, gen, _ := e.link()
		rctx, cancel := context.WithTimeout(ctx, e.cfg.ReadTimeout)
		f, err = e.cfg.Family.Preflight(rctx, d.d)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if up, now, _ := e.link(); err == nil || up && now == gen {
			break
		}
		// Unanswered while the link was down, or went down: the device
		// may well be there. Read it again once the link is back.
		e.log.Debug("pre-flight read lost to a link outage; reading again", "device", d.d.label(), "err", err)
	}
	now := time.Now()
	d.readAt = now
	if err != nil {
		e.log.Debug("pre-flight read unanswered", "device", d.d.label(), "err", err)
	} else {
		spec.Before = &f
		spec.Refusal = e.cfg.Family.Screen(f, e.img, e.have)
		safe := safeFacts(&f)
		withheld := f.OtaURL != nil && safe.OtaURL == nil
		d.mu.Lock()
		d.before, d.withheld = &f, withheld
		d.mu.Unlock()
		// Written with the command (or within a second): a device not
		// commanded is read again by a resumed run.
		e.cfg.State.updateDevSoon(d.idx, func(dr *DeviceRecord) {
			dr.Before, dr.BeforeAt, dr.OtaURLWithheld = safe, now.UTC(), withheld
		})
	}
	if v, done := Decide(*spec, nil, now, false); done {
		e.finish(ctx, d, v, *spec)
		return false
	}
	return true
}

// acquire takes a MaxFetches slot; false when ctx ended first.
func (e *engine) acquire(ctx context.Context, d *dev) bool {
	select {
	case e.fetch <- struct{}{}:
		d.holding = true
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *engine) release(d *dev) {
	if d.holding {
		d.holding = false
		<-e.fetch
	}
}

// fetchOver reports whether the device is done fetching after its last
// command: it told a failed download, or it runs (booted, or answered a
// read) a version that is no loader, or its bound is over (twice it once
// a loader was seen). A success keeps the slot: it may be a two-step's
// loader, which fetches the full image after its own boot.
func (e *engine) fetchOver(d *dev, spec DeviceSpec, now time.Time) bool {
	if len(spec.Commands) == 0 {
		return true
	}
	last := spec.Commands[len(spec.Commands)-1]
	bound := spec.Bound
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range d.reports {
		if r.At.Before(last) {
			continue
		}
		f := r.Facts
		switch {
		case r.Kind == ReportFailed:
			return true
		case r.Kind != ReportBooted && r.Kind != ReportStatus:
		case r.Kind == ReportStatus && f.Intermediate == "" && f.Release != spec.Expect:
			// Not the target (the old version, most likely), told while it
			// may be fetching (an ESPHome node's state during its
			// download): no sign the fetch is over, whether or not the read
			// before told the old version. A read that finds it so ends in
			// a verdict anyway.
		case f.Intermediate != "":
			bound = 2 * spec.Bound
		case f.Version != "":
			return true
		}
	}
	return !now.Before(last.Add(bound))
}

// command tells the device to fetch the image, once the state file says
// it is commanded, so that no run can command it twice. A command the file
// cannot record is not sent (a --resume would send it again), and the
// rollout stops: no further command could be recorded either, and the
// devices already commanded are still watched. false when not sent.
func (e *engine) command(ctx context.Context, d *dev, spec *DeviceSpec) bool {
	if e.waitLink(ctx) != nil {
		return false
	}
	_, d.linkGen, _ = e.link() // an outage from now on may hide its reports
	was, ok := e.record(d, spec, time.Now())
	if !ok {
		return false
	}
	e.emit(d, upload.Event{Phase: upload.PhaseConnecting, Try: len(spec.Commands), Message: "commanded"})
	err := e.cfg.Family.Command(ctx, d.d, e.url)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotSent):
		// It surely never left: the device is as it was before this
		// command, and the state must not say otherwise (a --resume would
		// only watch a device that was never told).
		e.unrecord(d, spec, was)
		d.notSent = err
		return false
	case ctx.Err() == nil:
		// It may still have reached the device: watch it all the same.
		e.log.Warn("command not confirmed", "device", d.d.label(), "err", err)
		d.res.Warnings = append(d.res.Warnings, "the command may not have reached the device: "+oneLine(err))
	}
	return true
}

// record writes a command made at now into the state, then into d and
// spec; false (and the rollout stopped) when the state file cannot record
// it. was is the phase before.
func (e *engine) record(d *dev, spec *DeviceSpec, now time.Time) (was string, ok bool) {
	d.mu.Lock()
	was = d.phase
	d.mu.Unlock()
	err := e.cfg.State.updateDevOr(d.idx, func(dr *DeviceRecord) {
		dr.Phase = PhaseCommanded
		dr.Commands = append(dr.Commands, now.UTC())
	}, func(dr *DeviceRecord) {
		dr.Phase = was
		dr.Commands = dr.Commands[:len(dr.Commands)-1]
	})
	if err != nil {
		e.log.Warn("command not sent: the state file cannot record it", "device", d.d.label(), "err", err)
		e.stopWith("the state file cannot record commands (" + oneLine(err) + ")")
		return was, false
	}
	spec.Commands = append(spec.Commands, now)
	d.mu.Lock()
	d.phase = PhaseCommanded
	d.commands = append(d.commands, now)
	d.fetches = nil
	d.mu.Unlock()
	return was, true
}

// unrecord takes back the command just recorded for d, which was not sent.
func (e *engine) unrecord(d *dev, spec *DeviceSpec, was string) {
	spec.Commands = spec.Commands[:len(spec.Commands)-1]
	d.mu.Lock()
	d.phase = was
	d.commands = d.commands[:len(d.commands)-1]
	d.mu.Unlock()
	if err := e.cfg.State.updateDev(d.idx, func(dr *DeviceRecord) {
		dr.Phase = was
		dr.Commands = dr.Commands[:len(dr.Commands)-1]
	}); err != nil {
		// Left saying commanded: a --resume watches it, never commands it.
		e.log.Warn("the state file still says commanded", "device", d.d.label(), "err", err)
	}
}

// notSentVerdict ends a device whose command (the first, or a further
// one) the family could not send at all, the run going on.
func notSentVerdict(err error, further bool) Verdict {
	what := "not commanded"
	if further {
		what = "the further command was not sent"
	}
	return Verdict{Outcome: upload.OutcomeRefused, Message: what + ": " + oneLine(err)}
}

// observe watches the device until its verdict.
func (e *engine) observe(ctx context.Context, d *dev, spec *DeviceSpec) {
	for {
		if ctx.Err() != nil {
			e.cancelled(d)
			return
		}
		// Nothing is concluded while the link is down. Once it is back,
		// what the device told meanwhile may be lost: watch it as a
		// resumed run would, from then on.
		if up, gen, back := e.link(); !up {
			if e.waitLink(ctx) != nil {
				e.cancelled(d)
				return
			}
			continue
		} else if gen != d.linkGen {
			d.linkGen = gen
			if back.After(spec.Resumed) {
				spec.Resumed, spec.Outage = back, true
			}
			if !spec.RereadAnswered {
				spec.Reread = time.Time{} // the read may have been lost too
			}
		}
		d.mu.Lock()
		reps := slices.Clone(d.reports)
		d.mu.Unlock()
		now := time.Now()
		last := spec.Commands[len(spec.Commands)-1]
		hard := maxTime(last, spec.Resumed).Add(2*spec.Bound + spec.RebootWindow + spec.Stability + 2*e.cfg.ReadTimeout)
		spec.Fetched = e.reading(d)
		v, done := Decide(*spec, reps, now, !now.Before(hard))
		if done {
			e.finish(ctx, d, v, *spec) // counts the verdict, then gives up the slot
			return
		}
		// With a Store nothing is seen of the fetch: the slot is held to
		// the verdict.
		if d.holding && e.cfg.Store == nil && e.fetchOver(d, *spec, now) {
			e.release(d)
		}
		e.emitPhase(d, v.Phase, len(spec.Commands))
		switch {
		case v.Retry:
			e.release(d)
			e.emit(d, upload.Event{Phase: upload.PhaseRetrying, Try: len(spec.Commands), MaxTries: 1 + e.cfg.Retries, Message: v.Message})
			if !e.acquire(ctx, d) {
				e.cancelled(d)
				return
			}
			if e.stopped() == "" && e.command(ctx, d, spec) {
				continue
			}
			if ctx.Err() != nil {
				e.cancelled(d)
				return
			}
			v, _ := Decide(*spec, reps, now, true)
			if d.notSent != nil {
				// Its failure is its verdict, and the further command's
				// fate is said.
				v.Message += "; " + notSentVerdict(d.notSent, true).Message
				e.finish(ctx, d, v, *spec)
				return
			}
			// The rollout stopped (a budget, or a state file that cannot
			// record the command): its failure is its verdict.
			v.Message += "; not commanded again: the rollout stopped (" + e.stopped() + ")"
			e.finish(ctx, d, v, *spec)
			return
		case v.Reread:
			if e.waitLink(ctx) != nil {
				e.cancelled(d)
				return
			}
			_, gen, _ := e.link()
			spec.Reread = time.Now()
			rctx, cancel := context.WithTimeout(ctx, e.cfg.ReadTimeout)
			f, err := e.cfg.Family.Reread(rctx, d.d)
			cancel()
			if ctx.Err() != nil {
				e.cancelled(d)
				return
			}
			if up, now, _ := e.link(); err != nil && (!up || now != gen) {
				continue // lost to an outage: the loop's top handles it
			}
			if err == nil {
				spec.RereadAnswered = true
				e.onReport(Report{Topic: d.d.Topic, Kind: ReportStatus, At: time.Now(), Facts: f, Source: e.readSource()})
			} else {
				e.log.Debug("read after the reboot window unanswered", "device", d.d.label(), "err", err)
			}
			continue
		}
		wake := hard
		if !v.Wake.IsZero() && v.Wake.Before(wake) {
			wake = v.Wake
		}
		t := time.NewTimer(max(time.Until(wake), time.Millisecond))
		select {
		case <-d.notify:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// readSource names the one read in results ("Status 2"): the family's
// ReadSource() if it has one.
func (e *engine) readSource() string {
	if f, ok := e.cfg.Family.(interface{ ReadSource() string }); ok {
		return f.ReadSource()
	}
	return "read"
}

func phaseWords(p upload.Phase) string {
	switch p {
	case upload.PhaseConnecting:
		return "commanded"
	case upload.PhaseUploading:
		return "fetching"
	case upload.PhaseRebooting:
		return "restarting"
	case upload.PhaseVerifying:
		return "runs the new version; watching it"
	case upload.PhaseRetrying:
		return "commanding again"
	}
	return string(p)
}

// finish records a device's verdict, puts back the OTA URL it had where
// it was commanded, and emits the result.
func (e *engine) finish(ctx context.Context, d *dev, v Verdict, spec DeviceSpec) {
	res := e.baseResult(d)
	res.Warnings = append(res.Warnings, d.res.Warnings...)
	res.Outcome, res.Reason, res.Running, res.VersionSource = v.Outcome, v.Reason, v.Running, v.Source
	res.Words, res.Class, res.Message = v.Words, v.Class, v.Message
	if v.Outcome == upload.OutcomeFailed && res.Class == "" {
		res.Class = upload.ClassRejected
	}
	res.Duration = time.Since(d.start)
	// Counted before the slot is given up, so that no device takes the
	// slot and a command past a budget this verdict exceeds.
	e.tally(d, res)
	e.release(d)
	pending := false
	if len(spec.Commands) > 0 {
		var w string
		if w, pending = e.restore(ctx, d, res.Outcome); w != "" {
			res.Warnings = append(res.Warnings, w)
		}
	}
	d.res, d.done = res, true
	d.mu.Lock()
	d.phase = PhaseDone
	d.mu.Unlock()
	e.saveDev(d.idx, func(dr *DeviceRecord) {
		dr.Phase, dr.Result, dr.RestorePending = PhaseDone, ptr(res), pending
	})
	e.emitDone(d)
}

// reading is what the file server saw of the device's fetches since its
// last command ("" none), for its verdict.
func (e *engine) reading(d *dev) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fetchReading(d.fetches)
}

// restorePendingWarning is the warning of a device whose verdict came as
// the run was interrupted, before its OTA URL was put back.
const restorePendingWarning = "its previous OTA URL is not put back yet: the rollout was interrupted; --resume puts it back"

// restoreLeft puts back the OTA URL of a device a run left done but not
// restored (interrupted at its verdict), then emits its result.
func (e *engine) restoreLeft(ctx context.Context, d *dev) {
	w, pending := e.restore(ctx, d, d.res.Outcome)
	if pending {
		return
	}
	d.res.Warnings = slices.DeleteFunc(d.res.Warnings, func(s string) bool { return s == restorePendingWarning })
	if w != "" {
		d.res.Warnings = append(d.res.Warnings, w)
	}
	res := d.res
	e.saveDev(d.idx, func(dr *DeviceRecord) {
		dr.Result, dr.RestorePending = ptr(res), false
	})
}

// restore puts back the OTA URL the device had before, once its final
// image runs or it was given up, if it is online: "" or a warning, and
// whether it is still to do (ctx ended first).
func (e *engine) restore(ctx context.Context, d *dev, o upload.Outcome) (string, bool) {
	d.mu.Lock()
	b, withheld, online := d.before, d.withheld, d.online
	d.mu.Unlock()
	if b == nil || b.OtaURL == nil {
		if withheld {
			return "its previous OTA URL held a password, which the state file does not keep: put it back by hand", false
		}
		return "", false
	}
	if *b.OtaURL == e.url {
		return "", false
	}
	up := o != upload.OutcomeUnreachable
	if online != nil {
		up = *online
	}
	if !up {
		return "its previous OTA URL was not put back: the device is offline", false
	}
	if ctx.Err() != nil || e.waitLink(ctx) != nil {
		return restorePendingWarning, true
	}
	rctx, cancel := context.WithTimeout(ctx, e.cfg.ReadTimeout)
	defer cancel()
	if err := e.cfg.Family.Restore(rctx, d.d, *b.OtaURL); err != nil {
		if ctx.Err() != nil {
			return restorePendingWarning, true
		}
		return "its previous OTA URL could not be put back: " + oneLine(err), false
	}
	return "", false
}

// cancelled: ctx ended while the device was in flight. The state keeps it
// commanded, so --resume watches it again.
func (e *engine) cancelled(d *dev) {
	e.release(d)
	res := e.baseResult(d)
	res.Warnings = append(res.Warnings, d.res.Warnings...)
	res.Outcome = upload.OutcomeCancelled
	res.Message = "interrupted while the device was being updated; --resume watches it again without commanding it"
	res.Duration = time.Since(d.start)
	d.res, d.done = res, true
	e.emitDone(d)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func oneLine(err error) string { return oneLineString(err.Error()) }

func oneLineString(s string) string { return oneline.Clean(s, 200) }
