package esphomepull

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/internal/mqttlink"
)

// Fault is one misbehaviour a node shows (Device.Faults).
type Fault string

// Faults. Each acts on every install the node takes, unless said otherwise.
const (
	// FaultDownloadCut: every download is cut halfway through the body: the
	// install fails and the state is published again (AVAILABLE).
	FaultDownloadCut Fault = "download-cut"
	// FaultMD5Mismatch: the bytes the node computes its MD5 over differ from
	// what was sent: the check against the manifest's md5 fails, nothing is
	// booted, the state is published again (AVAILABLE).
	FaultMD5Mismatch Fault = "md5-mismatch"
	// FaultCrashOnBoot: the image is written and the node reboots into it
	// ("online", the empty state), but the new image crashes
	// (Device.CrashAfter) before it is marked valid: the broker publishes
	// the will "offline", and the bootloader boots the old image: the node
	// comes back on its old version (and sees the update available again
	// at its first check).
	FaultCrashOnBoot Fault = "crash-on-boot"
	// FaultNeverComesBack: the node reboots ("offline") into the new image
	// and is never heard of again.
	FaultNeverComesBack Fault = "never-comes-back"
	// FaultBrokerDrop: the node's link to the broker breaks halfway through
	// the download (the broker publishes the will "offline"); the MQTT
	// client reconnects by itself ("online", the state) while the download
	// goes on. Once per install.
	FaultBrokerDrop Fault = "broker-drop"
	// FaultSilent: the node never publishes its update entity's state
	// (status online/offline still): it installs when told, unseen.
	FaultSilent Fault = "silent"
	// FaultManifestUnreachable: the node was built with a wrong source URL
	// (the manifest URL's port replaced by 1, where nothing answers): its
	// checks fail, so its state keeps "" versions and INSTALL does nothing.
	FaultManifestUnreachable Fault = "manifest-unreachable"
	// FaultWrongVersion: the image was built with another project version
	// than the manifest says: after the install the node tells
	// Device.WrongVersion (default the manifest's version + "-other"), so
	// it sees the update available again.
	FaultWrongVersion Fault = "wrong-version"
	// FaultAutoInstall: an automation (on_update_available: update.perform)
	// installs when a check turns the state to AVAILABLE from another
	// state, without INSTALL (after a failed install the state stays
	// AVAILABLE: no retry; after every boot it fires again).
	FaultAutoInstall Fault = "auto-install"
)

// Faults lists every fault, in documentation order.
func Faults() []Fault {
	return []Fault{FaultDownloadCut, FaultMD5Mismatch, FaultCrashOnBoot, FaultNeverComesBack, FaultBrokerDrop,
		FaultSilent, FaultManifestUnreachable, FaultWrongVersion, FaultAutoInstall}
}

// FaultSpec is one --fault KIND[:N|:P%]: Kind on Count devices, or on
// Percent % of the fleet (rounded, at least one); neither = every device.
type FaultSpec struct {
	Kind    Fault
	Count   int
	Percent float64
}

// ParseFault reads KIND, KIND:N or KIND:P%.
func ParseFault(s string) (FaultSpec, error) {
	kind, n, hasN := strings.Cut(strings.TrimSpace(s), ":")
	f := Fault(strings.ToLower(kind))
	if !slices.Contains(Faults(), f) {
		var names []string
		for _, k := range Faults() {
			names = append(names, string(k))
		}
		return FaultSpec{}, fmt.Errorf("unknown fault %q (have: %s)", kind, strings.Join(names, ", "))
	}
	spec := FaultSpec{Kind: f}
	if !hasN {
		return spec, nil
	}
	if p, ok := strings.CutSuffix(n, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v <= 0 || v > 100 || math.IsNaN(v) {
			return FaultSpec{}, fmt.Errorf("fault %s:%s: P%% is a share of the fleet, above 0 and at most 100", kind, n)
		}
		spec.Percent = v
		return spec, nil
	}
	c, err := strconv.Atoi(n)
	if err != nil || c < 1 {
		return FaultSpec{}, fmt.Errorf("fault %s:%s: N is a count of devices, 1 or more (or P%% of the fleet)", kind, n)
	}
	spec.Count = c
	return spec, nil
}

