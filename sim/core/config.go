package core

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// Personality is the firmware a simulated device runs: which servers it
// opens, what it advertises and which texts it answers with. Each is
// implemented by a Firmware of a device family (Register).
type Personality string

// Timing holds every delay of the simulation. DefaultTiming is what real
// ESP32-S3 devices do (device-contract.md §3); FastTiming suits tests.
type Timing struct {
	// EraseRate is how fast a slot is erased, in bytes per second; 0 = instant.
	// HTTP uploads erase the whole slot before reading the first byte
	// (esp_ota_begin with OTA_SIZE_UNKNOWN); espota uploads erase sector by
	// sector as they write (the Arduino Updater).
	EraseRate int64
	// WriteRate caps how fast the device consumes the image, in bytes per
	// second (the flash is the bottleneck on real devices); 0 = unlimited.
	WriteRate int64
	// BootTime is reset → network up.
	BootTime time.Duration
	// RebootDelayMin and RebootDelayMax bound the delay between the success
	// reply and the reset; each reboot picks a value from the device's seeded
	// random source.
	RebootDelayMin, RebootDelayMax time.Duration
	// ValidAfter is the stability window: a new image runs pending_verify
	// that long before it marks itself valid (or, "unstable", invalid).
	ValidAfter time.Duration
	// CrashAfter is how long a crash-on-boot image runs before it crashes.
	CrashAfter time.Duration
	// WatchdogAfter is how long a no-network image hangs before the
	// watchdog resets the chip.
	WatchdogAfter time.Duration
	// RecvTimeout is the httpd receive timeout; the firmware retries after it.
	RecvTimeout time.Duration
	// ErrorCloseDelay is how long the device keeps a connection open after
	// an error answer sent while the client is still sending; then it
	// closes, and the unread data makes the close an RST. 0, the default of
	// both timings, is what lwIP does: the RST right behind the answer. A
	// client that stops at its failed write then reports a reset instead of
	// the device's text: Go's net/http Transport does (golang/go#11745), and
	// curl did with the old wide window ("(55) Send failure"); curl 7.88 with
	// the device's small window reads the answer. Clients that read after a
	// failed write (python-requests, a careful raw client, what push must
	// do) get it. A positive delay is the lenient case (100 ms suffices).
	ErrorCloseDelay time.Duration
	// ProtocolDelayScale scales the fixed sleeps of the firmware's own
	// code: the espota protocol's (ESP8266 waits 1 s before and after its
	// final OK), HTTPUpdateServer's 100 ms before its restart, ElegantOTA's
	// 2 s reboot timer; 0 means 1.
	ProtocolDelayScale float64
}

// DefaultTiming is the timing of a real ESP32-S3: a 2 MB slot erases in
// about 4 s, flash writes run at 100 KiB/s, reboot to network takes 3 s, a
// new image is confirmed after 30 s.
func DefaultTiming() Timing {
	return Timing{
		EraseRate:      512 << 10,
		WriteRate:      100 << 10,
		BootTime:       3 * time.Second,
		RebootDelayMin: 500 * time.Millisecond,
		RebootDelayMax: time.Second,
		ValidAfter:     30 * time.Second,
		CrashAfter:     time.Second,
		WatchdogAfter:  10 * time.Second,
		RecvTimeout:    5 * time.Second,
	}
}

// FastTiming keeps the order of events of DefaultTiming but makes every
// delay short, for tests: no erase or write limit, 50 ms boots, a 100 ms
// stability window.
func FastTiming() Timing {
	return Timing{
		BootTime:       50 * time.Millisecond,
		RebootDelayMin: 10 * time.Millisecond,
		RebootDelayMax: 20 * time.Millisecond,
		ValidAfter:     100 * time.Millisecond,
		CrashAfter:     20 * time.Millisecond,
		WatchdogAfter:  100 * time.Millisecond,
		RecvTimeout:    5 * time.Second,
		// ESP8266's 1 s waits around the final OK become 10 ms.
		ProtocolDelayScale: 0.01,
	}
}

func (t Timing) check() error {
	switch {
	case t.EraseRate < 0, t.WriteRate < 0, t.ProtocolDelayScale < 0:
		return fmt.Errorf("timing: negative rate")
	case t.BootTime < 0, t.ErrorCloseDelay < 0, t.RebootDelayMin < 0, t.RebootDelayMax < 0, t.ValidAfter < 0,
		t.CrashAfter < 0, t.WatchdogAfter < 0, t.RecvTimeout < 0:
		return fmt.Errorf("timing: negative duration")
	case t.RebootDelayMax < t.RebootDelayMin:
		return fmt.Errorf("timing: reboot delay max %v below min %v", t.RebootDelayMax, t.RebootDelayMin)
	}
	return nil
}

