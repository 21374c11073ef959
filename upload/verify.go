package upload

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Facts are what a device tells about itself at one moment, each with
// where it came from (device-contract.md §4). Zero fields are unknown.
type Facts struct {
	// Answered: the device gave an HTTP reply (any status) on its OTA or web
	// port just now. A rebooting device is silent: Answered false.
	Answered bool
	// Protocol is what mDNS or the inventory says the device speaks ("" when
	// they say nothing): TXT board/auth_upload on _arduino._tcp → Espota.
	Protocol Protocol
	Project  string
	Version  string
	Chip     string
	// State is the running image's app state (valid, pending_verify, ...),
	// told by /ota/status only.
	State     string
	ELFSHA256 string
	// SlotSize is the app slot size in bytes, 0 when not told.
	SlotSize int64
	// Board is the Arduino variant of TXT board=: an ArduinoOTA device.
	Board string
	// Uptime since the device's last boot; UptimeKnown says it was told.
	Uptime      time.Duration
	UptimeKnown bool
	// VersionSource is where Version came from: "/ota/status",
	// "/api/status" or "txt".
	VersionSource string
}

// Observer reads what a device tells. Observe returns what it could learn;
// an error means nothing at all could be read (Facts may still say the
// device answered). Observers only read: they never start an upload or
// send an espota invitation.
type Observer interface {
	Observe(ctx context.Context, t Target) (Facts, error)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(ctx context.Context, t Target) (Facts, error)

// Observe calls f.
func (f ObserverFunc) Observe(ctx context.Context, t Target) (Facts, error) { return f(ctx, t) }

type verifyingKey struct{}

// IsVerifying reports whether ctx is that of a verification read: what an
// Observer returns then must be fresh (a TXT record cached from before the
// update shows the old version and would read as a rollback).
func IsVerifying(ctx context.Context) bool {
	v, _ := ctx.Value(verifyingKey{}).(bool)
	return v
}

// imageFacts are what the firmware says about itself.
type imageFacts struct {
	project, version, chip, elf string
}

func factsOf(fw *Firmware) imageFacts {
	var f imageFacts
	if fw == nil || fw.Image == nil {
		return f
	}
	f.chip = fw.Image.Header.ChipID.String()
	if d := fw.Image.App; d != nil {
		f.project, f.version = d.ProjectName, d.Version
		if d.ELFSHA256 != ([32]byte{}) {
			f.elf = hex.EncodeToString(d.ELFSHA256[:])
		}
	}
	return f
}

// sameELF compares a device's elf_sha256 (possibly abbreviated, as
// esp_app_get_elf_sha256 may print a prefix) with the image's.
func sameELF(device, image string) bool {
	d := strings.ToLower(strings.TrimSpace(device))
	if len(d) < 8 || image == "" {
		return false
	}
	return strings.HasPrefix(image, d)
}

// verdict is the verification's conclusion.
type verdict struct {
	outcome Outcome
	pending bool
	running string
	state   string
	source  string
	message string
	// hold: the new version runs, but the device tells no app state: it
	// counts once it kept running it through the stability window.
	hold bool
}

// verifySpec is what one verification needs.
type verifySpec struct {
	target   Target
	protocol Protocol
	img      imageFacts
	before   Facts     // pre-flight facts
	beforeAt time.Time // when they were read
	accepted time.Time
	// lostAnswer: the device took the whole image but its answer (200, OK)
	// was lost; only a running new version makes it a success.
	lostAnswer bool
}

// verify waits for a device that accepted an image to go away and come
// back, then reads its version (and app state, where told) until it can
// say which outcome holds, or until o.VerifyTimeout. It never says Updated
// unless the new version was seen running.
func (r *runner) verify(ctx context.Context, d *device, s verifySpec) verdict {
	o := r.opts
	deadline := s.accepted.Add(o.VerifyTimeout)
	graceEnd := s.accepted.Add(o.RebootGrace)
	parent := ctx
	ctx = context.WithValue(ctx, verifyingKey{}, true)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	newV, oldV := s.img.version, s.before.Version
	if s.protocol == Espota && oldV == "" && s.before.ELFSHA256 == "" {
		// An espota device is seen only through mDNS TXT; one that told no
		// version there before will not tell one now.
		if s.lostAnswer {
			return verdict{outcome: OutcomeUnverified, message: "the device took the whole image but its OK was lost, and it tells no version on the network; not verified"}
		}
		return verdict{outcome: OutcomeUnverified, message: "the device accepted the image (OK) but tells no version on the network; not verified"}
	}
	sawAway, sawBack := false, false
	var last Facts
	var heldSince time.Time
	seenVersion := false
	emitted := PhaseRebooting
	r.emit(d, Event{Phase: PhaseRebooting, Message: "waiting for the device to restart"})
	for {
		f, err := r.observe(ctx, s.target)
		if ctx.Err() != nil {
			break
		}
		http := s.protocol != Espota
		switch {
		case http && !f.Answered:
			if !sawAway {
				sawAway = true
			}
		case http || err == nil:
			if sawAway {
				sawBack = true
			}
			if f.Version != "" || last.Version == "" {
				last = f
			}
			if f.Version != "" {
				seenVersion = true
			}
		}
		runsNew := runsNewImage(s, f)
		// uptime_s is in whole seconds: only an uptime a second shorter than
		// the time since acceptance proves a restart.
		rebooted := sawBack || runsNew ||
			(f.Answered && uptimeReset(s, f))
		if !http {
			// espota devices tell nothing but mDNS TXT: a fresh record with
			// the new version is the only sign the image runs.
			rebooted = runsNew
		}
		if rebooted && (f.Answered || !http) {
			if emitted != PhaseVerifying {
				emitted = PhaseVerifying
				r.emit(d, Event{Phase: PhaseVerifying, Message: "device is back; reading its version"})
			}
			v, done := decide(s, f, runsNew, o.NoWaitValid)
			switch {
			case done && v.hold:
				if heldSince.IsZero() {
					heldSince = time.Now()
				}
				if time.Since(heldSince) >= o.StabilityWindow {
					v.message += fmt.Sprintf(" and kept running it through the %s stability window (it tells no app state)", round(o.StabilityWindow))
					return v
				}
			case done:
				return v
			default:
				heldSince = time.Time{}
			}
		} else {
			heldSince = time.Time{}
		}
		if !rebooted && !sawAway && time.Now().After(graceEnd) && f.Answered && f.Version != "" && f.Version == oldV && newV != oldV {
			return verdict{outcome: OutcomeUnchanged, running: f.Version, state: f.State, source: f.VersionSource,
				message: fmt.Sprintf("still runs %s and showed no sign of a reboot %s after accepting the image", f.Version, round(o.RebootGrace))}
		}
		if !sleepCtx(ctx, o.PollInterval) {
			break
		}
	}
	if parent.Err() != nil {
		return verdict{outcome: OutcomeCancelled, message: "interrupted while verifying; the device had accepted the image"}
	}
	// The verify timeout passed.
	vt := round(o.VerifyTimeout)
	switch {
	case s.protocol == Espota && !seenVersion:
		if s.lostAnswer {
			return verdict{outcome: OutcomeUnreachable, message: fmt.Sprintf("the device took the image but its OK was lost, and it did not reappear within %s", vt)}
		}
		if s.before.Version == "" {
			return verdict{outcome: OutcomeUnverified, message: "the device accepted the image (OK) but tells no version on the network; not verified"}
		}
		return verdict{outcome: OutcomeUnreachable, message: fmt.Sprintf("accepted the image but did not reappear in mDNS within %s", vt)}
	case sawAway && !sawBack:
		return verdict{outcome: OutcomeUnreachable, message: fmt.Sprintf("accepted the image, restarted, and did not come back within %s", vt)}
	case last.Version != "" && last.Version == newV && last.State != "":
		return verdict{outcome: OutcomeUnverified, running: last.Version, state: last.State, source: last.VersionSource,
			message: fmt.Sprintf("runs %s but still %s after %s; it may roll back at its next restart", last.Version, last.State, vt)}
	case last.Version != "" && last.Version == newV && last.State == "":
		return verdict{outcome: OutcomeUnverified, running: last.Version, source: last.VersionSource,
			message: fmt.Sprintf("runs %s, but %s passed before it had run it through the %s stability window", last.Version, vt, round(o.StabilityWindow))}
	case last.Version != "" && last.Version == oldV && !sawAway:
		return verdict{outcome: OutcomeUnchanged, running: last.Version, state: last.State, source: last.VersionSource,
			message: fmt.Sprintf("still runs %s and showed no sign of a reboot within %s", last.Version, vt)}
	case last.Version != "":
		return verdict{outcome: OutcomeUnverified, running: last.Version, state: last.State, source: last.VersionSource,
			message: fmt.Sprintf("runs %s, expected %s", last.Version, newV)}
	case !last.Answered && !sawBack:
		return verdict{outcome: OutcomeUnreachable, message: fmt.Sprintf("accepted the image and did not answer again within %s", vt)}
	case !sawAway:
		return verdict{outcome: OutcomeUnverified, message: "accepted the image and kept answering, but showed no reboot and exposes no version; not verified"}
	}
	return verdict{outcome: OutcomeUnverified, message: "came back after the update but exposes no version (no /ota/status, /api/status or mDNS TXT); not verified"}
}

// runsNewImage reports whether f shows the device running the image being
// sent, where before it ran another: a new version string, or the image's
// elf_sha256 where the device tells it.
func runsNewImage(s verifySpec, f Facts) bool {
	newV, oldV := s.img.version, s.before.Version
	return f.Version != "" && (f.Version == newV && newV != oldV ||
		s.img.elf != "" && sameELF(f.ELFSHA256, s.img.elf) && !sameELF(s.before.ELFSHA256, s.img.elf))
}

// uptimeReset reports whether the device's uptime proves a restart since
// the pre-flight read, even when its silence was too short to be seen.
// uptime_s counts whole seconds: only a shortfall of more than two seconds
// against the uptime expected by now counts.
func uptimeReset(s verifySpec, f Facts) bool {
	if !f.UptimeKnown || !s.before.UptimeKnown || s.beforeAt.IsZero() {
		return false
	}
	expected := s.before.Uptime + time.Since(s.beforeAt)
	return f.Uptime+2*time.Second < expected
}

// decide concludes from facts read after the device came back, or reports
// that it must keep waiting (the stability window).
func decide(s verifySpec, f Facts, runsNew, noWaitValid bool) (verdict, bool) {
	v := verdict{running: f.Version, state: f.State, source: f.VersionSource}
	newV, oldV := s.img.version, s.before.Version
	switch {
	case f.Version == "":
		if s.protocol == Espota || s.before.Version != "" {
			// It told a version before: a reply without one is a server
			// still starting (or a request that failed), not the answer.
			return v, false
		}
		v.outcome = OutcomeUnverified
		v.message = "came back after the update but exposes no version (no /ota/status, /api/status or mDNS TXT); not verified"
		return v, true
	case runsNew || f.Version == newV:
		switch f.State {
		case "", "valid", "undefined":
			// No state told (or no rollback support): the version is all
			// there is, held through the stability window (see verify).
			v.outcome = OutcomeUpdated
			v.hold = f.State == "" && !noWaitValid
			v.message = "runs " + f.Version
			if f.State == "valid" {
				v.message += ", marked valid"
			}
			if s.lostAnswer {
				v.message += " (its answer to the upload was lost)"
			}
			return v, true
		case "pending_verify", "new":
			if noWaitValid {
				v.outcome, v.pending = OutcomeUpdated, true
				v.message = "runs " + f.Version + ", not yet marked valid (--no-wait-valid)"
				return v, true
			}
			return v, false // wait through the stability window
		default: // invalid, aborted: on its way back to the old image
			return v, false
		}
	case f.Version == oldV:
		if s.lostAnswer {
			v.outcome = OutcomeUnchanged
			v.message = "its answer was lost and it still runs " + f.Version
			return v, true
		}
		v.outcome = OutcomeRolledBack
		v.message = fmt.Sprintf("accepted %s, restarted, and came back on %s", newV, f.Version)
		return v, true
	}
	return v, false
}

// observe reads the device's facts with the probe timeout.
func (r *runner) observe(ctx context.Context, t Target) (Facts, error) {
	if r.opts.Observer == nil {
		return Facts{}, fmt.Errorf("no observer")
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.ProbeTimeout)
	defer cancel()
	return r.opts.Observer.Observe(ctx, t)
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Second)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d
}

// sleepCtx sleeps d or until ctx ends; it reports whether the sleep completed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
