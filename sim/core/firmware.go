package core

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// Firmware is a personality: what one device family plugs into the core.
// The core is the chip and its SDK (flash slots, app states, boot and
// reboot, rollback, faults, events, sockets held across resets, the mDNS
// hookup); a Firmware says what runs on it: which servers on which ports,
// its upload handlers, its mDNS records and its defaults. It reaches its
// device only through the Env it is handed, and no personality reaches
// into another.
type Firmware interface {
	// Traits are the personality's fixed facts.
	Traits() Traits
	// Servers are what the firmware listens with once booted, in the order
	// they start; called at every boot.
	Servers(e *Env) []Server
	// Services are what it registers with mDNS at every boot.
	Services(e *Env) []mdnsd.Service
}

// Traits are a personality's fixed facts.
type Traits struct {
	// Name is the personality's name (Config.Personality).
	Name Personality
	// Platform is what the firmware is built on.
	Platform Platform
	// Protocol is the upload protocol, in FaultKind.Protocol's words
	// ("http", "espota"): the faults of another protocol do nothing here.
	Protocol string
	// OTAPort is the port the real firmware takes uploads on.
	OTAPort int
	// Web: the firmware serves a web app on Config.WebPort.
	Web bool
	// Instance is the default mDNS instance name; "" = the host name.
	Instance string
	// Knobs are the Config fields only this firmware (and the others that
	// name them) reads; a device of another personality refuses them.
	Knobs []Knob
	// BothCores: the firmware is built for arduino-esp32 and for
	// esp8266/Arduino alike (a library sketch, not a chip's SDK): Config.Chip
	// "esp8266" runs it on PlatformESP8266, any other chip on Platform.
	BothCores bool
	// Project and Version are the factory image's project and version
	// when the Config gives none; "" = "ots-fw-main" and "1.0.0".
	Project, Version string
	// ESP8266FS is the size of the filesystem area of its flash layout on
	// ESP8266 (FS_end - FS_start), where the core's ESP8266 layout has
	// none; 0 = none.
	ESP8266FS int64
}

// Knob is a Config field only some personalities read.
type Knob struct {
	// Field is the Config field's name: "APIUptime", "RollbackLater",
	// "Username", "Async", "NoOriginCheck", "NoLoop", "Release",
	// "SettingsPIN", "OTALock", "OTAAnySubnet", "Subnet",
	// "NoBootloaderOTA", "Language" or "Safeboot".
	Field string
	// Why says in a few words why the others do not read it.
	Why string
}

// knobSet reports whether c sets the named knob.
func knobSet(c *Config, field string) bool {
	switch field {
	case "APIUptime":
		return c.APIUptime
	case "RollbackLater":
		return c.RollbackLater
	case "Username":
		return c.Username != ""
	case "Async":
		return c.Async
	case "NoOriginCheck":
		return c.NoOriginCheck
	case "NoLoop":
		return c.NoLoop
	case "Release":
		return c.Release != ""
	case "SettingsPIN":
		return c.SettingsPIN
	case "OTALock":
		return c.OTALock
	case "OTAAnySubnet":
		return c.OTAAnySubnet
	case "Subnet":
		return c.Subnet.IsValid()
	case "NoBootloaderOTA":
		return c.NoBootloaderOTA
	case "Language":
		return c.Language != ""
	case "Safeboot":
		return c.Safeboot
	}
	return false
}

// knobFields are the fields knobSet knows, in the order they are checked.
var knobFields = []string{"RollbackLater", "APIUptime", "Username", "Async", "NoOriginCheck", "NoLoop",
	"Release", "SettingsPIN", "OTALock", "OTAAnySubnet", "Subnet", "NoBootloaderOTA", "Language", "Safeboot"}

// Checker is a Firmware with settings of its own to check (an ArduinoOTA
// core version, say); Start calls Check once the chip is resolved, before
// the defaults that depend on the name and address.
type Checker interface {
	Check(c *Config) error
}