// Config describes one simulated device. The zero value is a seed device
// on 127.0.0.1 with ephemeral ports and realistic timing.
type Config struct {
	// Name is the mDNS host name without ".local"; default "ots-sim".
	Name string
	// Personality defaults to the first one registered (sim: Seed).
	Personality Personality
	// Instance is the mDNS instance name; default per personality
	// ("OTS Firmware Main", "OTS Firmware Main Controller", the host name for
	// ArduinoOTA).
	Instance string

	// Chip is the device's chip (esptool name, default "esp32s3"; "esp8266"
	// for the ESP8266 personality, which is the only chip it accepts).
	Chip string
	// Board is the Arduino board advertised in TXT board=: the variant on
	// ESP32 (default the chip name, as the Dev Module variants are named),
	// build.board on ESP8266 (default "ESP8266_GENERIC").
	Board string
	// Project, Version and IDFVer describe the factory image; defaults
	// "ots-fw-main", "1.0.0", "v5.2.2".
	Project, Version, IDFVer string
	// ImageSize is the size of the factory image built from the fields above;
	// 0 = the image package's small default.
	ImageSize int
	// Factory, when set, is the factory image instead of a built one. It
	// must pass validation for the device's chip and slot size.
	Factory []byte
	// BuildSeed varies the bytes, and so the ELF SHA-256, of the image
	// built from Project and Version (image.BuildOptions.Seed): a device
	// whose running image has the version of the one sent to it, but is
	// another build of it. 0 is the build `ots-ota sim image` makes.
	BuildSeed int64
	// FactoryVersion, when set, is a device that was updated once before:
	// the factory slot holds a build of FactoryVersion and the device runs
	// Version from ota_0, marked valid. An update then goes to ota_1, and a
	// CrashToFactory image ends on a third image, the factory one. ESP-IDF
	// personalities (seed, ots) only.
	FactoryVersion string
	// SlotSize is the size of each app slot; default 2 MiB, and 1.25 MiB
	// (0x140000, arduino-esp32's default.csv) for the Arduino personality.
	SlotSize int64
	// RollbackLater (Arduino only) is a sketch that overrides
	// verifyRollbackLater() to confirm itself: a new image stays
	// pending_verify until Timing.ValidAfter, as on the ESP-IDF
	// personalities. Without it initArduino() marks a new image valid before
	// setup() runs, so a crashing image boot-loops instead of rolling back,
	// and the Unstable and Unconfirmed behaviours cannot happen.
	RollbackLater bool

	// Password: the Bearer token of the seed firmware (empty = a build
	// without the auth check); the ArduinoOTA password of the espota
	// personalities (empty = no auth); with Username, the web uploaders'
	// HTTP credentials (httpupdateserver, elegantota); ESPEasy's admin
	// password (its pages ask for it, its /update never does). The OTS
	// firmware has none.
	Password auth.Secret
	// Username (httpupdateserver, elegantota) is the user of the sketch's
	// setup(server, path, user, pass) or ElegantOTA.setAuth: the libraries
	// ask for credentials only when both Username and Password are set.
	Username string
	// Async (elegantota) is a build with ELEGANTOTA_USE_ASYNC_WEBSERVER=1:
	// ESPAsyncWebServer (ESP32Async) instead of the core's WebServer, so
	// Digest challenges, concurrent requests, prefix routes and answers
	// written after the whole request.
	Async bool
	// NoOriginCheck (httpupdateserver on an ESP32 chip) is an
	// arduino-esp32 HTTPUpdateServer from before its CSRF fix (PR #11530,
	// 2025), which compares Origin with "http://" + Host. Which releases
	// carry the check is unconfirmed; the default has it, as the library's
	// newest source does.
	NoOriginCheck bool
	// NoLoop (elegantota) is a sketch that never calls ElegantOTA.loop():
	// the restart it schedules 2 s after a successful upload never comes.
	NoLoop bool
	// Release (wled) is the WLED release name (WLED_RELEASE_NAME) of the
	// factory image; default per chip ("ESP32", "ESP32-S3", "ESP8266" …).
	Release string
	// SettingsPIN (wled) is a device with a settings PIN that nobody
	// entered: every upload is refused (the PIN gate).
	SettingsPIN bool
	// OTALock (wled) is the security setting "Disable OTA when not in AP
	// mode" (otaLock): /update refuses.
	OTALock bool
	// OTAAnySubnet (wled 16.x) turns the security setting "Only allow
	// update from same network/WiFi" (otaSameSubnet, on by default) off:
	// clients from the private ranges are taken too.
	OTAAnySubnet bool
	// Subnet (wled 16.x) is the device's network, which its subnet gate
	// compares a client's address with; zero = the device's IP/24.
	Subnet netip.Prefix
	// NoBootloaderOTA (wled 16.x on ESP32) is a build without the
	// /updatebootloader endpoint.
	NoBootloaderOTA bool
	// Language (tasmota) is the build language of the pages: "en"
	// (default, en_GB) or "de" (de_DE).
	Language string
	// Safeboot (tasmota on ESP32) is the safeboot partition layout: one
	// app partition and a factory "safeboot" image, so an upgrade restarts
	// into safeboot first.
	Safeboot bool
	// Core is the arduino-esp32 core version of the Arduino personality:
	// "3.3.0" and older use MD5 auth, newer (the default) PBKDF2.
	Core string
	// Options are the settings only one family reads, of that family's own
	// type (esphome.Options, say); nil = its defaults. A device whose
	// firmware does not take them (OptionsTaker) refuses them.
	Options any
	// Extensions adds what ots-ota documents for firmware that wants it
	// (device-contract.md §4): TXT keys and GET /ota/status.
	Extensions bool
	// SerialNumber and OwnerName appear in the OTS /api/status.
	SerialNumber, OwnerName string
	// APIUptime adds "uptime" (seconds since the reset) to the OTS web
	// app's /api/status. The OTS firmware as shipped tells none there
	// (device-contract.md §1), so the default leaves it out.
	APIUptime bool
	// Omit lists facts the device does not tell, such as "ota-status.uptime_s",
	// "api-status.firmwareVersion", "txt.version" or "ota-status" (the whole
	// endpoint): see OmittableFields for the names.
	Omit []string

	// Behaviours maps an image, by version, "elf:HEX" or BehaveUploaded
	// (see Behaviour), to what it does when booted.
	Behaviours map[string]Behaviour
	// Faults are armed from the start; see ParseFault.
	Faults []Fault
	// Seed seeds the device's random source (reboot delays, fault points).
	Seed int64
	// Timing; nil = DefaultTiming().
	Timing *Timing
	// HeaderLimit is the largest request header section the httpd accepts
	// (CONFIG_HTTPD_MAX_REQ_HDR_LEN); default 512. Longer → 431.
	HeaderLimit int

	// IP to listen on; default 127.0.0.1. Anything outside 127.0.0.0/8 and
	// ::1 is refused unless AllowNonLoopback.
	IP netip.Addr
	// AllowNonLoopback permits a non-loopback IP (deliberately, never by default).
	AllowNonLoopback bool
	// OTAPort is the upload port (TCP for seed/ots, UDP for espota); 0 = an
	// ephemeral port, kept across reboots.
	OTAPort int
	// WebPort is the web server port (seed, ots); 0 = ephemeral, -1 = none.
	WebPort int

	// MDNS advertises the device while it is up; nil = not advertised.
	MDNS *mdnsd.Responder
	// Store shares image bytes between devices; nil = a private store.
	Store *Store
	// Logger receives debug logs; nil = discard.
	Logger *slog.Logger
	// OnEvent receives the device's events, one call at a time per device
	// (devices of a fleet share one serialised sink). Keep it fast.
	OnEvent func(Event)
	// OnRequest sees every HTTP request the device's servers receive, of
	// any personality, as it came and before it is routed (a request the
	// device refuses too, once its request line parsed into a method and a
	// URI; a line without both, or longer than the device reads, is
	// answered 400 or 414 unlogged): one call at a time per device (a
	// fleet's devices share one serialised sink), from the serving
	// goroutine. Keep it fast: a blocked sink stalls the device.
	OnRequest func(HTTPRequest)
}

