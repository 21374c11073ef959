package espota

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/ots-ota/ots-ota/auth"
)

// Updater is the device's Update class as ArduinoOTA drives it. An error's
// text is the Update error string sent to the host (e.g. "Wrong Magic Byte",
// "Not Enough Space", "MD5 Check Failed", "Flash Write Failed"); return an
// [*UpdateError] (see [NewUpdateError]) to control the ESP8266 error number.
// An error wrapping [ErrDisconnect] makes the device drop the connection
// without any text.
//
// Call order for one update: Begin; then Write calls whose lengths add up to
// at most size; then End once exactly size bytes were written. After Begin
// succeeded, exactly one of these ends the update: an error from Write or
// End (the Updater has failed the update itself), a nil End (success), or
// Abort (the engine gave up: receive timeout, host closed the connection,
// connect-back failed, Serve stopped). All calls come from the Serve
// goroutine, one update at a time.
type Updater interface {
	// Begin prepares an update of size bytes; cmd is CmdFlash (0) or CmdFS
	// (100). size is what the invitation said (≥ 0, saturated at 2^31-1).
	Begin(size int, cmd int) error
	// Write stores the next bytes. It may block (slow flash, stall fault);
	// it should return when the simulated device is stopped.
	Write(p []byte) error
	// End verifies the MD5 of all bytes (md5hex is lowercased) and the image.
	// On success the Updater arranges the reboot; the device still sends
	// "OK" and closes the connection after End returns, as the real one does
	// (~110 ms before ESP.restart), so End must not stop the Server
	// synchronously. EventUploadFinished marks the moment the OK is out.
	End(md5hex string) error
	// Abort discards an update the engine gave up on.
	Abort()
}

// Shape is how one update departs from the protocol: the faults of a
// simulated device that misbehaves on the wire. The zero value is the
// faithful device.
type Shape struct {
	// ReadMax caps the bytes taken per read; 0 = the core's (1460 on ESP32,
	// what is buffered on ESP8266). With a slow Updater it makes a trickle:
	// small counts, often, rather than a full read and a long pause.
	ReadMax int
	// EarlyOK sends "OK" once EarlyOKAt bytes were taken (0: right after
	// connecting back), before the image is complete; the final OK is then
	// not sent again.
	EarlyOK   bool
	EarlyOKAt int
	// EarlyOKClose: after the early OK the device stops taking data and
	// closes the connection; the update is aborted.
	EarlyOKClose bool
	// Chatter: once ChatterAt bytes were taken (up to the whole image) the
	// device stops taking data and repeats its last count every
	// ChatterEvery, never sending OK, until the host goes away; the update
	// is aborted.
	Chatter      bool
	ChatterAt    int
	ChatterEvery time.Duration
}

// Shaper is an Updater that shapes its updates: Shape is called once per
// update, right after Begin succeeded.
type Shaper interface {
	Shape() Shape
}

// Restarter is an Updater that tells when the device is going down: after
// a successful update ArduinoOTA calls ESP.restart() right after the final
// OK (unless setRebootOnSuccess(false)), and a power loss ends everything.
// While Restarting is true the device answers no datagram: Serve reads and
// drops them, until the model stops it for the reboot. Serve asks before
// each datagram; an Updater without it is never restarting.
type Restarter interface {
	Restarting() bool
}

// Flavor selects whose ArduinoOTA to mirror.
type Flavor int

// The supported cores.
const (
	ESP32   Flavor = iota // arduino-esp32
	ESP8266               // esp8266/Arduino
)

func (f Flavor) String() string {
	switch f {
	case ESP32:
		return "esp32"
	case ESP8266:
		return "esp8266"
	}
	return fmt.Sprintf("Flavor(%d)", int(f))
}

// ParseFlavor accepts "esp32" or "esp8266" (any case).
func ParseFlavor(s string) (Flavor, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "esp32":
		return ESP32, nil
	case "esp8266":
		return ESP8266, nil
	}
	return 0, fmt.Errorf("espota: unknown flavor %q (want esp32 or esp8266)", s)
}

// DefaultPort is the OTA UDP port each core listens on by default.
func (f Flavor) DefaultPort() int {
	if f == ESP8266 {
		return 8266
	}
	return 3232
}

