package upload

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/image"
)

// Protocol is how an image travels to a device.
type Protocol string

// The protocols. Auto decides per device (device-contract.md §1).
const (
	Auto   Protocol = "auto"
	HTTP   Protocol = "http"
	Espota Protocol = "espota"
	// Form is the Arduino web uploaders' multipart POST: arduino-esp32's
	// HTTPUpdateServer, ESP8266HTTPUpdateServer and ESPEasy
	// (docs/protocols/form.md).
	Form Protocol = "form"
	// ElegantOTA is ElegantOTA v3: GET /ota/start, then a multipart POST
	// /ota/upload (docs/protocols/elegantota.md).
	ElegantOTA Protocol = "elegantota"
	// WLED is WLED's multipart POST /update, after a release check
	// against its GET /json/info (docs/protocols/wled.md).
	WLED Protocol = "wled"
	// Tasmota is Tasmota's web upload (GET /up, multipart POST /u2) or,
	// by URL, its OtaUrl and Upgrade commands over /cm
	// (docs/protocols/tasmota.md).
	Tasmota Protocol = "tasmota"
	// ESPHome is ESPHome's native OTA over TCP (docs/protocols/esphome.md).
	ESPHome Protocol = "esphome"
)

// ParseProtocol reads a --protocol value.
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case Auto, HTTP, Espota, Form, ElegantOTA, WLED, Tasmota, ESPHome:
		return p, nil
	case "":
		return Auto, nil
	}
	return "", fmt.Errorf("unknown protocol %q (want auto, http, espota, form, elegantota, wled, tasmota or esphome)", s)
}

// Firmware is the image to send: read once, shared read-only by every upload.
type Firmware struct {
	// Name is the file name as the user gave it; espota sends its base name.
	Name string
	// Data is the whole file. Transports must never modify it.
	Data []byte
	// MD5 is the lower-case hex MD5 of Data (espota sends it, and checks it).
	MD5 string
	// Image is the parsed app image, nil for a filesystem image.
	Image *image.Image
	// Filesystem marks a SPIFFS/LittleFS image (espota command 100).
	Filesystem bool
}

// NewFirmware wraps data read from name. App images are parsed so runners
// can compare the device's facts with the image; parse errors are the
// caller's to check beforehand with image.Validate.
func NewFirmware(name string, data []byte, filesystem bool) *Firmware {
	sum := md5.Sum(data)
	fw := &Firmware{Name: name, Data: data, MD5: hex.EncodeToString(sum[:]), Filesystem: filesystem}
	if !filesystem {
		if img, err := image.Parse(data); err == nil {
			fw.Image = img
		}
	}
	return fw
}

// Size is the number of bytes to send.
func (f *Firmware) Size() int64 { return int64(len(f.Data)) }

// Target is one device to update.
type Target struct {
	// Name is what the user knows the device by (inventory name, mDNS
	// instance, or what was typed); it labels events and the summary.
	Name string
	// Host is an IP address or a resolved host name.
	Host string
	// Port is the OTA port; 0 means the protocol's default (3232).
	Port int
	// Path is the HTTP upload path; "" means /update.
	Path string
	// Protocol is what the target speaks, or Auto to decide per device.
	Protocol Protocol
	// WebPort is where /api/status lives (OTS firmware); 0 means 80.
	WebPort int
	// Chip is what the inventory says the device's chip is ("" = not
	// said): chip evidence where the device tells none.
	Chip string
	// ChipFrom says who told Chip, as a clause ("its OPTIONS /update
	// answers as ESP8266HTTPUpdateServer does"); "" = the inventory.
	ChipFrom string
	// Family is the device family detection recognised (the values of
	// detect.Family: "httpupdateserver", "espeasy", …), "" when not
	// known. A protocol that several libraries speak reads it where they
	// differ (form: which of them takes a filesystem image).
	Family string
	// Platform is the platform the device's mDNS record names where the
	// record tells a platform rather than a chip (ESPHome's TXT platform:
	// ESP32, ESP8266, RP2, …); "" when none was told. A transport's Screen
	// reads it.
	Platform string
}

// Addr is host:port for the OTA port.
func (t Target) Addr() string {
	port := t.Port
	if port == 0 {
		port = 3232
	}
	return joinHostPort(t.Host, port)
}

func joinHostPort(host string, port int) string {
	if len(host) > 0 && host[0] != '[' {
		for i := 0; i < len(host); i++ {
			if host[i] == ':' {
				return "[" + host + "]:" + strconv.Itoa(port)
			}
		}
	}
	return host + ":" + strconv.Itoa(port)
}

// Credentials are the secrets a device may ask for. One secret serves a
// mixed fleet: Password alone is sent as Bearer to HTTP devices (the seed
// calls its Bearer secret the OTA password) and is the espota password.
type Credentials struct {
	Token    auth.Secret // HTTP Authorization: Bearer
	User     string      // with Password: HTTP Basic
	Password auth.Secret // espota password; Bearer over HTTP when Token and User are empty
}

// Phase is where one device's update stands.
type Phase string

