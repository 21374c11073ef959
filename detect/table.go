package detect

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
)

// Protocol is how an image travels to a device: the values of --protocol,
// of the inventory's protocol: and of the JSON "protocol" field.
type Protocol string

// The protocols ots-ota speaks.
const (
	// HTTP is a raw POST of the image as the body (device-contract.md §2):
	// the seed and OTS firmware. Never multipart.
	HTTP Protocol = "http"
	// Espota is Arduino's espota (UDP invitation, TCP connect-back).
	Espota Protocol = "espota"
)

// The web uploaders' protocols (form and elegantota spoken since issue
// 18, wled and tasmota since issue 19), and the values reserved for the
// families ots-ota recognises but does not speak yet.
const (
	// ProtoForm: a multipart POST of the Arduino web uploaders
	// (HTTPUpdateServer, ESP8266HTTPUpdateServer, ESPEasy; ElegantOTA v2's
	// row names it, unspoken).
	ProtoForm Protocol = "form"
	// ProtoElegantOTA: ElegantOTA v3 (GET /ota/start, multipart POST /ota/upload).
	ProtoElegantOTA Protocol = "elegantota"
	// ProtoWLED: WLED's multipart POST /update with its gates.
	ProtoWLED Protocol = "wled"
	// ProtoTasmota: Tasmota's /u2 upload (or its /cm OtaUrl pull).
	ProtoTasmota Protocol = "tasmota"
	// ProtoESPHome: ESPHome's native OTA over TCP.
	ProtoESPHome Protocol = "esphome"
)

// Family is a kind of device firmware, as the table tells them apart.
type Family string

// The families of the table (docs/protocols/README.md).
const (
	// FamilySeed: the seed firmware, or any firmware with its raw POST
	// /update on ESP-IDF's httpd or ots-ota's GET /ota/status
	// (docs/firmware.md).
	FamilySeed Family = "seed"
	// FamilyOTS: the OTS firmware as shipped (raw POST on 3232, web app
	// with /api/status on 80).
	FamilyOTS Family = "ots"
	// FamilyArduinoOTA: a sketch running ArduinoOTA (espota).
	FamilyArduinoOTA Family = "arduinoota"

	// FamilyWebUploader: a web uploader no other row names: a multipart
	// form with a file input on GET /update, or a 401 there.
	FamilyWebUploader      Family = "webuploader"
	FamilyHTTPUpdateServer Family = "httpupdateserver"
	FamilyElegantOTA2      Family = "elegantota2"
	FamilyElegantOTA3      Family = "elegantota3"
	FamilyESPEasy          Family = "espeasy"
	FamilyWLED             Family = "wled"
	FamilyTasmota          Family = "tasmota"
	FamilyESPHome          Family = "esphome"
)

// ProbeKind is what kind of packet a probe is.
type ProbeKind string

// The probe kinds.
const (
	KindTCP  ProbeKind = "tcp-connect" // a TCP connect, closed at once; no byte sent
	KindUDP  ProbeKind = "udp-empty"   // one empty UDP datagram to the OTA port
	KindMDNS ProbeKind = "mdns"        // mDNS queries (PTR, SRV, TXT, A, AAAA)
	KindHTTP ProbeKind = "http"        // one HTTP request, no body, no credentials
)

// Probe is one packet (or request) detection may send.
type Probe struct {
	Kind ProbeKind
	// Method and Target are an HTTP probe's request line, byte for byte.
	Method, Target string
	// Referer: the request carries "Referer: http://HOST/" (HOST the
	// address asked), which Tasmota's /cm requires.
	Referer bool
}

func (p Probe) String() string {
	if p.Kind != KindHTTP {
		return string(p.Kind)
	}
	s := p.Method + " " + p.Target
	if p.Referer {
		s += " with Referer"
	}
	return s
}

// The HTTP probes, in the order the ladder may send them.
var (
	probeUpdate     = Probe{Kind: KindHTTP, Method: "GET", Target: "/update"}
	probeOTAStatus  = Probe{Kind: KindHTTP, Method: "GET", Target: "/ota/status"}
	probeAPIStatus  = Probe{Kind: KindHTTP, Method: "GET", Target: "/api/status"}
	probeRoot       = Probe{Kind: KindHTTP, Method: "GET", Target: "/"}
	probeJSONInfo   = Probe{Kind: KindHTTP, Method: "GET", Target: "/json/info"}
	probeJSON       = Probe{Kind: KindHTTP, Method: "GET", Target: "/json"}
	probeIdentity   = Probe{Kind: KindHTTP, Method: "GET", Target: "/update/identity"}
	probeOptions    = Probe{Kind: KindHTTP, Method: "OPTIONS", Target: "/update"}
	probeTasmotaCmd = Probe{Kind: KindHTTP, Method: "GET", Target: "/cm?cmnd=Status%200", Referer: true}
	probeTCP        = Probe{Kind: KindTCP}
	probeUDP        = Probe{Kind: KindUDP}
	probeMDNS       = Probe{Kind: KindMDNS}
)

