package upload

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"time"
)

// Facts are what a device tells about itself at one moment, each with
// where it came from (device-contract.md §4). Every fact is told or
// unknown: a string not told is "" (an empty string identifies nothing),
// a number not told has its Known flag false, never a zero standing in.
type Facts struct {
	// Answered: the device gave an HTTP reply (any status) on its OTA or web
	// port just now, or a fresh TXT record. A rebooting device is silent:
	// Answered false.
	Answered bool
	// Silent: a connect met silence (timed out, no route), as a rebooting
	// or powered-off device gives; a refusal is not silence.
	Silent bool
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
	// SlotSize is the app slot size in bytes, when SlotSizeKnown.
	SlotSize      int64
	SlotSizeKnown bool
	// Board is the Arduino variant of TXT board=: an ArduinoOTA device.
	Board string
	// Uptime since the device's last boot, when UptimeKnown, and where it
	// was told (uptimes from different sources are not compared).
	Uptime       time.Duration
	UptimeKnown  bool
	UptimeSource string
	// Running and Boot are the running slot and the one otadata boots
	// next (/ota/status only): Boot ≠ Running means an image waits for
	// the next restart.
	Running, Boot string
	// VersionSource is where Version came from: "/ota/status",
	// "/api/status", "/json" (ESPEasy), "Status 0" (Tasmota) or "txt".
	VersionSource string
	// Intermediate names the loader image the device runs, a step of an
	// upgrade and never its end ("minimal", "safeboot": Tasmota); ""
	// when it runs firmware or does not tell. Verification reads on
	// through it.
	Intermediate string
	// Image is the full build name the device tells where Version is
	// only its release ("14.3.0(tasmota)"), for messages; "" = Version.
	Image string
	// Build is a build identity other than the elf that the device tells
	// and the user can know before the update (ESPHome's TXT config_hash,
	// which esphome config-hash prints); "" when not told.
	Build string
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
	if c, ok := fw.Image.ForChip(); ok {
		f.chip = c.String()
	}
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

// verifySpec is what one verification needs.
type verifySpec struct {
	target   Target
	traits   Traits    // of the device's protocol family
	before   Facts     // pre-flight facts
	beforeAt time.Time // when they were read
	accepted time.Time
	answer   Answer
	since    time.Time // the last byte the device took (lost answers)
}

// verify reads a device that accepted an image (or may have) until the
// verdict (Decide) concludes, or until o.VerifyTimeout: it waits for the
// device to go away and come back, then for the image to be marked valid.
// It never says Updated unless the expected image was seen running.
func (r *runner) verify(ctx context.Context, d *device, s verifySpec) Verdict {
	o := r.opts
	deadline := s.accepted.Add(o.VerifyTimeout)
	parent := ctx
	ctx = context.WithValue(ctx, verifyingKey{}, true)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	expected := r.expectedWith(s.traits)
	// A device seen only through mDNS TXT that told nothing there before
	// that the expected identity could be compared with: an espota
	// sketch's TXT will not tell it now. A family whose devices tell what
	// their own configuration sets (ESPHome) may tell it from the new
	// image on (a YAML that adds a project:, a release that adds
	// config_hash): it is watched until the verify timeout.
	untold := s.traits.MDNSOnly && !overlap(expected, identityOf(s.before))
	watch := untold && s.traits.NoImageIdentity && expected.Known()
	spec := VerdictSpec{
		Expected: expected, Before: s.before, BeforeAt: s.beforeAt, Accepted: s.accepted, Answer: s.answer, Since: s.since,
		Unobservable: untold && !watch, WatchUntold: watch,
		StabilityWindow: o.StabilityWindow, RebootGrace: o.RebootGrace, NoWaitValid: o.NoWaitValid,
	}
	if v, done := Decide(spec, nil, time.Now(), false); done {
		return r.worded(v, o, s.traits, false)
	}
	r.emit(d, Event{Phase: PhaseRebooting, Message: "waiting for the device to restart"})
	var obs []Observation
	if s.traits.QuietProbe > 0 {
		// Nothing but a TCP connect until the device has restarted.
		obs = r.quiet(ctx, d, s, true)
		if v, done := Decide(spec, obs, time.Now(), false); done {
			return r.worded(v, o, s.traits, false)
		}
	}
	verifying, loader := false, ""
	for {
		at := time.Now()
		f, err := r.observe(ctx, s.target)
		if ctx.Err() != nil {
			break
		}
		if err != nil && s.traits.MDNSOnly {
			f.Answered = false
		}
		obs = append(obs, Observation{At: at, End: time.Now(), Silent: f.Silent && !f.Answered, Facts: f})
		// Reads come only after the quiet rule let them: an answer from the
		// firmware says the device is not writing its flash now.
		d.settled = f.Answered && f.Intermediate == ""
		if f.Answered && f.Intermediate != "" && f.Intermediate != loader {
			loader = f.Intermediate
			r.emit(d, Event{Phase: PhaseRebooting, Message: "the device runs its " + loader + " image, a step of the upgrade; waiting for the new firmware"})
			if s.traits.QuietProbe > 0 {
				// The loader image installs the final one now: it is not
				// read again until it was seen away and back, however
				// long that takes (a read while it flashes may break it).
				obs = append(obs, r.quiet(ctx, d, s, false)...)
				if ctx.Err() != nil {
					break
				}
			}
		}
		if !verifying && f.Answered && f.Intermediate == "" && identityOf(f).Known() && matches(expected, identityOf(f)) == yes {
			verifying = true
			r.emit(d, Event{Phase: PhaseVerifying, Message: "the device runs the new image; checking it stays"})
		}
		if v, done := Decide(spec, obs, time.Now(), false); done {
			return r.worded(v, o, s.traits, false)
		}
		if !sleepCtx(ctx, o.PollInterval) {
			break
		}
	}
	if parent.Err() != nil {
		return Verdict{Outcome: OutcomeCancelled, Message: "interrupted while verifying; the device had accepted the image: " + checkHint(d.t)}
	}
	v, _ := Decide(spec, obs, time.Now(), true)
	return r.worded(v, o, s.traits, true)
}

// defaultQuietHold is Traits.QuietHold when the family sets none.
const defaultQuietHold = 30 * time.Second

// quiet waits, with TCP connects only (Traits.QuietProbe), for the device
// to go away and come back, or, when held, for QuietHold to pass with
// every connect accepted; it returns the connects that met silence, as
// observations (they count towards a restart). It returns early when ctx
// ends.
func (r *runner) quiet(ctx context.Context, d *device, s verifySpec, held bool) []Observation {
	tr := s.traits
	hold := tr.QuietHold
	if hold <= 0 {
		hold = defaultQuietHold
	}
	t := s.target
	if t.Port == 0 && tr.Port != 0 {
		t.Port = tr.Port
	}
	addr := t.Addr()
	r.emit(d, Event{Phase: PhaseRebooting, Message: fmt.Sprintf("waiting for the device to install the image and restart (nothing but a TCP connect to %s every %s until then)", addr, round(tr.QuietProbe))})
	var obs []Observation
	start, away := time.Now(), false
	for {
		at := time.Now()
		up, silent := r.connects(ctx, addr)
		if ctx.Err() != nil {
			return obs
		}
		switch {
		case !up:
			away = true
			if silent {
				obs = append(obs, Observation{At: at, End: time.Now(), Silent: true})
			}
		case away || held && time.Since(start) >= hold:
			return obs
		}
		if !sleepCtx(ctx, tr.QuietProbe-time.Since(at)) {
			return obs
		}
	}
}

// connects reports whether a TCP connect to addr succeeds within the probe
// timeout (closed at once, nothing sent) and, when not, whether it met
// silence rather than a refusal.
func (r *runner) connects(ctx context.Context, addr string) (up, silent bool) {
	d := net.Dialer{Timeout: r.opts.ProbeTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		return true, false
	}
	class, _ := ClassifyDial(addr, r.opts.ProbeTimeout, err)
	return false, class == ClassTimeout || class == ClassUnreachable
}

// checkHint says how to see what a device runs after push was stopped.
func checkHint(t Target) string { return "check what it runs with: ots-ota info " + t.Addr() }

// worded adds what only the runner knows to a verdict's message.
func (r *runner) worded(v Verdict, o Options, tr Traits, timedOut bool) Verdict {
	if v.Reason == ReasonNoIdentity && r.fw != nil && r.fw.Filesystem {
		v.Message = "a filesystem image changes no version the device reports; the device took it, not verified"
		return v
	}
	if v.Reason == ReasonNoIdentity && tr.NoImageIdentity && v.Outcome == OutcomeUnverified {
		v.Message = "the device reports what its own firmware or configuration sets, which the image does not carry; not verified"
		if v.NoRestart {
			v.Message = noRestartNote(v.NoRestartUptime) + "; " + v.Message
		}
		hint := tr.NoIdentityHint
		if hint == "" {
			hint = "give --expect-version (the version it reports once it runs the image) to verify"
		}
		v.Message += ": " + hint
		if timedOut {
			v.Message += fmt.Sprintf(" (verify timeout %s)", round(o.VerifyTimeout))
		}
		return v
	}
	if timedOut && (v.Outcome == OutcomeUnreachable || v.Outcome == OutcomeUnverified) {
		v.Message += fmt.Sprintf(" (verify timeout %s)", round(o.VerifyTimeout))
	}
	return v
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
