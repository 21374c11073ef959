package sim

import (
	"context"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/elegantota"
	"github.com/ots-ota/ots-ota/sim/esphome"
	"github.com/ots-ota/ots-ota/sim/espota"
	"github.com/ots-ota/ots-ota/sim/form"
	"github.com/ots-ota/ots-ota/sim/rawhttp"
	"github.com/ots-ota/ots-ota/sim/tasmota"
	"github.com/ots-ota/ots-ota/sim/wled"
)

// The simulator's API is the device core's (sim/core) and the families'
// personality names, under the names it always had: what cmd/ and the
// client's tests use needs no other import.

// Types of the device core.
type (
	// Device is one simulated device (core.Device).
	Device = core.Device
	// Config describes one simulated device (core.Config).
	Config = core.Config
	// Timing holds every delay of the simulation (core.Timing).
	Timing = core.Timing
	// Personality is the firmware a device runs (core.Personality).
	Personality = core.Personality
	// State is a snapshot of a device (core.State).
	State = core.State
	// SlotState describes one app slot (core.SlotState).
	SlotState = core.SlotState
	// UploadRecord is one upload attempt as the device saw it (core.UploadRecord).
	UploadRecord = core.UploadRecord
	// Phase is where a device is in its life (core.Phase).
	Phase = core.Phase
	// AppState is an ESP-IDF app state by its contract name (core.AppState).
	AppState = core.AppState
	// Event is one thing that happened on a device (core.Event).
	Event = core.Event
	// EventKind names an event (core.EventKind).
	EventKind = core.EventKind
	// Fault is one injected misbehaviour (core.Fault).
	Fault = core.Fault
	// FaultKind names a fault (core.FaultKind).
	FaultKind = core.FaultKind
	// Behaviour is what an image does when it boots (core.Behaviour).
	Behaviour = core.Behaviour
	// Store holds image bytes shared by devices (core.Store).
	Store = core.Store
	// StartError is why a device did not start (core.StartError).
	StartError = core.StartError
	// HTTPRequest is one HTTP request a device received (Config.OnRequest).
	HTTPRequest = core.HTTPRequest
	// Platform is what a firmware is built on (core.Platform).
	Platform = core.Platform
)

// Platforms.
const (
	PlatformIDF          = core.PlatformIDF
	PlatformArduinoESP32 = core.PlatformArduinoESP32
	PlatformESP8266      = core.PlatformESP8266
)

// PlatformOf is the platform a device of p runs on with chip.
func PlatformOf(p Personality, chip string) Platform { return core.PlatformOf(p, chip) }

// The personalities, one family's package each (registry.go).
const (
	Seed    = rawhttp.Seed
	OTS     = rawhttp.OTS
	Arduino = espota.ArduinoSketch
	ESP8266 = espota.ESP8266Sketch
	// HTTPUpdateServer is a sketch with arduino-esp32's HTTPUpdateServer
	// (Config.Chip "esp8266": esp8266/Arduino's ESP8266HTTPUpdateServer).
	HTTPUpdateServer = form.HTTPUpdateServer
	// ESPEasy is ESPEasy on ESP32 (Config.Chip "esp8266": on ESP8266).
	ESPEasy = form.ESPEasy
	// ElegantOTA is ElegantOTA v3's demo sketch (Config.Async: its async
	// build; Config.Chip "esp8266": on ESP8266).
	ElegantOTA = elegantota.ElegantOTA
	// ESPHome is an ESPHome node on ESP32 (native OTA on TCP 3232;
	// Config.Options: esphome.Options).
	ESPHome = esphome.ESP32
	// ESPHome8266 is an ESPHome node on ESP8266 (TCP 8266, gzip offered).
	ESPHome8266 = esphome.ESP8266
	// WLED is WLED 0.15.x (from 0.15.2) or 16.x, as Config.Version says
	// (Config.Chip "esp8266": the ESP8266 build).
	WLED = wled.WLED
	// Tasmota is Tasmota on ESP32 (Config.Safeboot: the safeboot layout)
	// or, with Config.Chip "esp8266", on ESP8266.
	Tasmota = tasmota.Tasmota
)

// Phases.
const (
	PhaseUp      = core.PhaseUp
	PhaseBooting = core.PhaseBooting
	PhaseDown    = core.PhaseDown
	PhaseClosed  = core.PhaseClosed
)

// App states.
const (
	StateNew           = core.StateNew
	StatePendingVerify = core.StatePendingVerify
	StateValid         = core.StateValid
	StateInvalid       = core.StateInvalid
	StateAborted       = core.StateAborted
	StateUndefined     = core.StateUndefined
)

// Event kinds.
const (
	EventReady          = core.EventReady
	EventUploadStarted  = core.EventUploadStarted
	EventUploadFinished = core.EventUploadFinished
	EventUploadFailed   = core.EventUploadFailed
	EventAuthFailed     = core.EventAuthFailed
	EventFault          = core.EventFault
	EventReboot         = core.EventReboot
	EventRollback       = core.EventRollback
	EventValid          = core.EventValid
	EventDown           = core.EventDown
	EventStopped        = core.EventStopped
)

// Fault kinds.
const (
	FaultDrop          = core.FaultDrop
	FaultStall         = core.FaultStall
	FaultError         = core.FaultError
	FaultPowerLoss     = core.FaultPowerLoss
	FaultSlow          = core.FaultSlow
	FaultNoReturn      = core.FaultNoReturn
	FaultRefuse        = core.FaultRefuse
	FaultLatency       = core.FaultLatency
	FaultNoConnectBack = core.FaultNoConnectBack
	FaultLoseOK        = core.FaultLoseOK
	FaultEarlyAnswer   = core.FaultEarlyAnswer
	FaultLoseAnswer    = core.FaultLoseAnswer
	FaultNoReboot      = core.FaultNoReboot
	FaultStatusError   = core.FaultStatusError
	// FaultStatusDuringUpgrade: tasmota, a Status command during an
	// upgrade corrupts the image being written.
	FaultStatusDuringUpgrade = core.FaultStatusDuringUpgrade
	FaultTrickle             = core.FaultTrickle
	FaultEarlyOK             = core.FaultEarlyOK
	FaultChatter             = core.FaultChatter
)