// allowedProbes is every probe detection may ever send (issue 17), and
// nothing else is sent to a device before its upload: all read-only, none
// with credentials. Never probes: ElegantOTA v3's /ota/start (starts an
// update), WLED's /update?revert (rolls back), Tasmota's /up, /rs, /u1 and
// Upgrade (change state), an espota invitation (starts a session), and GET
// / with a query (Tasmota's /?rst restarts). Unexported so that no caller
// can add to it; AllowedProbes gives a copy.
var allowedProbes = []Probe{
	probeTCP, probeUDP, probeMDNS,
	probeOTAStatus, probeAPIStatus, probeRoot, probeJSONInfo, probeJSON,
	probeUpdate, probeIdentity, probeOptions, probeTasmotaCmd,
}

// AllowedProbes is every probe detection may ever send, in a fresh slice.
func AllowedProbes() []Probe { return slices.Clone(allowedProbes) }

// Allowed reports whether p is one of AllowedProbes. Detector.Detect sends
// nothing else.
func Allowed(p Probe) bool { return slices.Contains(allowedProbes, p) }

// Row is one family of the detection table.
type Row struct {
	Family Family
	// Name is how messages name it.
	Name string
	// Protocol is the protocol its upload takes (reserved ones for the
	// families not spoken yet).
	Protocol Protocol
	// Spoken: ots-ota can update it.
	Spoken bool
	// Services are mDNS service types that name the family by themselves.
	Services []string
	// Marks are its fingerprints: which probe, what answer.
	Marks []Mark
	// Unspoken is what ots-ota does not speak yet, in the refusal; "" = Name.
	Unspoken string
	// Hint is advice added when a device of the family is refused.
	Hint string
	// EspotaHint is advice about the family's ArduinoOTA builds, left out
	// where the device's UDP port was seen closed.
	EspotaHint string
}

// Mark is one fingerprint: an answer to Probe that names the family.
type Mark struct {
	Probe Probe
	// Says is the answer that matches, as messages quote it.
	Says string
	// match tells whether an answer matches; nil for non-HTTP marks.
	match func(Answer) bool
}

// esphomeHint: an ESPHome device auto does not choose (no _esphomelib._tcp
// record, no inventory protocol:) is named by the user.
const esphomeHint = "auto chooses ESPHome only from its _esphomelib._tcp mDNS record or the inventory's protocol: esphome; name it with --protocol esphome (HOST:PORT for its OTA port)"

// webHint is the advice for the web uploaders: what works today.
const webHint = "update it from its web page at /update, or build it with ArduinoOTA and use --protocol espota"

// webUploaderHint: a web uploader no probe named (behind a password, or a
// form of its own): the user may name its protocol.
const webUploaderHint = "if it runs HTTPUpdateServer, ESPEasy or ElegantOTA v3, name it with --protocol form or --protocol elegantota (and --user, --password); else " + webHint

