package tasmotamqtt

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/internal/mqttlink"
	"github.com/ots-ota/ots-ota/sim/internal/tasmotafw"
)

// Fault is one misbehaviour a device shows (Device.Faults).
type Fault string

// Faults. Each acts on every Upgrade the device takes, unless said
// otherwise.
const (
	// FaultDownloadCut: every fetch is cut halfway through the body; after
	// its attempts the device publishes UPGRADE "Failed …" and keeps running.
	FaultDownloadCut Fault = "download-cut"
	// FaultMD5Mismatch: the bytes the device computes its MD5 over differ
	// from what was sent, so a fetch with x-MD5 fails its check ("Failed …")
	// and nothing is written. Without x-MD5 the device has nothing to check
	// and the fault does nothing (an event says so).
	FaultMD5Mismatch Fault = "md5-mismatch"
	// FaultCrashOnBoot: the new image is written and the device restarts,
	// but the new image crashes at boot and the bootloader boots the old
	// one: the device comes back on the old version with a crash as its
	// RestartReason.
	FaultCrashOnBoot Fault = "crash-on-boot"
	// FaultNeverComesBack: the device restarts into the new image and is
	// never heard of again.
	FaultNeverComesBack Fault = "never-comes-back"
	// FaultTwoStep: an ESP8266 short of free sketch space (TwoStepFreeKiB
	// unless Device.FreeKiB says otherwise): a full image larger than that
	// does not fit, so the device fetches <name>-minimal, boots it, and the
	// minimal build fetches the full image by itself. Only on ESP8266.
	FaultTwoStep Fault = "two-step"
	// FaultBrokerDrop: the device's link to the broker breaks halfway
	// through a fetch (as when the broker's keepalive expires): the broker
	// publishes the will; the device notices after the download, loses what
	// it publishes meanwhile, and reconnects as the firmware does (LWT
	// Online, no INFO) unless it restarts first. Once per Upgrade command.
	FaultBrokerDrop Fault = "broker-drop"
	// FaultSilent: the device answers no Status command (every other command
	// works).
	FaultSilent Fault = "silent"
	// FaultNoInfo: INFO1 carries no Version.
	FaultNoInfo Fault = "no-info"
)

// Faults lists every fault, in documentation order.
func Faults() []Fault {
	return []Fault{FaultDownloadCut, FaultMD5Mismatch, FaultCrashOnBoot, FaultNeverComesBack, FaultTwoStep,
		FaultBrokerDrop, FaultSilent, FaultNoInfo}
}

// FaultSpec is one --fault KIND[:N]: Kind on N devices (0 = every device).
type FaultSpec struct {
	Kind  Fault
	Count int
}

// ParseFault reads KIND or KIND:N.
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
	if hasN {
		c, err := strconv.Atoi(n)
		if err != nil || c < 1 {
			return FaultSpec{}, fmt.Errorf("fault %s:%s: N is a count of devices, 1 or more", kind, n)
		}
		spec.Count = c
	}
	return spec, nil
}

// AssignFaults gives each spec's fault to its devices: a spec without a
// count to every device, one with a count to the next Count devices that
// no counted spec took yet (in order), so --fault download-cut:2 --fault
// md5-mismatch:3 makes two devices of one kind and three of the other.
func AssignFaults(devs []Device, specs []FaultSpec) error {
	next := 0
	for _, s := range specs {
		if s.Count == 0 {
			for i := range devs {
				devs[i].Faults = append(devs[i].Faults, s.Kind)
			}
			continue
		}
		if next+s.Count > len(devs) {
			return fmt.Errorf("fault %s:%d: only %d of %d devices are left without a counted fault", s.Kind, s.Count, len(devs)-next, len(devs))
		}
		for i := next; i < next+s.Count; i++ {
			devs[i].Faults = append(devs[i].Faults, s.Kind)
		}
		next += s.Count
	}
	return nil
}

