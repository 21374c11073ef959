package upload

import (
	"context"
	"time"

	"github.com/ots-ota/ots-ota/detect"
)

// Hint is what is known about a device before any packet is sent to it:
// what the user or the inventory said, and what mDNS advertised.
type Hint struct {
	// Protocol is --protocol, a URL (HTTP) or the inventory's protocol;
	// "" or Auto leaves the choice to the detection table.
	Protocol Protocol
	// From says who set Protocol ("--protocol", "the URL", "the
	// inventory"), for messages; "" = "--protocol or the inventory".
	From string
	// Service is the mDNS service type the device was found under
	// ("_arduino._tcp", "_ota._tcp"); "" when it was not found by mDNS.
	Service string
	// TXT holds that record's TXT keys; empty when it had none.
	TXT map[string]string
}

// Decision is the protocol chosen for one device, and why.
type Decision struct {
	Protocol Protocol
	// Why is one line for the user: which fact decided.
	Why string
	// Probed: a packet to the device decided (no fact did).
	Probed bool
	// Path is the upload path the device advertised (TXT path= on
	// _ota._tcp), "" when it told none.
	Path string
	// Family is the device family recognised (detect.Family), "" when
	// none was.
	Family string
	// Port is the port the upload goes to when it is not the target's:
	// the web port where a web uploader was found (nothing listens at the
	// OTA port), or the web port for form/elegantota named without a
	// port; 0 = the target's own.
	Port int
	// Chip is the chip family a fingerprint told ("esp8266"), "" when none
	// told; ChipFrom says which fingerprint, as a clause.
	Chip, ChipFrom string
}

// RefusedError is a probe's verdict that the device gets nothing: it was
// recognised as a family ots-ota does not speak yet (or, seen only as a
// web server, as no family at all). Nothing was sent; the runner ends the
// device refused.
type RefusedError struct {
	// Reason is one line for the user: what the device looks like and why
	// nothing is sent.
	Reason string
}

func (e *RefusedError) Error() string { return e.Reason }

// ChooseProtocol decides how to update one device by the detection table
// (package detect; docs/protocols/README.md): the target's or the hint's
// protocol, a URL path, mDNS, then the probes. A device of a family
// ots-ota does not speak yet gives a *RefusedError; one where nothing
// usable answered, a *DeviceError: class ClassNothingListens (TCP refused,
// UDP port unreachable), ClassUnreachable (silence: off or rebooting,
// never taken for espota), ClassUnresolved, or ClassNetwork.
//
// No espota invitation is ever sent to probe, and no HTTP request outside
// detect.AllowedProbes(): every probe is read-only and carries no
// credentials.
func ChooseProtocol(ctx context.Context, t Target, h Hint, connectTimeout time.Duration) (Decision, error) {
	ev := detect.Evidence{Service: h.Service, TXT: h.TXT}
	switch {
	case named(t.Protocol):
		ev.Word, ev.WordFrom = detect.Protocol(t.Protocol), "the target's protocol"
	case named(h.Protocol):
		ev.Word, ev.WordFrom = detect.Protocol(h.Protocol), h.From
		if ev.WordFrom == "" {
			ev.WordFrom = "--protocol or the inventory"
		}
	case t.Path != "":
		ev.Word, ev.WordFrom = detect.HTTP, "the URL ("+t.Path+")"
	}
	if connectTimeout <= 0 {
		connectTimeout = DefaultConnectTimeout
	}
	det := detect.Detector{ConnectTimeout: connectTimeout, RequestTimeout: connectTimeout}
	d := det.Detect(ctx, detect.Target{Host: t.Host, Port: t.Port, WebPort: t.WebPort}, ev)
	switch {
	case d.Failure != nil:
		return Decision{}, &DeviceError{Class: failureClass(d.Failure.Kind), Reason: d.Failure.Reason, Err: d.Failure}
	case d.Refused:
		return Decision{Why: d.Why, Probed: d.Probed, Family: string(d.Family)}, &RefusedError{Reason: d.Why}
	}
	out := Decision{Protocol: Protocol(d.Protocol), Why: d.Why, Probed: d.Probed, Path: d.Path, Family: string(d.Family), Chip: d.Chip}
	switch {
	case d.Chip != "" && d.Family == detect.FamilyESPHome:
		out.ChipFrom = "its mDNS record says platform ESP8266"
	case d.Chip != "":
		// detect tells a chip from one fingerprint only.
		out.ChipFrom = "its OPTIONS /update answers as ESP8266HTTPUpdateServer does"
	}
	switch {
	case d.Web:
		out.Port = webPortOr80(t)
	case t.Port == 0 && webUpload(out.Protocol) && !d.Probed:
		// Named by word or by mDNS, with no port given (detect sends no
		// probe then): the web server these firmwares upload on, not the
		// OTA port.
		out.Port = webPortOr80(t)
	case t.Port == 0 && webUpload(out.Protocol):
		// Found at the OTA port itself: the transports' default is 80.
		out.Port = 3232
	}
	return out, nil
}

// webPortOr80 is the device's web port: --web-port or the inventory's,
// else 80.
func webPortOr80(t Target) int {
	if t.WebPort > 0 {
		return t.WebPort
	}
	return 80
}

// named: a protocol the user or the inventory named (not auto).
func named(p Protocol) bool {
	return p == HTTP || p == Espota || p == ESPHome || webUpload(p)
}

// webUpload: the protocol uploads on the device's web server (port 80
// unless told), not on an OTA port of its own.
func webUpload(p Protocol) bool {
	return p == Form || p == ElegantOTA || p == WLED || p == Tasmota
}

// failureClass is the runner's class of a detection failure.
func failureClass(k detect.FailKind) Class {
	switch k {
	case detect.FailNothingListens:
		return ClassNothingListens
	case detect.FailUnreachable:
		return ClassUnreachable
	case detect.FailUnresolved:
		return ClassUnresolved
	}
	return ClassNetwork
}
