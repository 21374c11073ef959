package elegantota

import (
	"bytes"
	"compress/gzip"
	"errors"
	"sync"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// ElegantOTA is the personality: ElegantOTA v3's Demo sketch (AsyncDemo
// with Config.Async).
const ElegantOTA core.Personality = "elegantota"

// Firmware is the elegantota personality.
var Firmware core.Firmware = eoFirmware{}

// esp8266FS is the filesystem area of the Arduino IDE's default ESP8266
// layout (4MB, FS 2MB; a board setting, derived).
const esp8266FS = 0x1FA000

type eoFirmware struct{}

func (eoFirmware) Traits() core.Traits {
	return core.Traits{Name: ElegantOTA, Platform: core.PlatformArduinoESP32, BothCores: true, Protocol: "http",
		OTAPort: 80, ESP8266FS: esp8266FS, Knobs: []core.Knob{
			{Field: "Username", Why: "only HTTPUpdateServer and ElegantOTA sketches ask for a user"},
			{Field: "Async", Why: "only ElegantOTA has an async build"},
			{Field: "NoLoop", Why: "only ElegantOTA restarts from the sketch's loop()"},
			{Field: "RollbackLater", Why: "the others confirm themselves already"},
		}}
}

// Check refuses what an ESP8266 build cannot be.
func (eoFirmware) Check(c *core.Config) error {
	if c.RollbackLater && core.PlatformOf(ElegantOTA, c.Chip) == core.PlatformESP8266 {
		return errors.New("RollbackLater is for an arduino-esp32 sketch: an ESP8266 has no rollback")
	}
	return nil
}

// Servers: the sketch's one web server.
func (eoFirmware) Servers(e *core.Env) []core.Server {
	d := newDevice(e)
	return []core.Server{d.web.Server(d.routes())}
}

// Services: none; the demo sketches advertise nothing.
func (eoFirmware) Services(*core.Env) []mdnsd.Service { return nil }

// Omittable: GET /ota/status when the sketch adds it (Extensions).
func (eoFirmware) Omittable(extensions, _ bool) []string { return arduino.OmittableStatus(extensions) }

func (eoFirmware) NotOmittable(core.Personality, string, bool, bool) string { return "" }

// device is one boot of the sketch.
type device struct {
	e       *core.Env
	web     *arduino.Web
	up      *arduino.Update
	esp8266 bool
	async   bool

	mu sync.Mutex
	// errStr is ElegantOTA's _update_error_str: set by a failed begin or
	// end, never cleared, shown whenever Update has an error.
	errStr string
	// rebootAt ends the pending restart's wait; nil when none is pending.
	rebootAt chan struct{}
}

func newDevice(e *core.Env) *device {
	esp8266 := e.Platform() == core.PlatformESP8266
	kind := arduino.WebServer
	switch {
	case e.Config().Async:
		kind = arduino.Async
	case esp8266:
		kind = arduino.ESP8266WebServer
	}
	return &device{e: e, web: arduino.NewWeb(kind, e), up: arduino.NewUpdate(e), esp8266: esp8266, async: e.Config().Async}
}

func (d *device) routes() []core.Route {
	rs := []core.Route{
		{Method: "GET", Path: "/update", Handle: d.handlePage, Prefix: d.async},
		{Method: "GET", Path: "/ota/start", Handle: d.handleStart, Prefix: d.async},
		{Method: "POST", Path: "/ota/upload", Handle: d.handleUpload, Prefix: d.async},
		{Method: "GET", Path: "/", Handle: d.handleRoot},
	}
	return append(rs, arduino.StatusRoutes(d.e, d.web)...)
}

// authOK is ElegantOTA's check on every route: credentials only when both
// are set.
func (d *device) authOK(r *core.Request) bool {
	c := d.e.Config()
	if c.Username == "" || c.Password.IsZero() {
		return true
	}
	return d.web.Authenticate(r, c.Username, c.Password.Reveal())
}

// challenge is requestAuthentication(): Basic on the sync servers, Digest
// on the async one.
func (d *device) challenge(r *core.Request) error {
	d.e.RecordAuthFailure("http", r.Path(), r.Remote(), 401, "", "not authenticated")
	return d.web.RequestAuth(r, d.async, "")
}

// handleRoot is the demo sketch's own page.
func (d *device) handleRoot(r *core.Request) error {
	text := "Hi! This is ElegantOTA Demo."
	if d.async {
		text = "Hi! This is ElegantOTA AsyncDemo."
	}
	return d.web.Reply(r, 200, arduino.TypePlain, text)
}

// handlePage is GET /update: the gzip-compressed page, always with
// Content-Encoding: gzip.
func (d *device) handlePage(r *core.Request) error {
	if !d.authOK(r) {
		return d.challenge(r)
	}
	return d.web.Reply(r, 200, arduino.TypeHTML, string(pageGzip()), core.Header{Name: "Content-Encoding", Value: "gzip"})
}

// page is the sim's stand-in for ElegantOTA's page: what a detection
// reads (the title), what a browser does (MD5 of the file, /ota/start,
// then the file as field "file" to /ota/upload).
const page = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>ElegantOTA Lite</title>
</head>
<body>
<h1>OTA update</h1>
<select id="mode"><option value="fr">Firmware</option><option value="fs">Filesystem / LittleFS</option></select>
<input type="file" id="file" accept=".bin,.bin.gz">
<p id="status"></p>
<script>
document.getElementById("file").onchange = async function () {
  const f = this.files[0], mode = document.getElementById("mode").value;
  const out = document.getElementById("status");
  if (!f.name.endsWith(".bin")) { out.textContent = "Please select a .bin file"; return; }
  // ElegantOTA's page adds &hash= with the file's MD5, which the device
  // drops unchecked; this stand-in leaves it out.
  const s = await fetch("/ota/start?mode=" + mode);
  if (!s.ok) { out.textContent = "Start OTA process failed"; return; }
  const fd = new FormData(); fd.append("file", f, f.name);
  const x = new XMLHttpRequest();
  x.onload = () => out.textContent = x.status === 200 ? "Update successful" :
    x.status === 400 ? x.responseText : "Server returned status code " + x.status;
  x.open("POST", "/ota/upload"); x.send(fd);
};
</script>
</body>
</html>
`

var pageOnce = sync.OnceValue(func() []byte {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zw.Write([]byte(page))
	zw.Close()
	return b.Bytes()
})

// pageGzip is the page as the device stores it.
func pageGzip() []byte { return pageOnce() }
