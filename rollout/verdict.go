package rollout

import (
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// DeviceSpec is what the verdict knows of one device besides its reports.
type DeviceSpec struct {
	// Expect is --expect-version, compared with Facts.Release.
	Expect string
	// Before is the pre-flight read, nil when it went unanswered.
	Before *Facts
	// Refusal is the family's Screen of Before: "" when the device can
	// take the image.
	Refusal string
	// Commands are when each command was sent, in order (none yet: the
	// verdict is the pre-flight's).
	Commands []time.Time
	// Retries is how many commands may follow the first, each only after
	// a failed report and no restart since the command before it.
	Retries int
	// Bound is how long a device has from its last command to its final
	// image (twice that once it was seen on an intermediate image).
	Bound time.Duration
	// RebootWindow is how long a restart may take before the one read
	// (Reread) is due.
	RebootWindow time.Duration
	// Stability is how long the device must stay online after it was
	// seen running the target.
	Stability time.Duration
	// Reread is when the one read after a missed report was made (zero:
	// not yet); its answer, if any, is a ReportStatus among the reports at
	// that time, RereadAnswered says whether one came.
	Reread         time.Time
	RereadAnswered bool
	// Resumed is when a resumed run began to observe the device again
	// (zero: not resumed). What it told before counts; but the read is
	// due no earlier than a reboot window after it, a stability window
	// starts again then, and the device is never commanded again.
	Resumed time.Time
	// Fetched is ots-ota's reading of what the file server saw of the
	// device's fetches since its last command ("" none seen): a failed
	// verdict tells it after the device's quoted words.
	Fetched string
	// Outage: Resumed is when the link to the devices came back after an
	// outage (Linker), not when a resumed run began; it changes only the
	// words.
	Outage bool
}

// Verdict is the per-device conclusion, or what the engine must do next.
type Verdict struct {
	Outcome upload.Outcome
	Reason  upload.Reason
	Class   upload.Class
	Running string // the version seen after the command, as results show it (its release; "" none)
	Source  string // where Running came from (the report's Source)
	Words   string // the device's own words, for failed
	Message string

	// While not done: Retry says a further command is due now, Reread
	// that the one read is due now; Wake is when the verdict may change
	// without a new report (a stability window ends, a reread falls due,
	// the bound ends); zero when only a report can change it.
	Retry  bool
	Reread bool
	Wake   time.Time
	// Phase is where the device stands, for progress while not done:
	// upload.PhaseConnecting (commanded), PhaseUploading (fetching),
	// PhaseRebooting, PhaseVerifying.
	Phase upload.Phase
}

// Decide is the verdict for one device from its spec and its reports (in
// the order they came; those before the first command are ignored): the
// outcome and true, or what to do next and false. final says conclude now
// (the engine passes it at the bound). It is a pure function.
func Decide(spec DeviceSpec, reports []Report, now time.Time, final bool) (Verdict, bool) {
	return decide(spec, reports, now, final)
}
