package tasmota

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
	"github.com/ots-ota/ots-ota/sim/internal/tasmotafw"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// Tasmota is the personality.
const Tasmota core.Personality = "tasmota"

// Firmware is the tasmota personality.
var Firmware core.Firmware = tasFirmware{}

// defaultVersion is the factory image's version when the Config gives
// none.
const defaultVersion = "15.4.0"

// The image names (CODE_IMAGE_STR) the sim gives a meaning: what Version
// tells in parentheses. Any other name is a full build.
const (
	imageTasmota  = "tasmota"
	imageMinimal  = "minimal"
	imageSafeboot = "safeboot"
)

// webPort is WEB_PORT.
const webPort = 80

// webUser is WEB_USERNAME.
const webUser = "admin"

type tasFirmware struct{}

func (tasFirmware) Traits() core.Traits {
	return core.Traits{Name: Tasmota, Platform: core.PlatformArduinoESP32, BothCores: true, Protocol: "http",
		OTAPort: webPort, Project: imageTasmota, Version: defaultVersion, Knobs: []core.Knob{
			{Field: "Language", Why: "only Tasmota's pages are translated"},
			{Field: "Safeboot", Why: "only Tasmota has a safeboot layout"},
		}}
}

// Check refuses what no Tasmota build is and makes an ESP8266's factory
// image an esp8266/Arduino build that tells its name and version.
func (tasFirmware) Check(c *core.Config) error {
	esp8266 := core.PlatformOf(Tasmota, c.Chip) == core.PlatformESP8266
	switch {
	case c.Language != "" && langs[c.Language].html == "":
		return fmt.Errorf("language %q: the sim has en and de", c.Language)
	case c.Safeboot && esp8266:
		return errors.New("Safeboot is an ESP32 layout: an ESP8266 upgrades through the minimal image")
	case c.RollbackLater:
		return errors.New("RollbackLater: Tasmota marks a new image valid at boot")
	case c.Extensions:
		return errors.New("Extensions: Tasmota adds no /ota/status")
	}
	if esp8266 && c.Factory == nil {
		img, err := Image("esp8266", c.Project, c.Version, c.ImageSize)
		if err != nil {
			return err
		}
		c.Factory = img
	}
	return nil
}

// Servers: the one web server (ESP8266WebServer or WebServer: one client
// at a time).
func (tasFirmware) Servers(e *core.Env) []core.Server {
	d := newDevice(e)
	srv := d.web.Server(d.routes())
	srv.NotFound = d.handleNotFound
	return []core.Server{srv}
}

// Services: none. Tasmota advertises _http._tcp only in builds with
// USE_DISCOVERY and WEBSERVER_ADVERTISE once SetOption55 is on (off by
// default), and never a Tasmota service type.
func (tasFirmware) Services(*core.Env) []mdnsd.Service { return nil }

// Image is a Tasmota build for the sim: an application image for chip of
// the image name (project: "tasmota", "tasmota32", "minimal", "safeboot"
// …) and version, about size bytes (0 = small). ESP32 images tell both in
// their app description; ESP8266 images (esp8266/Arduino layout) in the
// readable string the image package writes into the sketch.
// The same arguments give the same bytes (built once; do not modify them).
func Image(chip, name, version string, size int) ([]byte, error) {
	if name == "" {
		name = imageTasmota
	}
	key := fmt.Sprintf("%s/%s/%s/%d", strings.ToLower(chip), name, version, size)
	if b, ok := imageCache.Load(key); ok {
		return b.([]byte), nil
	}
	var b []byte
	var err error
	if strings.EqualFold(chip, "esp8266") {
		b, err = image.Build(image.BuildOptions{Chip: image.ChipESP8266, Project: name, Version: version, Size: size})
	} else {
		b, err = core.Image(chip, name, version, size)
	}
	if err != nil {
		return nil, err
	}
	imageCache.Store(key, b)
	return b, nil
}

var imageCache sync.Map // "chip/name/version/size" → []byte

// marker finds the project and version an ESP8266 image tells (the image
// package's sketch string, or the core's stand-in image's).
var marker = regexp.MustCompile(`(?:sketch|image) project=([^ \x00]+) version=([^ \x00]+)`)