// table is the detection table: the families ots-ota tells apart, spoken
// first. docs/protocols/README.md is its prose, with sources. Unexported
// so that no caller can change it; Table gives a copy.
var table = []Row{
	{Family: FamilySeed, Name: "seed firmware (raw POST)", Protocol: HTTP, Spoken: true, Services: []string{"_ota._tcp"},
		Marks: []Mark{
			{Probe: probeOTAStatus, Says: "ots-ota's status JSON", match: isOTAStatus},
			{Probe: probeUpdate, Says: "405, a POST-only /update as ESP-IDF's httpd answers", match: isPostOnly},
		}},
	{Family: FamilyOTS, Name: "OTS firmware", Protocol: HTTP, Spoken: true,
		Marks: []Mark{{Probe: probeAPIStatus, Says: "the OTS web app's JSON with firmwareVersion", match: isAPIStatus}}},
	{Family: FamilyArduinoOTA, Name: "ArduinoOTA", Protocol: Espota, Spoken: true, Services: []string{"_arduino._tcp"},
		Marks: []Mark{{Probe: probeUDP, Says: "silence to one empty datagram, after TCP refused"}}},
	// Spoken, but chosen by auto only from its own mDNS record or the
	// inventory's protocol: (the magic never goes to a port nothing named
	// ESPHome's); a fingerprint alone refuses with esphomeHint.
	{Family: FamilyESPHome, Name: "ESPHome", Protocol: ProtoESPHome, Spoken: true, Services: []string{"_esphomelib._tcp"},
		Marks: []Mark{{Probe: probeUpdate, Says: "the single byte 0x80, its native OTA's bad-magic error, not HTTP", match: isESPHomeByte}},
		Hint:  esphomeHint},
	{Family: FamilyTasmota, Name: "Tasmota", Protocol: ProtoTasmota, Spoken: true,
		Marks: []Mark{
			{Probe: probeRoot, Says: "Server: Tasmota/…", match: isTasmotaServer},
			{Probe: probeTasmotaCmd, Says: "Tasmota's Status JSON", match: isTasmotaStatus},
		}},
	{Family: FamilyElegantOTA2, Name: "ElegantOTA v2", Protocol: ProtoForm,
		Marks: []Mark{{Probe: probeIdentity, Says: `{"id":…,"hardware":…}`, match: isElegantIdentity}},
		Hint:  webHint},
	{Family: FamilyElegantOTA3, Name: "ElegantOTA v3", Protocol: ProtoElegantOTA, Spoken: true,
		Marks: []Mark{{Probe: probeUpdate, Says: "its gzipped ElegantOTA page", match: isElegantPage}}},
	{Family: FamilyHTTPUpdateServer, Name: "HTTPUpdateServer", Protocol: ProtoForm, Spoken: true,
		Marks: []Mark{
			{Probe: probeUpdate, Says: "the HTTPUpdateServer form with its file input firmware", match: isUpdateForm},
			{Probe: probeOptions, Says: "200 y with Access-Control-Allow-Origin: *, as ESP8266HTTPUpdateServer does", match: isUpdateOptions},
		}},
	{Family: FamilyESPEasy, Name: "ESPEasy", Protocol: ProtoForm, Spoken: true,
		Marks: []Mark{{Probe: probeJSON, Says: "ESPEasy's JSON with System: Build or Git Build", match: isESPEasyJSON}}},
	{Family: FamilyWLED, Name: "WLED", Protocol: ProtoWLED, Spoken: true, Services: []string{"_wled._tcp"},
		Marks: []Mark{{Probe: probeJSONInfo, Says: `"brand":"WLED"`, match: isWLEDInfo}}},
	// Last: asked only when no row above named the device.
	{Family: FamilyWebUploader, Name: "a web uploader", Protocol: ProtoForm, Unspoken: "a web uploader it cannot name",
		Marks: []Mark{
			{Probe: probeUpdate, Says: "a multipart form with a file input", match: isUploadForm},
			{Probe: probeUpdate, Says: "401 asking for a password, and no later probe named the family", match: isLogin},
		},
		Hint: webUploaderHint},
}

// Table is the detection table, a copy: changing it changes nothing.
func Table() []Row {
	out := make([]Row, len(table))
	for i, r := range table {
		out[i] = r.clone()
	}
	return out
}

// RowOf is a copy of the table's row for f; false when f is not in the
// table.
func RowOf(f Family) (Row, bool) {
	for _, r := range table {
		if r.Family == f {
			return r.clone(), true
		}
	}
	return Row{}, false
}

func (r Row) clone() Row {
	r.Services = slices.Clone(r.Services)
	r.Marks = slices.Clone(r.Marks)
	return r
}

// row is the table's row for f, read-only; the zero Row when f is not in it.
func row(f Family) Row {
	for _, r := range table {
		if r.Family == f {
			return r
		}
	}
	return Row{}
}

// rowForService is the row whose own mDNS service svc is.
func rowForService(svc string) (Row, bool) {
	for _, r := range table {
		if slices.Contains(r.Services, svc) {
			return r, true
		}
	}
	return Row{}, false
}

// markFor is the mark of family f for probe p.
func markFor(f Family, p Probe) Mark {
	for _, m := range row(f).Marks {
		if m.Probe == p {
			return m
		}
	}
	return Mark{Probe: p}
}

// matches reports whether a is family f's mark for probe p.
func matches(f Family, p Probe, a *Answer) bool {
	m := markFor(f, p)
	return a != nil && m.match != nil && m.match(*a)
}

// The fingerprints. Each reads one answer; none trusts more than it needs.