// Resolve is the Config a device started with cfg runs with: the defaults
// applied (Timing set) and every check passed, or the error Start would
// report (without the device's name).
func Resolve(cfg Config) (Config, error) {
	s, err := resolve(cfg)
	if err != nil {
		return Config{}, err
	}
	c := s.Config
	t := s.timing
	c.Timing = &t
	return c, nil
}

// settings is a Config with defaults applied and names resolved.
type settings struct {
	Config
	fw       Firmware
	traits   Traits
	timing   Timing
	chip     image.Chip
	platform Platform
	omit     map[string]bool
}

func resolve(c Config) (*settings, error) {
	s := &settings{Config: c}
	if s.Personality == "" {
		s.Personality = defaultPersonality()
	}
	if _, err := ParsePersonality(string(s.Personality)); err != nil {
		return nil, err
	}
	s.fw, _ = Lookup(s.Personality)
	s.traits = s.fw.Traits()
	s.platform = s.traits.Platform
	if s.traits.BothCores && strings.EqualFold(strings.TrimSpace(s.Chip), "esp8266") {
		s.platform = PlatformESP8266
	}
	if s.Name == "" {
		s.Name = "ots-sim"
	}
	if s.Project == "" {
		s.Project = s.traits.Project
	}
	if s.Project == "" {
		s.Project = "ots-fw-main"
	}
	if s.Version == "" {
		s.Version = s.traits.Version
	}
	if s.Version == "" {
		s.Version = "1.0.0"
	}
	if s.IDFVer == "" {
		s.IDFVer = "v5.2.2"
	}
	if s.SlotSize == 0 {
		s.SlotSize = 2 << 20
		if s.platform == PlatformArduinoESP32 {
			s.SlotSize = ArduinoAppSlotSize
		}
	}
	if err := checkKnobs(&s.Config, s.traits); err != nil {
		return nil, err
	}
	if s.SlotSize < 4096 || s.SlotSize > 16<<20 {
		return nil, fmt.Errorf("slot size %d out of range (4 KiB … 16 MiB)", s.SlotSize)
	}
	if s.HeaderLimit == 0 {
		s.HeaderLimit = 512
	}
	if s.HeaderLimit < 64 {
		return nil, fmt.Errorf("header limit %d too small", s.HeaderLimit)
	}
	if s.Timing != nil {
		s.timing = *s.Timing
	} else {
		s.timing = DefaultTiming()
	}
	if err := s.timing.check(); err != nil {
		return nil, err
	}
	if s.platform == PlatformESP8266 {
		if s.Chip != "" && !strings.EqualFold(s.Chip, "esp8266") {
			return nil, fmt.Errorf("personality %s runs on chip esp8266, not %q", s.Personality, s.Chip)
		}
		s.Chip = "esp8266"
		if s.Board == "" {
			// build.board of the Arduino IDE's "Generic ESP8266 Module",
			// which ESP8266mDNS sends as board= (STRINGIZE_VALUE_OF(ARDUINO_BOARD)).
			s.Board = "ESP8266_GENERIC"
		}
	} else {
		if s.Chip == "" {
			s.Chip = "esp32s3"
		}
		chip, ok := image.ChipByName(s.Chip)
		if !ok {
			return nil, fmt.Errorf("unknown chip %q", s.Chip)
		}
		if chip.IsESP8266() {
			return nil, fmt.Errorf("chip %s runs the %s personality, not %s", s.Chip,
				personalitiesWith(func(t Traits) bool { return t.Platform == PlatformESP8266 }), s.Personality)
		}
		s.chip = chip
		s.Chip = chip.String()
		if s.Board == "" {
			s.Board = s.Chip
		}
	}
	if s.Options != nil {
		if t, ok := s.fw.(OptionsTaker); !ok || !t.TakesOptions(s.Options) {
			return nil, fmt.Errorf("settings of type %T are not for the %s personality", s.Options, s.Personality)
		}
	}
	if c, ok := s.fw.(Checker); ok {
		if err := c.Check(&s.Config); err != nil {
			return nil, err
		}
	}
	if s.Instance == "" {
		s.Instance = DefaultInstance(s.Personality, s.Name)
	}
	if s.SerialNumber == "" {
		s.SerialNumber = "OTS-" + strings.ToUpper(strings.ReplaceAll(s.Name, "-", ""))
	}
	if s.OwnerName == "" {
		s.OwnerName = "Simulator"
	}
	if !s.IP.IsValid() {
		s.IP = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	s.IP = s.IP.Unmap()
	if !s.IP.IsLoopback() && !s.AllowNonLoopback {
		return nil, fmt.Errorf("refusing to listen on %s: %w (set AllowNonLoopback to override)", s.IP, ErrNotLoopback)
	}
	if s.OTAPort < 0 || s.OTAPort > 65535 || s.WebPort < -1 || s.WebPort > 65535 {
		return nil, fmt.Errorf("port out of range (ota %d, web %d)", s.OTAPort, s.WebPort)
	}
	for v, b := range s.Behaviours {
		if err := checkBehaviourKey(v); err != nil {
			return nil, fmt.Errorf("behaviour key %w", err)
		}
		if _, err := ParseBehaviour(string(b)); err != nil {
			return nil, fmt.Errorf("behaviour for %q: %w", v, err)
		}
	}
	if s.FactoryVersion != "" && !s.platform.hasFactory() {
		return nil, fmt.Errorf("a factory version needs the factory slot of the %s partition table (the %s personality has none)",
			personalitiesWith(func(t Traits) bool { return t.Platform.hasFactory() }), s.Personality)
	}
	if s.FactoryVersion != "" && s.Factory != nil {
		return nil, fmt.Errorf("give a factory image or a factory version, not both")
	}
	if len(s.FactoryVersion) > 31 {
		return nil, fmt.Errorf("factory version %q: longer than the 31 bytes an app description holds", s.FactoryVersion)
	}
	if err := CheckOmit(s.Personality, s.Extensions, s.APIUptime, s.Omit); err != nil {
		return nil, err
	}
	s.omit = make(map[string]bool, len(s.Omit))
	for _, f := range s.Omit {
		s.omit[f] = true
	}
	if err := checkBehaviours(s.Personality, s.platform, s.RollbackLater, s.Behaviours); err != nil {
		return nil, err
	}
	return s, nil
}

// PlatformOf is the platform a device of personality p runs on with chip
// (a firmware built for both cores runs on ESP8266 with chip "esp8266").
func PlatformOf(p Personality, chip string) Platform {
	t := traitsOf(p)
	if t.BothCores && strings.EqualFold(strings.TrimSpace(chip), "esp8266") {
		return PlatformESP8266
	}
	return t.Platform
}

// ArduinoAppSlotSize is the app slot of arduino-esp32's
// tools/partitions/default.csv (app0 and app1 of 0x140000), the Arduino
// personality's default SlotSize.
const ArduinoAppSlotSize = 0x140000

// arduinoSPIFFSSize is default.csv's spiffs data partition.
const arduinoSPIFFSSize = 0x160000

// CheckBehaviours reports behaviours a device cannot show: on an Arduino
// sketch that does not override verifyRollbackLater() (rollbackLater
// false) the image is valid before it could fail a self-check, so Unstable
// and Unconfirmed cannot happen.
//
// crash-to-factory needs a factory app (seed, ots); foreign-elf and
// crash-loop need what the ESP8266 model lacks (an app description, two
// app slots to switch between).
//
// A personality built for both cores (Traits.BothCores) is checked as on
// its default platform; CheckBehavioursOn names the chip.
func CheckBehaviours(p Personality, rollbackLater bool, m map[string]Behaviour) error {
	return checkBehaviours(p, traitsOf(p).Platform, rollbackLater, m)
}

// CheckBehavioursOn is CheckBehaviours for a device of p with chip.
func CheckBehavioursOn(p Personality, chip string, rollbackLater bool, m map[string]Behaviour) error {
	return checkBehaviours(p, PlatformOf(p, chip), rollbackLater, m)
}

func checkBehaviours(p Personality, platform Platform, rollbackLater bool, m map[string]Behaviour) error {
	for v, b := range m {
		b, _ := ParseBehaviour(string(b))
		switch {
		case platform == PlatformArduinoESP32 && !rollbackLater && (b == Unstable || b == Unconfirmed):
			return fmt.Errorf("behaviour %s for %q cannot happen on an arduino device unless the sketch confirms itself (rollback later): initArduino() marks a new image valid before setup()", b, v)
		case b == CrashToFactory && !platform.hasFactory():
			return fmt.Errorf("behaviour %s for %q needs a factory app: the %s personality's partition table has none", b, v, p)
		case (b == ForeignELF || b == CrashLoop) && platform == PlatformESP8266:
			return fmt.Errorf("behaviour %s for %q cannot happen on the %s personality (its images tell no ELF and it has no rollback)", b, v, p)
		}
	}
	return nil
}

// newDeviceFlash lays out the flash of the platform.
func newDeviceFlash(s *settings, factory *blob) *flash {
	if s.platform == PlatformArduinoESP32 {
		return newArduinoFlash(s.SlotSize, arduinoSPIFFSSize, factory)
	}
	f := newFlash(s.SlotSize, s.platform != PlatformESP8266, factory)
	if s.platform == PlatformESP8266 {
		f.fsSize = s.traits.ESP8266FS
	}
	return f
}

// hasFactory reports whether the platform's partition table has a factory app.
func (p Platform) hasFactory() bool { return p == PlatformIDF }
