package wled

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// WLED is the personality.
const WLED core.Personality = "wled"

// Firmware is the wled personality.
var Firmware core.Firmware = wledFirmware{}

// defaultVersion is the factory image's WLED version when the Config gives
// none: the newest release of the 16.x line when this was written.
const defaultVersion = "16.0.1"

// webPort is where WLED's web server listens (a build setting; 80).
const webPort = 80

// DefaultRelease is the release name (WLED_RELEASE_NAME) of WLED's own
// build for a chip, as platformio.ini names them.
func DefaultRelease(chip string) string {
	switch strings.ToLower(chip) {
	case "esp8266":
		return "ESP8266"
	case "esp32", "":
		return "ESP32"
	case "esp32s2":
		return "ESP32-S2"
	case "esp32s3":
		return "ESP32-S3_8MB_opi"
	case "esp32c3":
		return "ESP32-C3"
	}
	return strings.ToUpper(strings.Replace(chip, "esp32", "ESP32-", 1))
}

type wledFirmware struct{}

func (wledFirmware) Traits() core.Traits {
	return core.Traits{Name: WLED, Platform: core.PlatformArduinoESP32, BothCores: true, Protocol: "http",
		OTAPort: webPort, Project: "WLED", Version: defaultVersion, Knobs: []core.Knob{
			{Field: "Release", Why: "only WLED builds carry a release name"},
			{Field: "SettingsPIN", Why: "only WLED has a settings PIN"},
			{Field: "OTALock", Why: "only WLED has an OTA lock"},
			{Field: "OTAAnySubnet", Why: "only WLED 16.x gates uploads by subnet"},
			{Field: "Subnet", Why: "only WLED 16.x gates uploads by subnet"},
			{Field: "NoBootloaderOTA", Why: "only WLED 16.x updates its bootloader"},
		}}
}

// Check refuses what no WLED build is, and makes the factory image a WLED
// build that carries its release metadata.
func (wledFirmware) Check(c *core.Config) error {
	v, ok := parseVersion(c.Version)
	if !ok {
		return fmt.Errorf("WLED version %q: want a version such as 0.15.5 or 16.0.1", c.Version)
	}
	if v.less(version{0, 15, 2}) {
		return fmt.Errorf("WLED %s: versions before 0.15.2 (no release check, other texts) are not simulated", c.Version)
	}
	line16 := !v.less(version{16, 0, 0})
	esp8266 := core.PlatformOf(WLED, c.Chip) == core.PlatformESP8266
	switch {
	case !line16 && (c.OTAAnySubnet || c.Subnet.IsValid()):
		return fmt.Errorf("WLED %s has no subnet gate: OTAAnySubnet and Subnet are for 16.x", c.Version)
	case c.NoBootloaderOTA && (!line16 || esp8266):
		return errors.New("NoBootloaderOTA is for WLED 16.x on ESP32: other builds have no bootloader update")
	case c.RollbackLater:
		return errors.New("RollbackLater: WLED marks a new image valid at boot")
	case c.Extensions:
		return errors.New("Extensions: WLED adds no /ota/status")
	case !c.Password.IsZero():
		return errors.New("Password: WLED's web update asks for none (its gates are the PIN and the OTA lock)")
	}
	if c.Subnet.IsValid() && !c.Subnet.Contains(c.IP.Unmap()) && c.IP.IsValid() {
		return fmt.Errorf("subnet %s does not hold the device's address %s", c.Subnet, c.IP)
	}
	if c.Release == "" {
		c.Release = DefaultRelease(c.Chip)
	}
	if c.Factory == nil {
		img, err := imageFor(c)
		if err != nil {
			return err
		}
		c.Factory = img
	}
	return nil
}

// Servers: WLED's one web server (ESPAsyncWebServer on both cores).
func (wledFirmware) Servers(e *core.Env) []core.Server {
	d := newDevice(e)
	return []core.Server{d.web.Server(d.routes())}
}

// Services: _http._tcp and _wled._tcp on port 80, the latter with TXT
// mac=<12 lowercase hex> (wled.cpp initConnection).
func (wledFirmware) Services(e *core.Env) []mdnsd.Service {
	in, port := e.Config().Instance, uint16(e.Port(core.PortOTA))
	return []mdnsd.Service{
		{Instance: in, Type: "_http._tcp", Port: port},
		{Instance: in, Type: "_wled._tcp", Port: port, TXT: []string{"mac=" + escapedMAC(e)}},
	}
}