// OptionsTaker is a Firmware with settings of its own (Config.Options):
// TakesOptions reports whether o is of its type (its Check validates them).
type OptionsTaker interface {
	TakesOptions(o any) bool
}

// Teller is a Firmware whose endpoints tell facts that Config.Omit can
// leave out (an HTTP status endpoint and its keys).
type Teller interface {
	// Omittable lists the field names Config.Omit accepts for its
	// endpoints on a device with or without Extensions and APIUptime.
	Omittable(extensions, apiUptime bool) []string
	// NotOmittable says in a few words why field, which the device's
	// firmware does not list as omittable, cannot be omitted on a device of
	// personality p (any personality, not only its own), or "" when the
	// field is none of its endpoints'.
	NotOmittable(p Personality, field string, extensions, apiUptime bool) string
}

// Platform is what a firmware is built on: it decides the flash layout,
// whether the bootloader rolls back, what an image must be, and when a new
// image confirms itself.
type Platform int

// Platforms.
const (
	// PlatformIDF is an ESP-IDF app: factory, ota_0 and ota_1 slots,
	// rollback on, images checked by esp_ota_end.
	PlatformIDF Platform = iota + 1
	// PlatformArduinoESP32 is an arduino-esp32 sketch: default.csv (app0,
	// app1, spiffs; no factory slot), and initArduino() marks a new image
	// valid before setup() unless the sketch defers it (Config.RollbackLater).
	PlatformArduinoESP32
	// PlatformESP8266 is an esp8266/Arduino sketch: no rollback, and images
	// checked for the magic byte (or gzip) and MD5 only.
	PlatformESP8266
)

func (p Platform) String() string {
	switch p {
	case PlatformIDF:
		return "esp-idf"
	case PlatformArduinoESP32:
		return "arduino-esp32"
	case PlatformESP8266:
		return "esp8266"
	}
	return "unknown"
}

// Port names one of a device's two configured ports.
type Port int

// Ports.
const (
	PortOTA Port = iota // Config.OTAPort
	PortWeb             // Config.WebPort; servers on it run only when it is not -1
	numPorts
)

// Server is one server a firmware runs after a boot: an HTTP server
// (Routes), a UDP one (Packet) or a plain TCP one (Stream).
type Server struct {
	// Name tells the server in logs ("ota", "web", "espota").
	Name string
	// Port is where it listens.
	Port Port
	// Routes make it a TCP server: the esp_http_server look-alike (httpd.go)
	// with these routes.
	Routes []Route
	// NotFound makes the TCP server an Arduino web server rather than
	// ESP-IDF's httpd (WebServer, ESP8266WebServer, ESPAsyncWebServer): it
	// answers every request no route takes, whatever its method (those
	// servers have no 405), and the request line and headers are read
	// leniently: any method token, no 414, 431 or 505, a header section of
	// up to 16 KiB (a longer one is dropped without an answer).
	NotFound func(*Request) error
	// Concurrent serves requests at once instead of one at a time
	// (ESPAsyncWebServer).
	Concurrent bool
	// Continue answers "Expect: 100-continue" with an interim 100 before
	// the body (ESPAsyncWebServer; the others never do).
	Continue bool
	// Packet makes it a UDP server on the device's socket for Port, which
	// stays bound for the device's life: Packet is called at boot, and
	// again whenever the server must be made anew (a refuse fault ended,
	// or it went Stale).
	Packet func(pc net.PacketConn) PacketServer
	// Stream makes it a plain TCP server (a protocol of its own, not HTTP):
	// each accepted connection is handed to Stream, one at a time, so a
	// second client waits in the listen backlog until the first is done
	// (and is reset by the device's next reboot if it is still queued).
	// ctx ends when the server stops; on a reset the connection is left
	// open and unanswered, so Stream must not close c once ctx is done.
	// The server closes c when Stream returns, unless the device resets.
	Stream func(ctx context.Context, c net.Conn)
}