// AssignFaults gives each spec's fault to its devices: a spec without a
// count to every device, one with a count (or a share) to the next devices
// that no counted spec took yet (in order), so --fault download-cut:2
// --fault md5-mismatch:10% makes two devices of one kind and a tenth of
// the fleet of the other.
func AssignFaults(devs []Device, specs []FaultSpec) error {
	next := 0
	for _, s := range specs {
		n := s.Count
		if s.Percent > 0 {
			n = max(int(math.Round(float64(len(devs))*s.Percent/100)), 1)
		}
		if n == 0 {
			for i := range devs {
				devs[i].Faults = append(devs[i].Faults, s.Kind)
			}
			continue
		}
		if next+n > len(devs) {
			return fmt.Errorf("fault %s: %d device(s) wanted, only %d of %d are left without a counted fault", s.Kind, n, len(devs)-next, len(devs))
		}
		for i := next; i < next+n; i++ {
			devs[i].Faults = append(devs[i].Faults, s.Kind)
		}
		next += n
	}
	return nil
}

// Defaults.
const (
	// DefaultVersion is the project version (esphome: project: version:)
	// when Device.Version is "".
	DefaultVersion = "1.0.0"
	// DefaultChipFamily is the manifest's chipFamily a node takes.
	DefaultChipFamily = "ESP32-S3"
	// DefaultEntity is the update entity's object id (an entity named
	// "Firmware").
	DefaultEntity = "firmware"
	// DefaultUpdateInterval is the sim's update_interval (ESPHome's own
	// default is 6 h; a rollout wants nodes built with a short one).
	DefaultUpdateInterval = 5 * time.Second
	// DefaultFlashRate is what a node writes per second (the sim's other
	// personalities' flash write rate).
	DefaultFlashRate = 100 << 10
	// DefaultRebootTime is reboot → connected to the broker again.
	DefaultRebootTime = 3 * time.Second
	// DefaultKeepAlive is ESPHome's MQTT keepalive.
	DefaultKeepAlive = 15 * time.Second
	// DefaultReconnectWait is a lost link → the next connection attempt.
	DefaultReconnectWait = 5 * time.Second
)

// chipFamilies maps the sim's chip names to the manifest's chipFamily
// (ESPHome's variant names).
var chipFamilies = map[string]string{
	"esp32": "ESP32", "esp32s2": "ESP32-S2", "esp32s3": "ESP32-S3", "esp32c2": "ESP32-C2", "esp32c3": "ESP32-C3",
	"esp32c5": "ESP32-C5", "esp32c6": "ESP32-C6", "esp32c61": "ESP32-C61", "esp32h2": "ESP32-H2", "esp32p4": "ESP32-P4",
	"esp8266": "ESP8266", "rp2040": "RP2040",
}

// ChipFamily is the manifest's chipFamily of a chip name (esp32s3 →
// "ESP32-S3"); false for an unknown one.
func ChipFamily(chip string) (string, bool) {
	n := strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(strings.TrimSpace(chip)))
	f, ok := chipFamilies[n]
	return f, ok
}

// Device is one simulated ESPHome node. Zero fields take the defaults.
type Device struct {
	// Name is the node's name, and its MQTT topic prefix (required).
	Name string
	// ManifestURL is the update's source URL, fixed at build (required).
	ManifestURL string
	// Version is the project version it runs (default DefaultVersion).
	Version string
	// ChipFamily is the build's variant, matched against the manifest's
	// chipFamily verbatim (default DefaultChipFamily).
	ChipFamily string
	// Entity is the update entity's object id (default DefaultEntity).
	Entity string
	// UpdateInterval is the poll period (default DefaultUpdateInterval).
	UpdateInterval time.Duration
	// FirstCheck is boot → the first check (default: a point spread per
	// node below min(UpdateInterval/2, 5 s), at least 10 ms, as ESPHome's
	// scheduler offsets an interval's first run).
	FirstCheck time.Duration
	// CrashAfter is how long a FaultCrashOnBoot image runs before it
	// crashes (default: half of FirstCheck, so it tells no version; the
	// image is marked valid only after a minute, so any crash before that
	// rolls back). A crash drops the link: the broker publishes the will.
	CrashAfter time.Duration
	// FlashRate: bytes per second the node writes (default
	// DefaultFlashRate; negative = unlimited).
	FlashRate int64
	// RebootTime: reboot → back on the broker (default DefaultRebootTime).
	RebootTime time.Duration
	// BootCount before the sim's first boot (the first boot is 1 more).
	BootCount int
	// WrongVersion is what FaultWrongVersion makes an installed image tell
	// (default the manifest's version + "-other").
	WrongVersion string
	Faults       []Fault
}

