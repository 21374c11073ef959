// Package esphome is the ESPHome pull family of a rollout: devices built
// with `update: platform: http_request` poll a JSON manifest at a URL
// fixed when they were built, and install what it names when told INSTALL
// over the user's MQTT broker (docs/protocols/esphome-pull.md).
package esphome

import (
	"context"
	"log/slog"
	"time"

	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/upload"
)

// DefaultCheckWait bounds Ready when Config.CheckWait is 0.
const DefaultCheckWait = 10 * time.Minute

// DefaultManifest is the announcement's name for a device that names none
// (rollout.Device.Manifest "").
const DefaultManifest = "manifest.json"

// Config sets up the family.
type Config struct {
	Client *broker.Client
	// Expect is --expect-version: written as the manifest's version, and
	// compared verbatim with what devices tell (installed_version,
	// latest_version).
	Expect string
	// CheckWait bounds Ready: how long a device may take to poll the
	// manifest and tell it saw the new version (0 = DefaultCheckWait).
	CheckWait time.Duration
	// Title is the manifest's "name" ("" = the image's stem).
	Title string
	// Summary is the manifest's ota.summary ("" = "ots-ota rollout <version>").
	Summary string
	// ChipFamily is the manifest's builds[].chipFamily ("" = from the
	// image's chip: esp32s3 → "ESP32-S3", esp8266 → "ESP8266", …).
	ChipFamily string
	Logger     *slog.Logger
}

// Family is the ESPHome family over one broker client. It is safe for
// concurrent use.
type Family struct {
	c   *broker.Client
	cfg Config
	log *slog.Logger
}

var (
	_ rollout.Family     = (*Family)(nil)
	_ rollout.Linker     = (*Family)(nil)
	_ rollout.URLChecker = (*Family)(nil)
)

// New returns the family over cfg.Client.
func New(cfg Config) *Family {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.CheckWait <= 0 {
		cfg.CheckWait = DefaultCheckWait
	}
	return &Family{c: cfg.Client, cfg: cfg, log: log}
}

// Name is "esphome".
func (f *Family) Name() string { return "esphome" }

// Protocol labels the rollout's results: "esphome-mqtt".
func (f *Family) Protocol() upload.Protocol { return "esphome-mqtt" }

// Link is the broker link's state (rollout.Linker).
func (f *Family) Link() (up bool, changed <-chan struct{}) { return f.c.Link() }

// Watch delivers the reports of devs (TODO).
func (f *Family) Watch(ctx context.Context, devs []rollout.Device, fn func(rollout.Report)) error {
	return nil
}

// Discover lists the devices whose retained update state the broker holds (TODO).
func (f *Family) Discover(ctx context.Context, wait time.Duration) ([]rollout.Device, error) {
	return nil, nil
}

// Preflight is the device's update state as the broker retains it (TODO).
func (f *Family) Preflight(ctx context.Context, d rollout.Device) (rollout.Facts, error) {
	return rollout.Facts{}, nil
}

// Command publishes INSTALL (TODO).
func (f *Family) Command(ctx context.Context, d rollout.Device, url string) error { return nil }

// Reread takes the retained update state again (TODO).
func (f *Family) Reread(ctx context.Context, d rollout.Device) (rollout.Facts, error) {
	return rollout.Facts{}, nil
}

// Restore does nothing: ESPHome keeps no URL of its own to put back.
func (f *Family) Restore(ctx context.Context, d rollout.Device, otaURL string) error { return nil }

// Companions: an ESPHome device fetches only the image the manifest names.
func (f *Family) Companions(imageName string) []string { return nil }

// Screen refuses nothing: an ESPHome device tells no chip (the manifest's
// chipFamily keeps other chips off the image).
func (f *Family) Screen(fa rollout.Facts, img rollout.Image, have []string) string { return "" }

// CheckURL refuses an image URL the manifest cannot carry (TODO).
func (f *Family) CheckURL(u string) error { return nil }

// Announce returns one manifest per distinct manifest name of devs (TODO).
func (f *Family) Announce(devs []rollout.Device, img rollout.Image, url, md5 string) (map[string][]byte, error) {
	return nil, nil
}

// Ready waits until the device tells latest_version == Expect (TODO).
func (f *Family) Ready(ctx context.Context, d rollout.Device) error { return nil }

// ParseState reads an update entity's state payload (TODO).
func ParseState(payload []byte) (State, bool) { return State{}, false }

// State is what an ESPHome update entity publishes on
// <prefix>/update/<id>/state; "" = not told.
type State struct {
	Installed string // installed_version
	Latest    string // latest_version
	Title     string
}

// ChipFamily is ESPHome's chipFamily for an image chip's words
// ("esp32s3" → "ESP32-S3"); ok false when ESPHome names none (TODO).
func ChipFamily(chip string) (string, bool) { return "", false }