// Config describes one simulated ArduinoOTA device.
type Config struct {
	Flavor Flavor
	// Password as given to setPassword; empty = no authentication.
	Password auth.Secret
	// PasswordHash as given to setPasswordHash (lowercase hex), used verbatim
	// (the device compares strings case-sensitively); overrides Password.
	// On ESP32 PBKDF2 a 32-hex MD5 hash is accepted too (espota's fallback).
	PasswordHash auth.Secret
	// Legacy selects ESP32 core ≤ 3.3.0: MD5 auth with a 32-hex nonce. The
	// default is core ≥ 3.3.1: PBKDF2-HMAC-SHA256 with a 64-hex nonce.
	// ESP8266 is always MD5.
	Legacy bool
	// RecvTimeout is the data-phase wait per read (setTimeout); 0 = 1000 ms.
	// ESP32 resends the last count on each timeout up to 3 times, then gives
	// up. ESP8266's timeout check never fires (a post-decrement bug), so it
	// waits for as long as the connection is open; there it is only the
	// polling interval.
	RecvTimeout time.Duration
	// Latency delays every reply the device sends (UDP and TCP) to model the
	// round trip. TCP replies go out in order, each Latency after the device
	// produced it, without holding up the device's reading.
	Latency time.Duration
	// DelayScale scales the device's fixed sleeps (ESP8266: 100 ms after the
	// UDP OK or ERR, 1 s before and after the final OK). ≤ 0 means 1
	// (faithful); tests use a small value such as 0.01.
	DelayScale float64
	// LocalIP is the address the device dials from when connecting back;
	// nil = chosen by the OS.
	LocalIP net.IP
	// DialControl, if set, is the connect-back dialer's Control: it can give
	// the socket the device's TCP window and MSS before the SYN.
	DialControl func(network, address string, c syscall.RawConn) error
	// NoConnectBack (fault): accept the invitation (Begin runs) but never
	// connect back; the update is aborted as on a failed connect.
	NoConnectBack bool
	// LoseFinalOK (fault): after a successful End the final "OK" is never
	// sent; the connection is still closed and the update applied.
	LoseFinalOK bool
	// Hold, if set, receives the data connection when the device vanishes
	// mid-transfer (an Updater error wrapping ErrPowerLoss, or Serve's
	// context ending): the connection is left open and unanswered, as a
	// chip that lost power leaves it, and Hold decides when to end it.
	// Without Hold the connection is closed.
	Hold func(net.Conn)
	// Logger receives debug/info logs; nil = discard. Secrets never appear.
	Logger *slog.Logger
	// OnEvent, if set, is called synchronously from the Serve goroutine.
	OnEvent func(Event)
}

// EventKind says what happened.
type EventKind int

// Event kinds, in the order an update produces them.
const (
	EventIgnored        EventKind = iota + 1 // a datagram got no reply (Message says why)
	EventInvitation                          // a well-formed invitation was accepted
	EventAuthOK                              // the auth response matched
	EventAuthFailed                          // "Authentication Failed" was sent
	EventUploadStarted                       // Begin succeeded and the device connected back
	EventProgress                            // a Write succeeded and its count was sent
	EventUploadFinished                      // End succeeded; the final OK was sent (unless LoseFinalOK) and the connection closed
	EventUploadFailed                        // the update ended without success (Message says why)
)

func (k EventKind) String() string {
	switch k {
	case EventIgnored:
		return "ignored"
	case EventInvitation:
		return "invitation"
	case EventAuthOK:
		return "auth_ok"
	case EventAuthFailed:
		return "auth_failed"
	case EventUploadStarted:
		return "upload_started"
	case EventProgress:
		return "progress"
	case EventUploadFinished:
		return "upload_finished"
	case EventUploadFailed:
		return "upload_failed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports one step of the protocol.
type Event struct {
	Kind EventKind
	// Remote is the UDP peer (invitation/auth) or the host's TCP address
	// (upload events).
	Remote net.Addr
	// Cmd, Port, Size and MD5 come from the invitation being served.
	Cmd  int
	Port int
	Size int
	MD5  string
	// Count is the byte count just acknowledged (EventProgress); Total the
	// bytes accepted so far.
	Count int
	Total int
	// Message explains EventIgnored and EventUploadFailed.
	Message string
}
