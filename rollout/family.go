package rollout

import (
	"context"
	"errors"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// Device is one device of the rollout.
type Device struct {
	Name      string // label shown to the user: inventory name, else the topic
	Topic     string // the family's key for the device (Tasmota: %topic%)
	FullTopic string // the device's FullTopic pattern; "" = the family's default
	// Manifest is the name of the announcement file the device polls
	// (Announcer families); "" = the family's default.
	Manifest string
	// Entity is a family detail naming what on the device takes the
	// update; "" = found by the family.
	Entity string
}

// label is Name, else Topic.
func (d Device) label() string {
	if d.Name != "" {
		return d.Name
	}
	return d.Topic
}

// Facts a device told; "" / nil = not told (unknown), never zero.
type Facts struct {
	Version       string  `json:"version,omitempty"`      // as told ("14.3.0(tasmota)")
	Release       string  `json:"release,omitempty"`      // numeric part ("14.3.0"), "" when none
	Intermediate  string  `json:"intermediate,omitempty"` // "minimal" / "safeboot" / ""
	OtaURL        *string `json:"ota_url,omitempty"`
	UptimeS       *int64  `json:"uptime_s,omitempty"`
	BootCount     *int64  `json:"boot_count,omitempty"`
	Chip          string  `json:"chip,omitempty"` // image package's words ("esp8266", "esp32s3"), "" unknown
	FreeKiB       *int64  `json:"free_kib,omitempty"`
	RestartReason string  `json:"restart_reason,omitempty"`

	// Additions: where the device is on the network, so that a fetch of
	// the file server can be matched to it (byte progress). "" = not told.
	MAC string `json:"mac,omitempty"` // AA:BB:CC:DD:EE:FF, upper case
	IP  string `json:"ip,omitempty"`

	// Latest is the version the device says is available to it (what it
	// read in an announcement); "" = not told.
	Latest string `json:"latest,omitempty"`
}

// ReportKind is what a report tells.
type ReportKind string

// The report kinds.
const (
	ReportOnline  ReportKind = "online"  // LWT Online
	ReportOffline ReportKind = "offline" // LWT Offline (the broker's will, or a clean goodbye)
	ReportStarted ReportKind = "started" // the device took the command (Tasmota RESULT {"Upgrade":"Version … from …"})
	ReportFailed  ReportKind = "failed"  // the device's download/flash failed, it keeps running (Tasmota UPGRADE "Failed …")
	ReportSuccess ReportKind = "success" // written, restarting (Tasmota UPGRADE "Successful. Restarting")
	ReportBooted  ReportKind = "booted"  // the device booted and says what it runs (Tasmota INFO1 [+INFO3]) — a proof of a boot
	ReportStatus  ReportKind = "status"  // an answer to a read (Status 0 / Status 2): facts, no proof of a boot
)

// Report is one thing a device told.
type Report struct {
	Topic string // which device
	Kind  ReportKind
	At    time.Time
	Words string // the device's own words (for failed/success/started), cleaned to one line
	Facts Facts  // for booted/status

	// Additions. Source is where Facts came from in the family's words
	// ("INFO1", "Status 2"); it becomes Result.VersionSource ("" = the
	// kind's name). Class, on a failed report, is the failure class when
	// the family knows it ("" = judged from Words).
	Source string
	Class  upload.Class
}

// Family is one kind of pulling device: how to watch, read and command it.
type Family interface {
	Name() string // "tasmota"
	// Watch starts delivering reports of these devices (and, with discovery, of any device) to fn, from
	// now until ctx ends. Called once per run, before any command.
	Watch(ctx context.Context, devs []Device, fn func(Report)) error
	// Discover lists the devices the broker knows (Tasmota: retained tele/+/LWT), waiting at most wait.
	Discover(ctx context.Context, wait time.Duration) ([]Device, error)
	Preflight(ctx context.Context, d Device) (Facts, error)     // one read before commanding (Status 0); error = no answer within ctx
	Command(ctx context.Context, d Device, url string) error    // tell it to fetch url and install (once per call)
	Reread(ctx context.Context, d Device) (Facts, error)        // the one read after a missed report (Status 2)
	Restore(ctx context.Context, d Device, otaURL string) error // put back what Preflight told (OtaUrl)
	// Companions: the names the device may fetch besides the image (Tasmota: "fw-minimal.bin", "fw.bin.gz",
	// "fw-minimal.bin.gz" for "fw.bin"); the engine publishes those that exist beside FIRMWARE.
	Companions(imageName string) []string
	// Screen: "" when this device can take the image, else the one-line reason it is refused before any
	// command (chip told and ≠ img.Chip; ESP8266 whose FreeKiB < image size and no "-minimal" among have).
	Screen(f Facts, img Image, have []string) string
}

// A Family may also have these methods, which the engine then uses:
//   - Protocol() upload.Protocol: the results' protocol label (else Name);
//   - ReadSource() string: Result.VersionSource of a verdict from Reread.
//
// (A device keeps its --max-fetches slot through a loader's boot: fetchOver.)

// ErrNotSent is wrapped by a Family's Command error when the command
// surely did not leave (a URL or topic it refused, a link that stayed
// down): the device can be left pending. Any other Command error means
// the command may still reach the device.
var ErrNotSent = errors.New("the command was not sent")

// ErrTookAnnouncement is wrapped by a Readier's error when the device
// began or finished installing the announced image on its own, with no
// command (ESPHome: an automation that installs what its manifest
// announces). The engine then sends no command: it takes the announcement
// as the device's command, made when the device was read before it, and
// watches the device to its verdict as it watches a commanded one.
var ErrTookAnnouncement = errors.New("the device took the announced image on its own")

// ErrAlreadyOn is wrapped by a Readier's error when the device turned out
// to run the target already, though the read before the update could not
// tell its version (ESPHome: no update check yet since its last boot), and
// nothing since shows a restart. The engine ends it skipped, uncommanded.
var ErrAlreadyOn = errors.New("the device already runs the target")

// ErrNotReady is wrapped, with ErrNotSent, by a Readier family's Command
// error when the device, ready before, no longer shows it saw the
// announcement (ESPHome: it restarted while it waited for a slot, and
// would ignore the command until its next check). The engine gives up
// the device's slot and waits for it again (Ready), once; a second time
// it ends refused, not commanded.
var ErrNotReady = errors.New("the device is no longer ready for the command")

// URLChecker is an optional Family method: CheckURL refuses, with a
// one-line error, an image URL its devices cannot be told (the family's
// own rules on characters or schemes). The engine calls it before it
// publishes anything.
type URLChecker interface {
	CheckURL(url string) error
}

// CompanionChecker is an optional Family method: CheckCompanions refuses,
// with a one-line error, companion files that do not fit the image
// (image is FIRMWARE's path, companions maps each served companion's name
// to its path; empty when none is beside it). The engine calls it before
// it publishes anything.
type CompanionChecker interface {
	CheckCompanions(image string, companions map[string]string) error
}

// Linker is an optional interface of a Family whose devices are reached
// over a link that can drop (Tasmota: the MQTT broker). Without it the
// link is taken as always up.
//
// While the link is down the engine sends nothing and concludes nothing:
// it waits for the link before each pre-flight read, command, read
// (Reread) and Restore. A pre-flight read that failed while the link was
// down, or went down during it, is made again, never taken for an
// unreachable device. What devices told during an outage may be lost, so
// once the link is back every device in flight is watched as a --resume
// watches it (DeviceSpec.Resumed = when the link came back): its reboot
// and stability windows start again, and it is never commanded again.
type Linker interface {
	// Link tells whether the link is up now, and gives a channel closed at
	// its next change (down, or back up); the two must agree (take them
	// under one lock). Each change closes the channel, even one undone
	// before the engine looked again: the engine takes any change for an
	// outage, its reports maybe lost.
	Link() (up bool, changed <-chan struct{})
}

// Image is what the engine tells a family about the image it publishes.
type Image struct {
	Name string // the served name (FIRMWARE's base name)
	Size int64
	Chip string // image package words, "" unknown
	MD5  string // lower-case hex of the image
}

// Announcer is an optional interface of a Family whose devices learn of
// an image by polling a file at a URL fixed when they were built (a
// manifest), instead of being told the image's URL in the command.
//
// The engine publishes the files Announce returns at the start of each
// wave (through Config.Store, else the built-in file server's open
// files), before the wave's devices are readied. Before it first writes a
// name in a rollout it keeps what the name held in the state file; when a
// gate stops the rollout it puts that back (or removes the name), so that
// devices left out see no image. A completed or interrupted rollout keeps
// what it wrote (--resume writes it again).
type Announcer interface {
	// Announce returns the files to publish (name → body) for these
	// devices (a wave's), given the image, its URL and MD5 (lower-case
	// hex). Names follow fileserve's rules for served names.
	Announce(devs []Device, img Image, url, md5 string) (map[string][]byte, error)
}

// Readier is an optional interface of a Family whose devices must first
// show they saw the announcement before a command can work.
//
// The engine calls Ready for all of a wave's devices at once, each after
// its pre-flight read and BEFORE it takes a --max-fetches slot. An error
// (one line) ends the device failed (class timeout) without a command.
type Readier interface {
	// Ready blocks until the device shows it saw the announcement, at
	// most the family's own wait, or until ctx ends.
	Ready(ctx context.Context, d Device) error
}

// Tag returns err, its words unchanged, matching each of sentinels too
// (errors.Is): how a family marks a Command or Ready error as ErrNotSent,
// ErrNotReady, ErrAlreadyOn or ErrTookAnnouncement without repeating the
// sentinel's words in the device's message.
func Tag(err error, sentinels ...error) error { return tagged{err, sentinels} }

type tagged struct {
	err  error
	tags []error
}

func (e tagged) Error() string { return e.err.Error() }
func (e tagged) Unwrap() error { return e.err }
func (e tagged) Is(target error) bool {
	for _, t := range e.tags {
		if target == t {
			return true
		}
	}
	return false
}