func jsonObject(b []byte) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(bytes.TrimSpace(b), &m) != nil {
		return nil
	}
	return m
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// isOTAStatus: GET /ota/status answered ots-ota's JSON (device-contract.md
// §4): a version and at least one of the slot facts.
func isOTAStatus(a Answer) bool {
	if a.Status != 200 {
		return false
	}
	m := jsonObject(a.Body)
	if _, ok := jsonString(m["version"]); !ok {
		return false
	}
	for _, k := range []string{"state", "running", "project", "elf_sha256"} {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// isPostOnly: GET /update answered 405, as ESP-IDF's httpd does for a URI
// registered for POST only (the seed's and OTS firmware's upload handler);
// every web uploader of the table serves GET /update, and Arduino's web
// servers answer an unregistered method with 404, not 405.
func isPostOnly(a Answer) bool { return a.Status == 405 }

// isAPIStatus: the OTS web app's GET /api/status (device-contract.md §1).
func isAPIStatus(a Answer) bool {
	if a.Status != 200 {
		return false
	}
	_, ok := jsonString(jsonObject(a.Body)["firmwareVersion"])
	return ok
}

// isESPHomeByte: ESPHome's native OTA reads 5 bytes, finds no magic and
// answers the one error byte 0x80 before it closes (uploaders.md §8.2).
func isESPHomeByte(a Answer) bool { return len(a.Raw) == 1 && a.Raw[0] == 0x80 }

// isTasmotaServer: every Tasmota page carries Server: Tasmota/<version>
// (<hardware>) (uploaders.md §6).
func isTasmotaServer(a Answer) bool {
	return strings.HasPrefix(a.Header.Get("Server"), "Tasmota/")
}

// isTasmotaStatus: /cm?cmnd=Status 0 answered Tasmota's status sections,
// or its 401 JSON asking for user and password. The warning's text is
// translated per build language (de_DE: "Benötige user=<Benutzername>&…"),
// its key and the query words user= and password= are not.
func isTasmotaStatus(a Answer) bool {
	if isTasmotaServer(a) {
		return true
	}
	m := jsonObject(a.Body)
	if _, ok := m["StatusFWR"]; ok && a.Status == 200 {
		return true
	}
	w, ok := jsonString(m["WARNING"])
	return ok && a.Status == 401 && strings.Contains(w, "user=") && strings.Contains(w, "password=")
}

// isElegantIdentity: ElegantOTA v2's GET /update/identity.
func isElegantIdentity(a Answer) bool {
	if a.Status != 200 {
		return false
	}
	m := jsonObject(a.Body)
	_, id := jsonString(m["id"])
	hw, ok := jsonString(m["hardware"])
	return id && ok && (hw == "ESP32" || hw == "ESP8266")
}

// isElegantPage: ElegantOTA's GET /update is always gzip-encoded and names
// it (v3.1.7: <title>ElegantOTA Lite</title>).
func isElegantPage(a Answer) bool {
	return a.Status == 200 && a.Gzip && bytes.Contains(a.Body, []byte("ElegantOTA"))
}

// fileInput is an HTML file input; firmwareInput one named firmware.
var (
	fileInput     = regexp.MustCompile(`(?is)<input\b[^>]*\btype\s*=\s*["']?file\b`)
	firmwareInput = regexp.MustCompile(`(?is)<input\b[^>]*\bname\s*=\s*["']?firmware\b`)
)

// isUploadForm: a web uploader's page: a multipart form with a file input,
// whatever the input's name (older ESP8266HTTPUpdateServer releases named
// it update, as do WLED and many sketches of their own).
func isUploadForm(a Answer) bool {
	return a.Status == 200 && bytes.Contains(bytes.ToLower(a.Body), []byte("multipart/form-data")) && fileInput.Match(a.Body)
}

// isUpdateForm: the HTTPUpdateServer page (arduino-esp32, ESP8266 and the
// copy bundled with ESPEasy): an upload form whose file input is named
// firmware.
func isUpdateForm(a Answer) bool { return isUploadForm(a) && firmwareInput.Match(a.Body) }

// isLogin: 401, a web server asking for credentials. On GET /update it
// hides a web uploader: the seed and OTS firmware answer 405 there.
func isLogin(a Answer) bool { return a.Status == 401 }

// isUpdateOptions: ESP8266HTTPUpdateServer's OPTIONS route (esp8266/Arduino
// core 3.1.0 and later), which checks no credentials.
func isUpdateOptions(a Answer) bool {
	return a.Status == 200 && strings.TrimSpace(string(a.Body)) == "y" && a.Header.Get("Access-Control-Allow-Origin") == "*"
}

// isESPEasyJSON: ESPEasy's GET /json, unauthenticated: a System object with
// its build number or git build.
func isESPEasyJSON(a Answer) bool {
	if a.Status != 200 {
		return false
	}
	sys := jsonObject(jsonObject(a.Body)["System"])
	_, b := sys["Build"]
	_, g := sys["Git Build"]
	return b || g
}

// isWLEDInfo: WLED's GET /json/info names its brand.
func isWLEDInfo(a Answer) bool {
	if a.Status != 200 {
		return false
	}
	b, ok := jsonString(jsonObject(a.Body)["brand"])
	return ok && b == "WLED"
}