// persist is what a device keeps across resets: its settings (OtaUrl,
// SetOption128) and RTC memory (ota_loader), and where the ESP32 safeboot
// layout boots.
type persist struct {
	mu     sync.Mutex
	otaURL string
	so128  bool
	// otaLoader is RtcSettings.ota_loader: ESP8266, the full image did not
	// fit and the minimal one comes next; ESP32, an upgrade restarts into
	// safeboot.
	otaLoader bool
	// bootFactory: the safeboot (factory) partition boots (ESP32 with
	// Config.Safeboot); otaFactory is OtaFactoryWrite's flag: safeboot
	// fetches OtaUrl as soon as it is up.
	bootFactory, otaFactory bool
}

// device is one boot of Tasmota.
type device struct {
	e       *core.Env
	web     *arduino.Web
	up      *arduino.Update
	esp8266 bool
	p       *persist
	l       lang

	// What runs: the image name and version it tells.
	image, version string
	// uploadType is Web.upload_file_type: what POST /u2 writes.
	uploadType int
	// uploadErr is Web.upload_error, errSignalled upload_error_signalled:
	// an error stays until HandleUploadDone shows it.
	uploadErr    int
	errSignalled bool
	// upgrading: from Upgrade (or the first byte of a /u2 upload) until the
	// restart; corrupt: a Status arrived meanwhile with the fault armed.
	upgrading atomic.Bool
	corrupt   atomic.Bool
	// backlog runs queued commands one at a time.
	backlog chan string
	mu      sync.Mutex
}

// The upload types (enum UploadTypes; UPL_TASMOTA is what a fresh boot
// has).
const (
	uplTasmota = iota
	uplSettings
)

func newDevice(e *core.Env) *device {
	c := e.Config()
	lg := c.Language
	if lg == "" {
		lg = "en"
	}
	d := &device{e: e, esp8266: e.Platform() == core.PlatformESP8266, l: langs[lg], backlog: make(chan string, 32)}
	kind := arduino.WebServer
	if d.esp8266 {
		kind = arduino.ESP8266WebServer
	}
	d.web, d.up = arduino.NewWeb(kind, e), arduino.NewUpdate(e)
	d.p = e.Persistent(func() any { return &persist{otaURL: tasmotafw.DefaultOtaURL(d.esp8266)} }).(*persist)
	d.image, d.version = d.identity()
	d.p.mu.Lock()
	safeboot := c.Safeboot && d.p.bootFactory
	propagate := false
	switch {
	case safeboot:
		d.image = imageSafeboot
		propagate = d.p.otaFactory // OtaFactoryRead()
		d.p.otaFactory = false
	case d.image == imageMinimal && d.p.otaLoader:
		propagate = true // RtcSettings.ota_loader: fetch the full image now
		d.p.otaLoader = false
	}
	d.p.mu.Unlock()
	go d.runBacklog(e.BootContext())
	if propagate {
		d.startUpgrade()
	}
	return d
}

// identity is the running image's name and version: from its app
// description (ESP32), or the string an ESP8266 sim image carries.
func (d *device) identity() (string, string) {
	st := d.e.State()
	if !d.esp8266 {
		return st.Project, st.Version
	}
	img := d.e.RunningImage()
	head := img[:min(len(img), 16<<10)]
	if len(img) > 2 && img[0] == 0x1F && img[1] == 0x8B {
		if zr, err := gzip.NewReader(bytes.NewReader(img)); err == nil {
			head, _ = io.ReadAll(io.LimitReader(zr, 16<<10))
		}
	}
	if m := marker.FindSubmatch(head); m != nil {
		return string(m[1]), string(m[2])
	}
	if st.Version != "" && st.Version != "unknown" {
		return st.Project, st.Version
	}
	return imageTasmota, d.e.Config().Version
}

// isMinimal: the running build is a minimal one (FIRMWARE_MINIMAL), which
// safeboot is too.
func (d *device) isMinimal() bool { return d.image == imageMinimal || d.image == imageSafeboot }

// runningFactory is EspRunningFactoryPartition() on the safeboot layout.
func (d *device) runningFactory() bool { return d.image == imageSafeboot && d.e.Config().Safeboot }

// freeSketchSpace is ESP.getFreeSketchSpace(): on ESP8266 what the sketch
// area (the sim's Config.SlotSize: from the sketch's start to the
// filesystem) leaves past the running sketch, rounded up to a sector; on
// ESP32 the next OTA partition (one slot).
func (d *device) freeSketchSpace() int64 {
	size := d.e.Config().SlotSize
	if !d.esp8266 {
		return size
	}
	used := (int64(len(d.e.RunningImage())) + 0xFFF) &^ 0xFFF
	return max(size-used, 0)
}

func itoa(n int) string { return strconv.Itoa(n) }