// The phases, in the order a device passes them.
const (
	PhaseChecking   Phase = "checking"   // reading what the device tells, choosing the protocol
	PhaseConnecting Phase = "connecting" // TCP connect, or the espota invitation
	PhaseAuth       Phase = "authenticating"
	PhaseErasing    Phase = "erasing"   // connected, not refused, nothing taken yet: the device erases its slot
	PhaseUploading  Phase = "uploading" // bytes are being taken
	PhaseFinishing  Phase = "finishing" // all sent, waiting for the device's answer
	PhaseRebooting  Phase = "rebooting"
	PhaseVerifying  Phase = "verifying"
	PhaseRetrying   Phase = "retrying" // waiting before the next try
	PhaseDone       Phase = "done"     // the Result is final
)

// Event is one step of one device's update. Transports fill Phase, Done,
// Total and Message; the runner adds Target, Try and Time.
type Event struct {
	Time    time.Time `json:"time"`
	Target  string    `json:"target"`
	Phase   Phase     `json:"phase"`
	Done    int64     `json:"done,omitempty"`  // bytes the device has taken
	Total   int64     `json:"total,omitempty"` // bytes to send
	Try     int       `json:"try,omitempty"`
	Message string    `json:"message,omitempty"`

	// Addr, set by a transport that chose the port itself (ESPHome's
	// default ports tried in turn), is the address it connected to: the
	// result and later events show it. Not a field of push --json's lines
	// (their address says it).
	Addr string `json:"-"`

	// MaxTries, on a retrying event only: the most tries the device gets,
	// the coming one included, if its failures stay of the class of the
	// one that failed (Class.Retries: some classes get one retry, not the
	// whole --retries). Not a field of push --json's lines.
	MaxTries int `json:"-"`
}

// Emit receives events. It is called from the transfer's goroutine and must
// not block for long.
type Emit func(Event)

// Transport moves one image to one device. Send returns nil once the device
// has accepted the whole image (HTTP 200, espota OK) and a *DeviceError
// otherwise; it honours ctx and emits progress through emit.
type Transport interface {
	Protocol() Protocol
	Send(ctx context.Context, t Target, fw *Firmware, cred Credentials, emit Emit) error
}

// Class is what kind of failure a device's answer (or silence) is. The
// retry policy and the outcome follow from it alone (see Retryable).
type Class string

// The failure classes.
const (
	// ClassAuth: wrong or missing credentials (401, 403, espota
	// "Authentication Failed"). Never retried.
	ClassAuth Class = "auth"
	// ClassRejected: the device refused the image (OTA end failed, Wrong
	// Magic Byte, MD5 Check Failed, Decryption error, Not Enough Space,
	// other 4xx). Never retried.
	ClassRejected Class = "rejected"
	// ClassWriteFailed: "Write failed" mid-upload. Retried once when the
	// image passed the local checks and fits the device's slot.
	ClassWriteFailed Class = "write-failed"
	// ClassBusy: "OTA begin failed", which ESP-IDF answers while the
	// running image is still pending_verify. Waited for, then retried once.
	ClassBusy Class = "busy"
	// ClassNetwork: refused or reset connections, Receive failed, Upload
	// failed, a cut upload without an answer. Retried.
	ClassNetwork Class = "network"
	// ClassTimeout: the device went silent (connect, idle or overall
	// timeout). Retried.
	ClassTimeout Class = "timeout"
	// ClassNoConnectBack: espota invitation answered, but the device never
	// connected back. Retried once.
	ClassNoConnectBack Class = "no-connect-back"
	// ClassUnreachable: nothing answered at all. Retried.
	ClassUnreachable Class = "unreachable"
	// ClassNothingListens: the OTA port refused TCP and its UDP port
	// answered ICMP port unreachable: neither HTTP nor espota listens there.
	// Retried once, after NothingListensWait (a booting device answers the
	// same way); the outcome is unreachable.
	ClassNothingListens Class = "nothing-listens"
	// ClassUnresolved: the host name did not resolve. Never retried; the
	// outcome is unreachable.
	ClassUnresolved Class = "unresolved"
)

// NothingListensWait is the least wait before the one retry of a device
// where nothing listens: an ESP32 that is booting refuses TCP and UDP
// alike until its sketch starts ArduinoOTA or its HTTP server.
const NothingListensWait = 3 * time.Second

// reachless: the class means nothing answered at the device's address
// (outcome unreachable).
func (c Class) reachless() bool {
	return c == ClassUnreachable || c == ClassNothingListens || c == ClassUnresolved
}

// DeviceError is a failed upload, classified once, here.
type DeviceError struct {
	Class Class
	// Status is the HTTP status the device answered, 0 if none (espota).
	Status int
	// Words is the device's own text ("Write failed"), "" if it said nothing.
	Words string
	// Taken is how many bytes the device had taken when it failed.
	Taken int64
	// Reason is one line for the user: what happened and what it usually
	// means. It never holds a secret.
	Reason string
	// NoRetry, when not "", forbids any further try of this upload,
	// whatever the class: the failed try left the device in a state that
	// another try would corrupt (ElegantOTA: an update begun that the next
	// bytes would continue). It says, as a clause, what the user must do
	// before pushing again ("restart the device, then push again"). The
	// runner may still read the device; it never sends to it again.
	NoRetry string
	// Err is the underlying error, for -v logs only.
	Err error
}

func (e *DeviceError) Error() string {
	switch {
	case e.Words != "" && e.Status != 0:
		return fmt.Sprintf("device answered %d %q: %s", e.Status, e.Words, e.Reason)
	case e.Words != "":
		return fmt.Sprintf("device answered %q: %s", e.Words, e.Reason)
	}
	return e.Reason
}

func (e *DeviceError) Unwrap() error { return e.Err }