// PacketServer is a UDP server on a device's socket, alive for one boot
// (or until it goes stale).
type PacketServer interface {
	Start()
	// Stop ends the server; the socket stays open (it is the device's).
	Stop()
	// Stale reports whether the faults it was made with changed: the core
	// then stops it and makes it anew (aborting a running session, so it
	// must say false when nothing that matters changed).
	Stale() bool
}

// The registry of personalities: sim registers every family it
// assembles; a family's own tests register theirs.
var registry struct {
	mu    sync.RWMutex
	order []Personality
	fws   map[Personality]Firmware
}

// Register makes firmwares known to Start, ParsePersonality and
// Personalities, in this order. Registering a name again replaces it in
// place.
func Register(fws ...Firmware) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.fws == nil {
		registry.fws = make(map[Personality]Firmware)
	}
	for _, fw := range fws {
		name := fw.Traits().Name
		if _, ok := registry.fws[name]; !ok {
			registry.order = append(registry.order, name)
		}
		registry.fws[name] = fw
	}
}

// Lookup returns the firmware of personality p.
func Lookup(p Personality) (Firmware, bool) {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	fw, ok := registry.fws[p]
	return fw, ok
}

// Personalities lists every personality, in documentation order.
func Personalities() []Personality {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	return slices.Clone(registry.order)
}

// defaultPersonality is what an empty Config.Personality means: the first
// registered (seed).
func defaultPersonality() Personality {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	if len(registry.order) == 0 {
		return ""
	}
	return registry.order[0]
}

// ParsePersonality reads a personality name (case-insensitive).
func ParsePersonality(s string) (Personality, error) {
	p := Personality(strings.ToLower(strings.TrimSpace(s)))
	if _, ok := Lookup(p); ok {
		return p, nil
	}
	return "", fmt.Errorf("unknown personality %q (want %s)", s, orList(Personalities()))
}

// traitsOf returns p's traits, the zero Traits when p is unknown.
func traitsOf(p Personality) Traits {
	if fw, ok := Lookup(p); ok {
		return fw.Traits()
	}
	return Traits{}
}

// HTTP reports whether the personality uploads over HTTP (seed, ots) rather
// than espota (arduino, esp8266).
func (p Personality) HTTP() bool { return traitsOf(p).Protocol == "http" }

// BothCores reports whether p is built for arduino-esp32 and esp8266/Arduino
// alike (the chip decides; Traits.BothCores).
func (p Personality) BothCores() bool { return traitsOf(p).BothCores }

// DefaultOTAPort is the port the real firmware listens on for p.
func (p Personality) DefaultOTAPort() int { return traitsOf(p).OTAPort }

// DefaultInstance is the mDNS instance name a device of p named name has
// unless told otherwise.
func DefaultInstance(p Personality, name string) string {
	if in := traitsOf(p).Instance; in != "" {
		return in
	}
	return name
}

// personalitiesWith lists the registered personalities for which keep holds,
// as "a or b" ("" when none).
func personalitiesWith(keep func(Traits) bool) string {
	var out []Personality
	for _, p := range Personalities() {
		if keep(traitsOf(p)) {
			out = append(out, p)
		}
	}
	return orList(out)
}

// orList joins names as "a, b or c".
func orList(ps []Personality) string {
	var b strings.Builder
	for i, p := range ps {
		switch {
		case i == 0:
		case i == len(ps)-1:
			b.WriteString(" or ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(string(p))
	}
	return b.String()
}

// checkKnobs refuses the knobs c's personality does not read.
func checkKnobs(c *Config, own Traits) error {
	for _, field := range knobFields {
		if !knobSet(c, field) || slices.ContainsFunc(own.Knobs, func(k Knob) bool { return k.Field == field }) {
			continue
		}
		why := ""
		owners := personalitiesWith(func(t Traits) bool {
			for _, k := range t.Knobs {
				if k.Field == field {
					if why == "" {
						why = k.Why
					}
					return true
				}
			}
			return false
		})
		if owners == "" {
			return fmt.Errorf("%s is for no personality here", field)
		}
		return fmt.Errorf("%s is for the %s personality (%s)", field, owners, why)
	}
	return nil
}