// Fault modes.
const (
	ModeInstall = core.ModeInstall
	ModeDiscard = core.ModeDiscard
	ModeClose   = core.ModeClose
	ModeSilent  = core.ModeSilent
	ModeReset   = core.ModeReset
)

// Behaviours.
const (
	Healthy        = core.Healthy
	CrashOnBoot    = core.CrashOnBoot
	Unstable       = core.Unstable
	NoNetwork      = core.NoNetwork
	Unconfirmed    = core.Unconfirmed
	ForeignELF     = core.ForeignELF
	CrashToFactory = core.CrashToFactory
	CrashLoop      = core.CrashLoop
	// BehaveUploaded is the Behaviours key for every image that arrived by upload.
	BehaveUploaded = core.BehaveUploaded
)

// ArduinoAppSlotSize is the app slot of arduino-esp32's default.csv, the
// Arduino personality's default SlotSize.
const ArduinoAppSlotSize = core.ArduinoAppSlotSize

// ContractAPIVersion is the value of the "api" TXT key of Extensions.
const ContractAPIVersion = core.ContractAPIVersion

// ErrClosed is returned by waits on a closed device.
var ErrClosed = core.ErrClosed

// ErrNotLoopback is in the error for an address outside loopback without
// AllowNonLoopback.
var ErrNotLoopback = core.ErrNotLoopback

// Start boots a device and returns once it serves (or fails to bind). The
// device runs until Close or until ctx ends.
func Start(ctx context.Context, cfg Config) (*Device, error) { return core.Start(ctx, cfg) }

// Personalities lists every personality, in documentation order.
func Personalities() []Personality { return core.Personalities() }

// ParsePersonality reads a personality name (case-insensitive).
func ParsePersonality(s string) (Personality, error) { return core.ParsePersonality(s) }

// DefaultTiming is the timing of a real ESP32-S3 (core.DefaultTiming).
func DefaultTiming() Timing { return core.DefaultTiming() }

// FastTiming keeps the order of events of DefaultTiming but makes every
// delay short, for tests (core.FastTiming).
func FastTiming() Timing { return core.FastTiming() }

// ParseRate reads a rate such as "20KB/s", "1MiB/s" or "500B/s".
func ParseRate(s string) (int64, error) { return core.ParseRate(s) }

// NewStore returns an empty image store.
func NewStore() *Store { return core.NewStore() }

// Image builds a valid application image for chip with the given project
// and version, about size bytes (0 = small), as the simulated devices
// accept it (core.Image).
func Image(chip, project, version string, size int) ([]byte, error) {
	return core.Image(chip, project, version, size)
}

// ImageWith is Image with every build option; o.Chip is replaced by chip.
func ImageWith(o image.BuildOptions, chip string) ([]byte, error) { return core.ImageWith(o, chip) }

// ParseFault reads one fault spec (see Fault for the syntax).
func ParseFault(spec string) (Fault, error) { return core.ParseFault(spec) }

// ParseFaults reads several fault specs.
func ParseFaults(specs []string) ([]Fault, error) { return core.ParseFaults(specs) }

// FaultKinds lists every fault kind, in documentation order.
func FaultKinds() []FaultKind { return core.FaultKinds() }

// Behaviours lists every behaviour.
func Behaviours() []Behaviour { return core.Behaviours() }

// ParseBehaviour reads a behaviour name; "" is Healthy.
func ParseBehaviour(s string) (Behaviour, error) { return core.ParseBehaviour(s) }

// ParseBehaviourSpec reads "KEY=BEHAVIOUR", the CLI's --behave syntax.
func ParseBehaviourSpec(s string) (key string, b Behaviour, err error) {
	return core.ParseBehaviourSpec(s)
}

// ParseBehaviourSpecs reads several --behave values into a map; a version
// given twice is an error.
func ParseBehaviourSpecs(specs []string) (map[string]Behaviour, error) {
	return core.ParseBehaviourSpecs(specs)
}

// CheckBehaviours reports behaviours a device of p cannot show.
func CheckBehaviours(p Personality, rollbackLater bool, m map[string]Behaviour) error {
	return core.CheckBehaviours(p, rollbackLater, m)
}

// CheckBehavioursOn is CheckBehaviours for a device of p with chip (the
// web-uploader personalities run on ESP8266 with chip "esp8266").
func CheckBehavioursOn(p Personality, chip string, rollbackLater bool, m map[string]Behaviour) error {
	return core.CheckBehavioursOn(p, chip, rollbackLater, m)
}

// OmittableFields lists the field names Config.Omit accepts for a device
// of personality p with or without Extensions and APIUptime.
func OmittableFields(p Personality, extensions, apiUptime bool) []string {
	return core.OmittableFields(p, extensions, apiUptime)
}

// CheckOmit says in one line why a field cannot be omitted on such a device.
func CheckOmit(p Personality, extensions, apiUptime bool, fields []string) error {
	return core.CheckOmit(p, extensions, apiUptime, fields)
}

// Resolve is the Config a device started with cfg runs with, or the error
// Start would report (core.Resolve).
func Resolve(cfg Config) (Config, error) { return core.Resolve(cfg) }
