package form

import (
	"errors"
	"strings"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// The form personalities.
const (
	// HTTPUpdateServer is a sketch with arduino-esp32's HTTPUpdateServer
	// or, with chip esp8266, esp8266/Arduino's ESP8266HTTPUpdateServer:
	// the form on GET /update, multipart POST /update on port 80.
	HTTPUpdateServer core.Personality = "httpupdateserver"
	// ESPEasy is ESPEasy (ESP32 or, with chip esp8266, ESP8266): the same
	// form without credentials, GET /json, its own pages.
	ESPEasy core.Personality = "espeasy"
)

// The firmwares of the form personalities.
var (
	HTTPUpdateServerFirmware core.Firmware = formFirmware{HTTPUpdateServer}
	ESPEasyFirmware          core.Firmware = formFirmware{ESPEasy}
)

// esp8266FS is the filesystem area (FS_end - FS_start) of the Arduino
// IDE's default ESP8266 layout, 4MB with a 2MB filesystem (derived from
// the board definitions; a board setting, not a library fact).
const esp8266FS = 0x1FA000

// webPort is where the sketches' web server listens.
const webPort = 80

type formFirmware struct{ p core.Personality }

func (f formFirmware) Traits() core.Traits {
	t := core.Traits{Name: f.p, Platform: core.PlatformArduinoESP32, BothCores: true, Protocol: "http",
		OTAPort: webPort, ESP8266FS: esp8266FS}
	if f.p == HTTPUpdateServer {
		t.Knobs = []core.Knob{
			{Field: "Username", Why: "only HTTPUpdateServer and ElegantOTA sketches ask for a user"},
			{Field: "NoOriginCheck", Why: "only arduino-esp32's HTTPUpdateServer checks Origin"},
			{Field: "RollbackLater", Why: "the others confirm themselves already"},
		}
	}
	return t
}

// Check refuses what an ESP8266 build cannot be.
func (f formFirmware) Check(c *core.Config) error {
	if core.PlatformOf(f.p, c.Chip) != core.PlatformESP8266 {
		return nil
	}
	switch {
	case c.NoOriginCheck:
		return errors.New("NoOriginCheck is for arduino-esp32's HTTPUpdateServer: the ESP8266 one checks no Origin")
	case c.RollbackLater:
		return errors.New("RollbackLater is for an arduino-esp32 sketch: an ESP8266 has no rollback")
	}
	return nil
}

// Servers: the sketch's one web server.
func (f formFirmware) Servers(e *core.Env) []core.Server {
	d := newDevice(e, f.p)
	srv := d.web.Server(d.routes())
	if f.p == ESPEasy {
		srv.NotFound = d.handleNotFound
	}
	return []core.Server{srv}
}

// Services: _http._tcp on the web port (ESPEasy; the WebUpdater examples
// add it too), plus nothing of ots-ota's: an _ota._tcp record would make a
// client send a raw body, which these firmwares never answer.
func (f formFirmware) Services(e *core.Env) []mdnsd.Service {
	return []mdnsd.Service{{Instance: e.Config().Instance, Type: "_http._tcp", Port: uint16(e.Port(core.PortOTA))}}
}

// Omittable: GET /ota/status when the sketch adds it (Extensions).
func (f formFirmware) Omittable(extensions, _ bool) []string {
	return arduino.OmittableStatus(extensions)
}

func (f formFirmware) NotOmittable(core.Personality, string, bool, bool) string { return "" }

// device is one boot of a form sketch: its web server, its Update class
// and HTTPUpdateServer's members.
type device struct {
	e       *core.Env
	p       core.Personality
	web     *arduino.Web
	up      *arduino.Update
	esp8266 bool

	// authenticated and updaterError are HTTPUpdateServer's members: set
	// by the last upload, read by the next POST's handler.
	authenticated bool
	updaterError  string
	// csrf: arduino-esp32's HTTPUpdateServer checks Origin.
	csrf bool
}

func newDevice(e *core.Env, p core.Personality) *device {
	esp8266 := e.Platform() == core.PlatformESP8266
	kind := arduino.WebServer
	if esp8266 {
		kind = arduino.ESP8266WebServer
	}
	return &device{e: e, p: p, web: arduino.NewWeb(kind, e), up: arduino.NewUpdate(e), esp8266: esp8266,
		csrf: p == HTTPUpdateServer && !esp8266 && !e.Config().NoOriginCheck}
}

func (d *device) routes() []core.Route {
	rs := []core.Route{
		{Method: "GET", Path: "/update", Handle: d.handlePage},
		{Method: "POST", Path: "/update", Handle: d.handleUpdate},
	}
	if d.esp8266 {
		rs = append(rs, core.Route{Method: "OPTIONS", Path: "/update", Handle: d.handleOptions})
	}
	if d.p == ESPEasy {
		rs = append(rs,
			core.Route{Method: "GET", Path: "/json", Handle: d.handleJSON},
			core.Route{Method: "GET", Path: "/", Handle: d.handleRoot})
	}
	return append(rs, arduino.StatusRoutes(d.e, d.web)...)
}

// credentials reports whether the sketch set a user and password (ESPEasy
// sets none for /update).
func (d *device) credentials() bool {
	c := d.e.Config()
	return d.p == HTTPUpdateServer && c.Username != "" && !c.Password.IsZero()
}

// cors are ESP8266HTTPUpdateServer's headers on its OPTIONS and POST answers.
func (d *device) cors() []core.Header {
	if !d.esp8266 {
		return nil
	}
	return []core.Header{{Name: "Access-Control-Allow-Headers", Value: "*"}, {Name: "Access-Control-Allow-Origin", Value: "*"}}
}

// handlePage is GET /update: the form, behind the credentials if set.
func (d *device) handlePage(r *core.Request) error {
	c := d.e.Config()
	if d.credentials() && !d.web.Authenticate(r, c.Username, c.Password.Reveal()) {
		return d.web.RequestAuth(r, false, "")
	}
	return d.web.Reply(r, 200, arduino.TypeHTML, d.page())
}

// handleOptions is ESP8266HTTPUpdateServer's preflight answer: no
// credentials asked (its check sits in an upload callback an OPTIONS
// never reaches).
func (d *device) handleOptions(r *core.Request) error {
	if !d.web.ReadBody(r, nil) {
		return core.ErrClose
	}
	return d.web.Reply(r, 200, arduino.TypeHTML, "y", d.cors()...)
}

// The form pages, byte for byte as the libraries send them: arduino-esp32's
// HTTPUpdateServer (its filesystem input also accepts .image),
// esp8266/Arduino's, and ESPEasy's ESP32 copy without the filesystem form.
const (
	pageHead = "<!DOCTYPE html>\n" +
		"     <html lang='en'>\n" +
		"     <head>\n" +
		"         <meta charset='utf-8'>\n" +
		"         <meta name='viewport' content='width=device-width,initial-scale=1'/>\n" +
		"     </head>\n" +
		"     <body>\n" +
		"     <form method='POST' action='' enctype='multipart/form-data'>\n" +
		"         Firmware:<br>\n" +
		"         <input type='file' accept='.bin,.bin.gz' name='firmware'>\n" +
		"         <input type='submit' value='Update Firmware'>\n" +
		"     </form>\n"
	pageFS = "     <form method='POST' action='' enctype='multipart/form-data'>\n" +
		"         FileSystem:<br>\n" +
		"         <input type='file' accept='%s' name='filesystem'>\n" +
		"         <input type='submit' value='Update FileSystem'>\n" +
		"     </form>\n"
	pageTail = "     </body>\n" +
		"     </html>"
)

func (d *device) page() string {
	switch {
	case d.p == ESPEasy && !d.esp8266:
		return pageHead + pageTail
	case d.esp8266:
		return pageHead + strings.Replace(pageFS, "%s", ".bin,.bin.gz", 1) + pageTail
	}
	return pageHead + strings.Replace(pageFS, "%s", ".bin,.bin.gz,.image", 1) + pageTail
}