func (d Device) has(f Fault) bool { return slices.Contains(d.Faults, f) }

// Config is a fleet.
type Config struct {
	// Broker is mqtt://host[:1883] (plain MQTT only).
	Broker string
	// Username and Password: what every node logs in with (optional).
	Username string
	Password auth.Secret
	Devices  []Device
	// KeepAlive is the nodes' MQTT keepalive (default DefaultKeepAlive).
	KeepAlive time.Duration
	// ReconnectWait is a lost link → the next attempt (default
	// DefaultReconnectWait). Tests shorten it.
	ReconnectWait time.Duration
	// MaxConns bounds the HTTP connections the fleet's nodes hold open at
	// once (manifest and image GETs); a node waits for one (0 = no bound).
	// The CLI sets it from the open-file limit: each node holds its broker
	// link, and only some fetch at any time.
	MaxConns int
	// Seed varies where in the first half-interval each node's first check
	// falls.
	Seed int64
	// AllowNonLoopback lets nodes reach a broker or fetch from a host
	// outside loopback.
	AllowNonLoopback bool
	// OnEvent receives every event (from many goroutines, one at a time).
	OnEvent func(Event)
	Logger  *slog.Logger
}

// CheckBroker says what is wrong with a broker URL for the nodes, nil when
// nothing is (nothing is connected).
func CheckBroker(raw string) error {
	_, err := mqttlink.BrokerAddr(raw)
	return err
}

// CheckManifestURL says what is wrong with a source URL, nil when nothing
// is: http:// with a host (the sim's nodes fetch no https).
func CheckManifestURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Scheme, "http") {
		return fmt.Errorf("manifest URL %q: give http://HOST[:PORT]/PATH", raw)
	}
	return nil
}

// CheckName says what is wrong with a node name, nil when nothing is: a
// name is an MQTT topic prefix here, so no '+', '#', space or empty level.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("a node name cannot be empty")
	case len(name) > 63:
		return fmt.Errorf("node name %q: at most 63 characters", name)
	case strings.ContainsAny(name, "+#/ "):
		return fmt.Errorf("node name %q: no '/', '+', '#' or space", name)
	}
	return nil
}

// resolve fills a device's defaults; i is its index.
func (c *Config) resolve(i int, d Device) (Device, error) {
	if err := CheckName(d.Name); err != nil {
		return d, fmt.Errorf("device %d: %v", i+1, err)
	}
	if err := CheckManifestURL(d.ManifestURL); err != nil {
		return d, fmt.Errorf("device %d: %v", i+1, err)
	}
	if d.Version == "" {
		d.Version = DefaultVersion
	}
	if d.ChipFamily == "" {
		d.ChipFamily = DefaultChipFamily
	}
	if d.Entity == "" {
		d.Entity = DefaultEntity
	}
	if strings.ContainsAny(d.Entity, "+#/ ") {
		return d, fmt.Errorf("device %d: entity %q: an object id has no '/', '+', '#' or space", i+1, d.Entity)
	}
	if d.UpdateInterval == 0 {
		d.UpdateInterval = DefaultUpdateInterval
	}
	if d.FlashRate == 0 {
		d.FlashRate = DefaultFlashRate
	}
	if d.RebootTime == 0 {
		d.RebootTime = DefaultRebootTime
	}
	if d.UpdateInterval < 0 || d.FirstCheck < 0 || d.CrashAfter < 0 || d.RebootTime < 0 || d.BootCount < 0 {
		return d, fmt.Errorf("device %d: durations and the boot count cannot be negative", i+1)
	}
	return d, nil
}

// FirmwareURL is where a node fetches the image a manifest names, from the
// manifest's source URL and its ota.path, as http_request_update.cpp
// resolves it: a path holding "http" anywhere (even in its middle) is used
// as it is; one starting with "/" is joined to the source up to the first
// '/' from its 9th character on (the scheme and host); any other is joined
// to the source up to and including its last '/'.
func FirmwareURL(source, path string) string {
	if strings.Contains(path, "http") {
		return path
	}
	if strings.HasPrefix(path, "/") {
		end := len(source)
		if len(source) > 8 {
			if i := strings.IndexByte(source[8:], '/'); i >= 0 {
				end = 8 + i
			}
		}
		return source[:end] + path
	}
	return source[:strings.LastIndexByte(source, '/')+1] + path
}