// escapedMac is WLED's escapedMac: the MAC in lowercase hex, no colons.
func escapedMAC(e *core.Env) string { return hex.EncodeToString(e.MAC()) }

// persist is what a device keeps across resets here.
type persist struct {
	mu  sync.Mutex
	vid string // the build code the last image told
}

// device is one boot of WLED.
type device struct {
	e       *core.Env
	web     *arduino.Web
	up      *arduino.Update
	esp8266 bool
	// What the running build is: its metadata (version and release), the
	// build code, and the line its behaviour follows.
	ver, release, vid string
	line16            bool
	subnet            netip.Prefix
	rebooting         sync.Once
}

func newDevice(e *core.Env) *device {
	c := e.Config()
	d := &device{e: e, web: arduino.NewWeb(arduino.Async, e), up: arduino.NewUpdate(e),
		esp8266: e.Platform() == core.PlatformESP8266}
	d.ver, d.release = c.Version, c.Release
	img := e.RunningImage()
	if m, ok := findMetadata(img[:min(len(img), 64<<10)]); ok {
		d.ver, d.release = m.version, m.release
	} else if st := e.State(); st.Version != "" && st.Version != "unknown" {
		// Not a WLED build (uploaded with skipValidation): the sim keeps
		// running the personality, with the image's own version.
		d.ver = st.Version
	}
	v, ok := parseVersion(d.ver)
	d.line16 = ok && !v.less(version{16, 0, 0})
	p := e.Persistent(func() any { return &persist{} }).(*persist)
	p.mu.Lock()
	d.vid = buildCode(d.ver, p.vid)
	p.vid = d.vid
	p.mu.Unlock()
	d.subnet = c.Subnet
	if !d.subnet.IsValid() {
		d.subnet = netip.PrefixFrom(c.IP, 24).Masked()
		if c.IP.Is6() {
			d.subnet = netip.PrefixFrom(c.IP, 64).Masked()
		}
	}
	return d
}

func (d *device) routes() []core.Route {
	rs := []core.Route{
		{Method: "GET", Path: "/json", Handle: d.handleJSON, Prefix: true},
		{Method: "GET", Path: "/update", Handle: d.handleUpdatePage, Prefix: true},
		{Method: "POST", Path: "/update", Handle: d.handleUpdate, Prefix: true},
		{Method: "GET", Path: "/", Handle: d.handleRoot},
	}
	if d.line16 && !d.esp8266 && !d.e.Config().NoBootloaderOTA {
		rs = append(rs, core.Route{Method: "POST", Path: "/updatebootloader", Handle: d.handleBootloader, Prefix: true})
	}
	return rs
}

// buildCode is the running build's VERSION (yymmddb in wled.h), which
// changes at releases only: the code of the releases the sim knows; for
// another version the code of the image it replaced (a custom build of the
// same tree), or at first the code of its release line.
func buildCode(ver, before string) string {
	if c, ok := releaseCodes[ver]; ok {
		return c
	}
	if before != "" {
		return before
	}
	v, _ := parseVersion(ver)
	switch {
	case v.major >= 17:
		return releaseCodes["17.0.0-devV5"]
	case v.major == 16:
		return releaseCodes["16.0.0"]
	}
	return releaseCodes["0.15.5"]
}

// releaseCodes are VERSION of wled00/wled.h at each release tag (0.15.2 to
// 0.15.5 share one; so do 16.0.0 and 16.0.1).
var releaseCodes = map[string]string{
	"0.15.0": "2412100", "0.15.1": "2507300",
	"0.15.2": "2508020", "0.15.3": "2508020", "0.15.4": "2508020", "0.15.5": "2508020",
	"16.0.0": "2605010", "16.0.1": "2605010",
	"17.0.0-devV5": "2607201",
}

// version is a WLED version's numbers (a suffix such as "-devV5" is
// ignored).
type version struct{ major, minor, patch int }

func parseVersion(s string) (version, bool) {
	var n [3]int
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return version{}, false
	}
	for i, p := range parts {
		end := 0
		for end < len(p) && p[end] >= '0' && p[end] <= '9' {
			end++
		}
		if end == 0 {
			return version{}, false
		}
		n[i], _ = strconv.Atoi(p[:end])
	}
	return version{n[0], n[1], n[2]}, true
}

func (a version) less(b version) bool {
	if a.major != b.major {
		return a.major < b.major
	}
	if a.minor != b.minor {
		return a.minor < b.minor
	}
	return a.patch < b.patch
}