// Defaults.
const (
	// DefaultVersion is what a device runs when Device.Version is "".
	DefaultVersion = "15.4.0"
	// DefaultFullTopic is Tasmota's MQTT_FULLTOPIC.
	DefaultFullTopic = "%prefix%/%topic%/"
	// DefaultGroupTopic is MQTT_GRPTOPIC.
	DefaultGroupTopic = "tasmotas"
	// DefaultFlashRate is what the device writes per second (the sim's
	// other personalities' flash write rate, sim.DefaultTiming).
	DefaultFlashRate = 100 << 10
	// DefaultRebootTime is restart → connected to the broker again.
	DefaultRebootTime = 3 * time.Second
	// DefaultKeepAlive is MQTT_KEEPALIVE.
	DefaultKeepAlive = 30 * time.Second
	// TwoStepFreeKiB is the free sketch space of a FaultTwoStep device.
	TwoStepFreeKiB = 64
	// esp8266ProgramKiB is the running sketch's size on an ESP8266 unless
	// Device.ProgramKiB says otherwise (a tasmota.bin of the 14.x line).
	esp8266ProgramKiB = 616
	// esp8266SketchKiB is ProgramFlashSize on a 4 MB ESP8266 (the sketch
	// area the running sketch and a new one share).
	esp8266SketchKiB = 1024
	// esp32SlotKiB is the OTA slot of Tasmota32's 4 MB layout.
	esp32SlotKiB = 2880
)

// Device is one simulated Tasmota. Zero fields take the defaults.
type Device struct {
	// Topic is %topic% (default tasmota_XXXXXX from the device's MAC).
	Topic string
	// FullTopic is the FullTopic pattern (default "%prefix%/%topic%/").
	FullTopic string
	// GroupTopic (default "tasmotas").
	GroupTopic string
	// Version is the running version (default DefaultVersion) and Image
	// its image name, what Version tells in parentheses (default tasmota on
	// ESP8266, tasmota32 on ESP32; "minimal" runs the minimal build).
	Version, Image string
	// Chip: esp8266, esp32, esp32s2, esp32s3, esp32c3 … (default esp32).
	Chip string
	// FreeKiB is the free sketch space (Status 4 "Free") while the
	// configured build runs. Default: ESP8266 1024 minus ProgramKiB
	// (TwoStepFreeKiB with FaultTwoStep); ESP32 the OTA slot.
	FreeKiB int
	// ProgramKiB is the running build's size on an ESP8266 (default 616).
	ProgramKiB int
	// OtaURL is the stored OtaUrl (default Tasmota's release URL).
	OtaURL string
	// BootCount before the first boot of the sim (default 0: the first
	// INFO3 says 1).
	BootCount int
	// SetOption4: replies go to stat/<t>/<COMMAND> instead of RESULT.
	SetOption4 bool
	Faults     []Fault
	// FlashRate: bytes per second the device writes (default
	// DefaultFlashRate; negative = unlimited).
	FlashRate int64
	// RebootTime: restart → back on the broker (default DefaultRebootTime).
	RebootTime time.Duration
}

func (d Device) has(f Fault) bool { return slices.Contains(d.Faults, f) }

// Config is a fleet.
type Config struct {
	// Broker is mqtt://host[:1883] (plain MQTT only: a device's TLS is not
	// simulated).
	Broker string
	// Username and Password: what every device logs in with (optional).
	Username string
	Password auth.Secret
	Devices  []Device
	// Tick is the firmware's second (default 1 s): the upgrade's countdowns,
	// the 200 ms between backlog commands (Tick/5), the MQTT reconnect wait
	// (10 ticks) run on it. Tests shorten it.
	Tick time.Duration
	// KeepAlive is the devices' MQTT keepalive (default 30 s). A download
	// longer than 1.5 × KeepAlive costs the link: the firmware's loop does
	// not run during it, so no PINGREQ goes out and the broker drops it.
	KeepAlive time.Duration
	// InstallVersion is what a device tells after installing an image that
	// tells no version of its own (a real Tasmota build; sim images tell
	// theirs); default "unknown".
	InstallVersion string
	// Seed varies the devices' MACs (and so the default topics) between
	// processes sharing a broker; TopicPrefix replaces "tasmota" in them.
	Seed        int64
	TopicPrefix string
	// AllowNonLoopback lets devices reach a broker or fetch from a host
	// outside loopback.
	AllowNonLoopback bool
	// OnEvent receives every event (from many goroutines, one at a time
	// per device).
	OnEvent func(Event)
	Logger  *slog.Logger
}

