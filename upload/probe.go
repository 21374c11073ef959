package upload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/devinfo"
)

// Hint is what is known about a device before any packet is sent to it:
// what the user or the inventory said, and what mDNS advertised.
type Hint struct {
	// Protocol is --protocol or the inventory's protocol; "" or Auto
	// leaves the choice to the device's facts.
	Protocol Protocol
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
	// Probed: a TCP connect to the device decided (no fact did).
	Probed bool
	// Path is the upload path the device advertised (TXT path= on
	// _ota._tcp), "" when it told none.
	Path string
}

// arduinoTXTKeys are the keys ArduinoOTA puts in its _arduino._tcp TXT
// record; the OTS firmware's _arduino._tcp record has no TXT at all.
var arduinoTXTKeys = []string{"board", "auth_upload", "tcp_check", "ssh_upload"}

// DecideFromHint decides the protocol from facts alone, sending nothing.
// ok is false when only a probe can tell (see ChooseProtocol). In order:
// an explicit protocol on the target or in the hint; a URL path (HTTP);
// ArduinoOTA's TXT keys on _arduino._tcp (espota); _ota._tcp, the service
// ots-ota documents for HTTP firmware (HTTP).
func DecideFromHint(t Target, h Hint) (Decision, bool) {
	for _, p := range []struct {
		p   Protocol
		why string
	}{{t.Protocol, "the target's protocol"}, {h.Protocol, "--protocol or the inventory"}} {
		if p.p == HTTP || p.p == Espota {
			return Decision{Protocol: p.p, Why: string(p.p) + " set by " + p.why}, true
		}
	}
	if t.Path != "" {
		return Decision{Protocol: HTTP, Why: "the target is a URL (" + t.Path + ")"}, true
	}
	service := strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(h.Service, "."), ".local"))
	switch service {
	case "_arduino._tcp":
		for _, k := range arduinoTXTKeys {
			if v, ok := txtValue(h.TXT, k); ok {
				return Decision{Protocol: Espota, Why: fmt.Sprintf("mDNS TXT %s=%s on _arduino._tcp (ArduinoOTA)", k, CleanText(v, 40))}, true
			}
		}
	case "_ota._tcp":
		d := Decision{Protocol: HTTP, Why: "mDNS service _ota._tcp (HTTP OTA)"}
		if p, ok := txtValue(h.TXT, "path"); ok && strings.HasPrefix(p, "/") {
			d.Path = p
		}
		return d, true
	}
	return Decision{}, false
}

// refusedAddr is the address that refused err's connect, so the UDP probe
// goes where the TCP one went without resolving the name again; addr when
// err does not tell.
func refusedAddr(err error, addr string) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		if ta, ok := oe.Addr.(*net.TCPAddr); ok && ta != nil {
			return ta.String()
		}
	}
	return addr
}

func txtValue(txt map[string]string, key string) (string, bool) {
	for k, v := range txt {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

// ChooseProtocol decides how to update one device (device-contract.md §1):
// the facts of DecideFromHint first; else a TCP connect to the OTA port.
// Accepted → HTTP; refused → espota (ArduinoOTA listens on UDP only),
// unless one empty datagram to the same UDP port draws ICMP port
// unreachable: then nothing listens there, a *DeviceError of class
// ClassNothingListens. A connect that times out is a silent device (off,
// or rebooting: a rebooting ESP32 neither refuses nor accepts) and yields
// one of class ClassUnreachable, never espota; a name that does not
// resolve, one of class ClassUnresolved.
//
// No espota invitation is ever sent to probe: it would run the sketch's
// onStart and, with a password, leave the device waiting for auth that
// swallows the next real invitation. ArduinoOTA ignores an empty datagram.
func ChooseProtocol(ctx context.Context, t Target, h Hint, connectTimeout time.Duration) (Decision, error) {
	if d, ok := DecideFromHint(t, h); ok {
		return d, nil
	}
	if connectTimeout <= 0 {
		connectTimeout = DefaultConnectTimeout
	}
	addr := t.Addr()
	dl := net.Dialer{Timeout: connectTimeout}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		return Decision{Protocol: HTTP, Why: "TCP " + addr + " accepted a connection (HTTP)", Probed: true}, nil
	}
	if IsRefused(err) {
		if devinfo.UDPClosed(ctx, refusedAddr(err, addr), min(connectTimeout, devinfo.UDPWait)) {
			return Decision{}, &DeviceError{Class: ClassNothingListens, Err: err,
				Reason: "nothing listens at " + addr + ": TCP refused and the UDP port is unreachable, so it is neither an HTTP nor an espota device (check the address and port)"}
		}
		return Decision{Protocol: Espota, Why: "TCP " + addr + " refused a connection (espota listens on UDP only)", Probed: true}, nil
	}
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return Decision{}, &DeviceError{Class: ClassNetwork, Err: ctx.Err(), Reason: "interrupted while probing " + addr}
	}
	class, reason := ClassifyDial(addr, connectTimeout, err)
	if class == ClassUnreachable {
		reason += "; cannot tell HTTP from espota until it answers"
	}
	return Decision{}, &DeviceError{Class: class, Err: err, Reason: reason}
}
