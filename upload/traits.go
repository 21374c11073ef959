package upload

import (
	"context"
	"time"
)

// ArduinoDefaultSlot is the app slot of arduino-esp32's default partition
// scheme (tools/partitions/default.csv: app0/app1 of 0x140000).
const ArduinoDefaultSlot = 0x140000

// Traits are what the runner must know of a protocol family's devices to
// decide for them: the transport of the device's protocol reports them
// (WithTraits), so the runner, the verification and the retries name no
// protocol. The zero value is a family with none of these traits: devices
// that take every kind of image, check an image's chip themselves and
// answer reads of their own.
type Traits struct {
	// NoFilesystem, when not "", says why the family's devices take no
	// filesystem image: pre-flight refuses one, and nothing is sent.
	NoFilesystem string
	// ChipUnchecked: the devices boot any image whose first byte fits,
	// without checking its chip, so pre-flight warns when such a device
	// tells no chip.
	ChipUnchecked bool
	// ESP8266Port is the OTA port the family's ESP8266 devices listen on (0
	// when it has none of its own): no chip fact, but a hint the chip
	// warning names.
	ESP8266Port int
	// ArduinoSlot: the devices are Arduino sketches, whose app slot, unless
	// they tell theirs, is ArduinoDefaultSlot: pre-flight warns of a larger
	// image.
	ArduinoSlot bool
	// MDNSOnly: the devices tell what they run in their mDNS TXT record
	// only, never in an answer of their own. A quick read cannot refresh
	// that, a device that told no version there before the upload tells
	// none after it, and a read that failed is no answer.
	MDNSOnly bool
	// Datagram: the family is reached by a datagram, not by a TCP connect
	// to the OTA port, so a probe chose it only because that port refused
	// TCP. When a try reaches nothing, the probe decides again: a device
	// whose TCP server was not up yet refuses too.
	Datagram bool
	// QuietProbe, when > 0: a read of the device while it installs an
	// image may break its flash (Tasmota's maintainers say so of Status).
	// After an upload, until the device was seen away and back, the only
	// thing that reaches it is a TCP connect to its port, at most once
	// per QuietProbe; its facts are read only then, or once QuietHold has
	// passed without it being seen away (a restart quicker than the
	// connects).
	QuietProbe time.Duration
	QuietHold  time.Duration
	// Port is where the family's devices serve when the target names no
	// port (0: the OTA port's 3232): the quiet connects go there.
	Port int
	// NoImageIdentity: what the devices report is never what an image's
	// app descriptor says (WLED's ver, Tasmota's Version are their own), so
	// only what the user expects (Options.ExpectVersion, and
	// Options.ExpectBuild for ESPHome's config_hash) gives an image an
	// identity to verify; without it verification ends unverified
	// (image-has-no-identity). The image's descriptor is not compared
	// with the device's facts in pre-flight either.
	NoImageIdentity bool
	// NoIdentityHint, when not "", is the advice an update left unverified
	// for want of an expected identity gives (reason image-has-no-identity).
	NoIdentityHint string
	// Warning, when not "", is a remark for every device sent to with this
	// transport as configured (WLED with --force: skipValidation=1): the
	// result carries it, as it does pre-flight's own warnings.
	Warning string
}

// WithTraits is a Transport that reports its family's Traits.
type WithTraits interface {
	Transport
	Traits() Traits
}

// traitsOf is what tr reports of its family, the zero Traits when tr is
// nil or reports none.
func traitsOf(tr Transport) Traits {
	if wt, ok := tr.(WithTraits); ok {
		return wt.Traits()
	}
	return Traits{}
}

// Screener is a Transport whose protocol serves several families (or
// chips) that differ in what they take, so its Traits cannot refuse for
// all of them. Pre-flight asks it about each device: a refusal ends the
// device refused, with nothing sent (--force does not override it).
type Screener interface {
	Transport
	// Screen returns "" when fw may go to t, else one line for the user:
	// why nothing is sent.
	Screen(t Target, fw *Firmware) string
}

// screen is tr's refusal of fw for t, "" when tr screens nothing.
func screen(tr Transport, t Target, fw *Firmware) string {
	if s, ok := tr.(Screener); ok {
		return s.Screen(t, fw)
	}
	return ""
}

// Finisher is a Transport that has something to undo on a device once its
// outcome is final, whatever it is (Tasmota by URL restores the OtaUrl it
// set). The runner calls Finish once per device it sent to, after the
// verification; Finish returns a warning for the user, "" when all went
// well. ctx is not the push's: it still runs after an interrupt, bounded
// by the runner (30 s).
type Finisher interface {
	Transport
	Finish(ctx context.Context, t Target, cred Credentials, end Ending) string
}

// Ending is what the runner tells a Finisher of how the device ended.
type Ending struct {
	// Settled: after the upload the device answered a read, from its
	// firmware (not a loader image), so it has restarted (or the quiet
	// hold passed) and is not writing its flash. A family with the quiet
	// rule (Traits.QuietProbe) sends nothing to a device that is not
	// settled: it may still be installing (interrupted, given up, or still
	// in a loader image that fetches again).
	Settled bool
}