// CheckBroker says what is wrong with a broker URL for the devices, nil
// when nothing is (nothing is connected).
func CheckBroker(raw string) error {
	_, err := mqttlink.BrokerAddr(raw)
	return err
}

// resolve fills a device's defaults; i is its index.
func (c *Config) resolve(i int, d Device, mac [6]byte) (Device, error) {
	if d.Chip == "" {
		d.Chip = "esp32"
	}
	d.Chip = strings.ToLower(d.Chip)
	chip, ok := image.ChipByName(d.Chip)
	esp8266 := d.Chip == "esp8266"
	if !esp8266 && (!ok || !chip.Known()) {
		return d, fmt.Errorf("device %d: unknown chip %q", i+1, d.Chip)
	}
	if d.has(FaultTwoStep) && !esp8266 {
		return d, fmt.Errorf("device %d: fault %s: only an ESP8266 takes the minimal two-step (ESP32 builds have room for a full image)", i+1, FaultTwoStep)
	}
	if d.Topic == "" {
		p := c.TopicPrefix
		if p == "" {
			p = "tasmota"
		}
		d.Topic = fmt.Sprintf("%s_%02X%02X%02X", p, mac[3], mac[4], mac[5])
	}
	if strings.ContainsAny(d.Topic, "/+# ") {
		return d, fmt.Errorf("device %d: topic %q: a Tasmota topic has no '/', '+', '#' or space", i+1, d.Topic)
	}
	if d.FullTopic == "" {
		d.FullTopic = DefaultFullTopic
	}
	if !strings.Contains(d.FullTopic, "%topic%") && !strings.Contains(d.FullTopic, "%hostname%") && !strings.Contains(d.FullTopic, "%id%") {
		return d, fmt.Errorf("device %d: full topic %q names no device (%%topic%%, %%hostname%% or %%id%%)", i+1, d.FullTopic)
	}
	if d.GroupTopic == "" {
		d.GroupTopic = DefaultGroupTopic
	}
	if d.Version == "" {
		d.Version = DefaultVersion
	}
	if d.Image == "" {
		d.Image = "tasmota"
		if !esp8266 {
			d.Image = "tasmota32"
		}
	}
	if d.ProgramKiB == 0 {
		d.ProgramKiB = esp8266ProgramKiB
	}
	if d.FreeKiB == 0 {
		switch {
		case d.has(FaultTwoStep):
			d.FreeKiB = TwoStepFreeKiB
		case esp8266:
			d.FreeKiB = max(esp8266SketchKiB-d.ProgramKiB, 0)
		default:
			d.FreeKiB = esp32SlotKiB
		}
	}
	if d.FreeKiB < 0 || d.ProgramKiB < 0 {
		return d, fmt.Errorf("device %d: free and program sizes cannot be negative", i+1)
	}
	if d.OtaURL == "" {
		d.OtaURL = tasmotafw.DefaultOtaURL(esp8266)
	}
	if d.FlashRate == 0 {
		d.FlashRate = DefaultFlashRate
	}
	if d.RebootTime == 0 {
		d.RebootTime = DefaultRebootTime
	}
	if d.RebootTime < 0 || d.BootCount < 0 {
		return d, fmt.Errorf("device %d: reboot time and boot count cannot be negative", i+1)
	}
	return d, nil
}
