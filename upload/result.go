package upload

import "time"

// Outcome is how one device's update ended. The values are stable: they
// appear in the summary table and the --json output.
type Outcome string

// The outcomes (issue "push" §6). Only OutcomeUpdated claims the new image runs,
// and only after it was seen running.
const (
	// OutcomeUpdated: the new version was seen running, and valid where the device
	// tells its app state (Result.Pending when --no-wait-valid stopped early).
	OutcomeUpdated Outcome = "updated"
	// OutcomeRolledBack: after accepting the image, a restart was proven or
	// the identity changed, and the device runs another image than the one
	// sent: the old one, the factory app or a third.
	OutcomeRolledBack Outcome = "rolled-back"
	// OutcomeUnchanged: the old version, and no sign of a reboot.
	OutcomeUnchanged Outcome = "unchanged"
	// OutcomeUnreachable: nothing answered, or the device never came back.
	OutcomeUnreachable Outcome = "unreachable"
	// OutcomeUnverified: the device took the image but what it tells cannot
	// show that it runs it (Result.Reason says why); never counted as updated.
	OutcomeUnverified Outcome = "unverified"
	// OutcomeFailed: the upload failed; Result.Words holds the device's own words.
	OutcomeFailed Outcome = "failed"
	// OutcomeRefused: nothing was sent because the device told a chip, project or
	// slot size the image does not fit, or the upload kind it lacks.
	OutcomeRefused Outcome = "refused"
	// OutcomeSkipped: the device already runs this image.
	OutcomeSkipped Outcome = "skipped"
	// OutcomeAccepted: the device accepted the image and verification was off.
	OutcomeAccepted Outcome = "accepted"
	// OutcomeNotStarted: the rollout stopped before this device (a failed canary,
	// the failure budget, or an interrupt).
	OutcomeNotStarted Outcome = "not-started"
	// OutcomeCancelled: interrupted while this device was being updated.
	OutcomeCancelled Outcome = "cancelled"
	// OutcomePlanned: --dry-run; the device would be updated.
	OutcomePlanned Outcome = "planned"
)

// Bad reports whether the outcome makes the run fail (exit 1): the device
// failed, refused, rolled back, stayed unchanged or never came back.
func (o Outcome) Bad() bool {
	switch o {
	case OutcomeFailed, OutcomeRefused, OutcomeRolledBack, OutcomeUnchanged, OutcomeUnreachable:
		return true
	}
	return false
}

// Result is the final word on one device.
type Result struct {
	// Target is the device as it was given (after merging duplicates).
	Target Target `json:"-"`
	// Device labels the device: the target's name, else its address.
	Device   string   `json:"device"`
	Addr     string   `json:"address"`
	Protocol Protocol `json:"protocol,omitempty"`
	// From is the version the device ran before, To the image's version;
	// either is "" when unknown.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Running is the version seen after the update, "" when none was seen.
	Running string  `json:"running,omitempty"`
	Outcome Outcome `json:"outcome"`
	// Reason says why an unverified device could not be verified
	// (tells-nothing, image-has-no-identity, not-yet-valid,
	// window-incomplete, same-identity, before-unknown); "" otherwise.
	Reason Reason `json:"reason,omitempty"`
	// Pending: updated, but stopped before the device marked the image
	// valid (--no-wait-valid): "updated (pending_verify)".
	Pending bool `json:"pending_verify,omitempty"`
	// State is the app state the device last reported ("" when it tells none).
	State string `json:"state,omitempty"`
	// VersionSource is where Running (or the failure to see it) came from:
	// "/ota/status", "/api/status", "/json" (ESPEasy), "txt", or "" when
	// nothing told.
	VersionSource string `json:"version_source,omitempty"`
	// Tries is how many uploads were started (0 when none was).
	Tries int `json:"tries"`
	// Duration is from the device's start to its result.
	Duration time.Duration `json:"-"`
	// Bytes is what the device acknowledged in the last try that got to
	// sending the image (connected, not refused before the first byte),
	// whatever its end: accepted, failed or interrupted. Nil when no try
	// got that far (no connection, or a session that ended before the
	// image, as a failed espota authentication does). Rate is that try's
	// transfer rate in bytes per second from the try's start (0 when
	// unknown).
	Bytes *int64  `json:"bytes,omitempty"`
	Rate  float64 `json:"rate,omitempty"`
	// Class is the failure class of the last failed try, if any.
	Class Class `json:"class,omitempty"`
	// Status and Words are the device's own answer to the last failed try.
	Status int    `json:"status,omitempty"`
	Words  string `json:"words,omitempty"`
	// Message is one line for the user on what happened; never a secret.
	Message string `json:"message,omitempty"`
	// Warnings are pre-flight remarks that did not stop the update.
	Warnings []string `json:"warnings,omitempty"`
	// Canary marks a device of the --canary group.
	Canary bool `json:"canary,omitempty"`
}

// OutcomeText is the outcome as the summary prints it.
func (r Result) OutcomeText() string {
	if r.Outcome == OutcomeUpdated && r.Pending {
		return "updated (pending_verify)"
	}
	return string(r.Outcome)
}

// FleetEvent is what the fleet runner reports: a transport's or the
// runner's own Event for one device and, with Phase PhaseDone, the
// device's final Result.
type FleetEvent struct {
	Event
	// Addr is the device's upload address: the OTA port, or where
	// detection found its upload (a web uploader's web port).
	Addr string `json:"address,omitempty"`
	// Key is the target's address when the run began (Target.Addr()),
	// the same on every event of the device even after detection moved
	// its Addr to the web port: what a view keys a device by.
	Key string `json:"-"`
	// Protocol is the device's protocol once chosen.
	Protocol Protocol `json:"protocol,omitempty"`
	// Result is set on PhaseDone only.
	Result *Result `json:"result,omitempty"`
}
