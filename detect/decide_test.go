package detect

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// Answers for the table tests.
func status(code int, body string) Answer {
	return Answer{Status: code, Header: http.Header{}, Body: []byte(body)}
}

func withHeader(a Answer, k, v string) Answer { a.Header.Set(k, v); return a }

func gzipped(a Answer) Answer { a.Gzip = true; return a }

var (
	none       = Answer{None: true, Note: "closed without an answer"}
	notFound   = status(404, "Not Found")
	postOnly   = status(405, "Specified method is invalid for this resource")
	otaStatus  = status(200, `{"project":"ots-fw-main","version":"1.0.0","state":"valid","running":"ota_0"}`)
	apiStatus  = status(200, `{"firmwareVersion":"2.1.0","mode":"normal"}`)
	husForm    = status(200, "<form method='POST' action='' enctype='multipart/form-data'>Firmware:<br><input type='file' accept='.bin,.bin.gz' name='firmware'><input type='submit' value='Update Firmware'></form>")
	espeasy    = status(200, `{"System":{"Build":20100,"Git Build":"mega-20241019","Unit Name":"kitchen"},"WiFi":{}}`)
	wledInfo   = status(200, `{"ver":"0.15.5","vid":2504110,"brand":"WLED","product":"FOSS","arch":"esp32"}`)
	elegant3   = gzipped(status(200, "<!DOCTYPE html><html><head><title>ElegantOTA Lite</title>"))
	identity   = status(200, `{"id":"3C71BF4A2B10","hardware":"ESP32"}`)
	needAuth   = withHeader(status(401, ""), "WWW-Authenticate", `Basic realm="Login Required"`)
	husOptions = withHeader(status(200, "y"), "Access-Control-Allow-Origin", "*")
	tasmotaCm  = withHeader(status(200, `{"Status":{"Module":0},"StatusFWR":{"Version":"14.3.0(tasmota)"}}`), "Server", "Tasmota/14.3.0 (ESP32)")
	tasmotaRaw = status(401, `{"WARNING":"Need user=<username>&password=<password>"}`)
	esphome    = Answer{Raw: []byte{0x80}, Note: "not an HTTP answer"}
	oldForm    = status(200, "<html><body><form method='POST' action='' enctype='multipart/form-data'><input type='file' name='update'><input type='submit' value='Update'></form></body></html>")
	digestAuth = withHeader(status(401, ""), "WWW-Authenticate", `Digest realm="Login Required", qop="auth", nonce="0a1b", opaque="2c3d"`)
	portOK     = PortAnswer{Kind: Accepted, Addr: "10.0.0.5:3232"}
	portUDP    = PortAnswer{Kind: Refused, Addr: "10.0.0.5:3232", UDPAsked: true}
	portDead   = PortAnswer{Kind: Closed, Addr: "10.0.0.5:3232", UDPAsked: true}
	portSilent = PortAnswer{Kind: Failed, Addr: "10.0.0.5:3232", TimedOut: true}
)

func up(p Probe) Step  { return Step{Probe: p} }
func web(p Probe) Step { return Step{Probe: p, Web: true} }

type step struct {
	s Step
	a Answer
}

// run plays Decide against scripted answers, as Detect does against a
// device: every probe Decide asks for must be in the script (else the
// test fails: detection asked something unexpected), and the probes asked
// are returned in order.
func run(t *testing.T, ev Evidence, port *PortAnswer, script []step) (Decision, []Step) {
	t.Helper()
	var asked []Step
	for range maxSteps {
		d := Decide(ev)
		if d.Need == nil {
			return d, asked
		}
		s := *d.Need
		asked = append(asked, s)
		if !Allowed(s.Probe) {
			t.Fatalf("Decide asked %s, which is not an allowed probe", s.Probe)
		}
		if s.Probe.Kind == KindTCP {
			if port == nil {
				t.Fatalf("Decide asked for the port probe, not in the script (asked %v)", asked)
			}
			ev = ev.WithPort(*port)
			continue
		}
		found := false
		for _, st := range script {
			if st.s == s {
				ev, found = ev.WithAnswer(s, st.a), true
				break
			}
		}
		if !found {
			// An unscripted rung answers 404, as a web server without it does.
			ev = ev.WithAnswer(s, notFound)
		}
	}
	t.Fatalf("Decide did not settle (asked %v)", asked)
	return Decision{}, nil
}

// TestDecide: evidence combinations and their precedence: the word, the
// inventory, mDNS, the port probe, the fingerprints.
func TestDecide(t *testing.T) {
	flag := func(p Protocol) Evidence { return Evidence{Word: p, WordFrom: "--protocol"} }
	svc := func(s string, txt map[string]string) Evidence { return Evidence{Service: s, TXT: txt} }
	with := func(ev Evidence, s string, txt map[string]string) Evidence { ev.Service, ev.TXT = s, txt; return ev }
	for _, tc := range []struct {
		name    string
		ev      Evidence
		port    *PortAnswer
		script  []step
		want    Protocol // "" with refused or fail
		family  Family
		refused bool
		fail    FailKind
		why     string // a part of Why (or of the failure's reason)
		asked   int    // probes asked; -1: do not check
		onWeb   bool   // the upload goes to the web port
		chip    string // the chip the fingerprint told
	}{
		// The word: espota wins over everything, and sends nothing.
		{name: "--protocol espota", ev: flag(Espota), want: Espota, why: "espota set by --protocol"},
		{name: "--protocol espota beats _ota._tcp", ev: with(flag(Espota), "_ota._tcp", nil), want: Espota},
		{name: "--protocol espota to a WLED (its ArduinoOTA)", ev: with(flag(Espota), "_wled._tcp", map[string]string{"mac": "aabbccddeeff"}), want: Espota},
		{name: "inventory espota", ev: Evidence{Word: Espota, WordFrom: "the inventory"}, want: Espota, why: "the inventory"},
		{name: "a word no row speaks", ev: flag(Protocol("zigbee")), refused: true, why: "names protocol zigbee, which ots-ota does not speak yet"},
		// Issue 19: wled and tasmota by word decide at once, with their family.
		{name: "--protocol wled: no probe", ev: flag(ProtoWLED), want: ProtoWLED, family: FamilyWLED, why: "wled set by --protocol", asked: 0},
		{name: "inventory tasmota: no probe", ev: Evidence{Word: ProtoTasmota, WordFrom: "the inventory"}, want: ProtoTasmota, family: FamilyTasmota, why: "tasmota set by the inventory", asked: 0},
		{name: "--protocol tasmota beats _wled._tcp", ev: with(flag(ProtoTasmota), "_wled._tcp", nil), want: ProtoTasmota, family: FamilyTasmota, asked: 0},
		// The word http skips the port probe, not the fingerprints.
		{name: "--protocol http, seed", ev: flag(HTTP), script: []step{{up(probeUpdate), postOnly}}, want: HTTP, family: FamilySeed, why: "http set by --protocol; GET /update answered 405", asked: 1},
		{name: "--protocol http, _ota._tcp: no probe", ev: with(flag(HTTP), "_ota._tcp", nil), want: HTTP, family: FamilySeed, asked: 0},
		// A URL (or --protocol http) to a web uploader ots-ota speaks: its
		// own form, never a raw body (issue 18).
		{name: "URL to an ESP8266HTTPUpdateServer", ev: Evidence{Word: HTTP, WordFrom: "the URL (/update)"}, script: []step{{up(probeUpdate), husForm}, {up(probeOptions), husOptions}}, want: ProtoForm, family: FamilyHTTPUpdateServer, chip: "esp8266", why: "looks like HTTPUpdateServer (GET /update answered the HTTPUpdateServer form", asked: 3},
		{name: "URL to an arduino-esp32 HTTPUpdateServer", ev: Evidence{Word: HTTP, WordFrom: "the URL (/update)"}, script: []step{{up(probeUpdate), husForm}}, want: ProtoForm, family: FamilyHTTPUpdateServer, why: "looks like HTTPUpdateServer", asked: 3},
		{name: "URL to ESPEasy", ev: Evidence{Word: HTTP, WordFrom: "the URL (/update)"}, script: []step{{up(probeUpdate), husForm}, {up(probeJSON), espeasy}}, want: ProtoForm, family: FamilyESPEasy, why: "looks like ESPEasy (GET /json answered ESPEasy's JSON", asked: 2},
		{name: "--protocol form: no probe", ev: flag(ProtoForm), want: ProtoForm, why: "form set by --protocol", asked: 0},
		{name: "inventory elegantota: no probe", ev: Evidence{Word: ProtoElegantOTA, WordFrom: "the inventory"}, want: ProtoElegantOTA, why: "elegantota set by the inventory", asked: 0},
		{name: "nothing listens, HTTPUpdateServer on the web port", port: &portDead, script: []step{{web(probeUpdate), husForm}}, want: ProtoForm, family: FamilyHTTPUpdateServer, onWeb: true, asked: 4},
		{name: "nothing listens, ESP8266HTTPUpdateServer on the web port", port: &portDead, script: []step{{web(probeUpdate), husForm}, {web(probeOptions), husOptions}}, want: ProtoForm, family: FamilyHTTPUpdateServer, chip: "esp8266", onWeb: true, asked: 4},
		{name: "nothing listens, ESPEasy on the web port", port: &portDead, script: []step{{web(probeUpdate), husForm}, {web(probeJSON), espeasy}}, want: ProtoForm, family: FamilyESPEasy, onWeb: true, asked: 3},
		{name: "nothing listens, ElegantOTA v3 on the web port", port: &portDead, script: []step{{web(probeUpdate), elegant3}}, want: ProtoElegantOTA, family: FamilyElegantOTA3, onWeb: true, asked: 3},
		{name: "nothing listens, ElegantOTA v2 on the web port", port: &portDead, script: []step{{web(probeUpdate), elegant3}, {web(probeIdentity), identity}}, refused: true, family: FamilyElegantOTA2, asked: 3},
		{name: "URL to the OTS web app", ev: Evidence{Word: HTTP, WordFrom: "the URL (/ota/upload)"}, script: []step{{web(probeAPIStatus), apiStatus}}, want: HTTP, family: FamilyOTS, asked: 3},
		{name: "URL to an unknown raw-POST server", ev: Evidence{Word: HTTP, WordFrom: "the URL (/fw)"}, want: HTTP, why: "no family fingerprint matched", asked: 7},
		{name: "http word, silent upload port", ev: flag(HTTP), script: []step{{up(probeUpdate), none}}, want: HTTP, why: "got no HTTP answer", asked: 1},
		// mDNS.
		{name: "_ota._tcp", ev: svc("_ota._tcp", nil), want: HTTP, family: FamilySeed, asked: 0},
		{name: "_ota._tcp path", ev: svc("_ota._tcp.local.", map[string]string{"path": "/fw"}), want: HTTP, asked: 0},
		{name: "ArduinoOTA TXT", ev: svc("_arduino._tcp", map[string]string{"board": "esp32s3", "auth_upload": "yes"}), want: Espota, family: FamilyArduinoOTA, why: "mDNS TXT", asked: 0},
		{name: "_wled._tcp", ev: svc("_wled._tcp", map[string]string{"mac": "aabbccddeeff"}), want: ProtoWLED, family: FamilyWLED, why: "looks like WLED (mDNS service _wled._tcp)", asked: 0},
		// ESPHome (issue 20): chosen from its own record, or the word; never
		// by a fingerprint alone, and nothing is probed.
		{name: "_esphomelib._tcp", ev: svc("_esphomelib._tcp", map[string]string{"version": "2026.7.0"}), want: ProtoESPHome, family: FamilyESPHome, why: "mDNS service _esphomelib._tcp", asked: 0},
		{name: "_esphomelib._tcp ESP8266 tells the chip", ev: svc("_esphomelib._tcp", map[string]string{"platform": "ESP8266"}), want: ProtoESPHome, family: FamilyESPHome, chip: "esp8266", asked: 0},
		{name: "_esphomelib._tcp ESP32 tells no variant", ev: svc("_esphomelib._tcp", map[string]string{"platform": "ESP32"}), want: ProtoESPHome, family: FamilyESPHome, asked: 0},
		{name: "_esphomelib._tcp with --protocol http", ev: with(flag(HTTP), "_esphomelib._tcp", nil), refused: true, family: FamilyESPHome, why: "--protocol esphome", asked: 0},
		{name: "--protocol esphome: no probe", ev: flag(ProtoESPHome), want: ProtoESPHome, family: FamilyESPHome, why: "esphome set by --protocol", asked: 0},
		{name: "inventory esphome: no probe", ev: Evidence{Word: ProtoESPHome, WordFrom: "the inventory"}, want: ProtoESPHome, family: FamilyESPHome, why: "esphome set by the inventory", asked: 0},
		{name: "ESPHome's _http._tcp TXT", ev: svc("_http._tcp", map[string]string{"version": "2026.7.0", "mac": "aabbccddeeff", "config_hash": "0a1b2c3d"}), refused: true, family: FamilyESPHome, why: "--protocol esphome", asked: 0},
		{name: "_wled._tcp with --protocol http: WLED's own protocol", ev: with(flag(HTTP), "_wled._tcp", nil), want: ProtoWLED, family: FamilyWLED, asked: 0},
		// OTS: _arduino._tcp without TXT, TCP accepted.
		{name: "OTS behind _arduino._tcp", ev: svc("_arduino._tcp", nil), port: &portOK, want: HTTP, family: FamilyOTS, asked: 1},
		{name: "_arduino._tcp without TXT, refused", ev: svc("_arduino._tcp", nil), port: &portUDP, want: Espota, asked: 1},
		// Only _http._tcp: a positive fingerprint or nothing.
		{name: "_http._tcp printer", ev: svc("_http._tcp", nil), refused: true, why: "nothing is sent to a host without a device family", asked: 7},
		{name: "_http._tcp silent", ev: svc("_http._tcp", nil), script: []step{{up(probeUpdate), none}}, refused: true, asked: 1},
		{name: "_http._tcp Tasmota", ev: svc("_http._tcp", nil), script: []step{{up(probeRoot), withHeader(status(200, "<html>"), "Server", "Tasmota/14.3.0 (ESP8266EX)")}}, want: ProtoTasmota, family: FamilyTasmota, why: "looks like Tasmota (GET / answered with Server: Tasmota/14.3.0)", asked: 4},
		{name: "_http._tcp: 405 alone is no fingerprint", ev: svc("_http._tcp", nil), script: []step{{up(probeUpdate), postOnly}}, refused: true, why: "nothing is sent to a host without a device family", asked: 7},
		{name: "_http._tcp seed with /ota/status", ev: svc("_http._tcp", nil), script: []step{{up(probeUpdate), postOnly}, {up(probeOTAStatus), otaStatus}}, want: HTTP, family: FamilySeed, why: "GET /ota/status answered ots-ota's status JSON", asked: 2},
		{name: "_http._tcp OTS with /api/status", ev: svc("_http._tcp", nil), script: []step{{up(probeUpdate), postOnly}, {web(probeAPIStatus), apiStatus}}, want: HTTP, family: FamilyOTS, asked: 3},
		{name: "_http._tcp with --protocol http: no raw POST without a fingerprint", ev: with(flag(HTTP), "_http._tcp", nil), refused: true, why: "nothing is sent to a host without a device family", asked: 7},
		{name: "_http._tcp with the inventory's http, 405", ev: with(Evidence{Word: HTTP, WordFrom: "the inventory"}, "_http._tcp", nil), script: []step{{up(probeUpdate), postOnly}}, refused: true, asked: 7},
		// The port probe.
		{name: "plain address: seed", port: &portOK, script: []step{{up(probeUpdate), postOnly}}, want: HTTP, family: FamilySeed, why: "TCP 10.0.0.5:3232 accepted a connection; GET /update answered 405", asked: 2},
		{name: "plain address: seed with /ota/status", port: &portOK, script: []step{{up(probeOTAStatus), otaStatus}}, want: HTTP, family: FamilySeed, asked: 3},
		{name: "plain address: OTS", port: &portOK, script: []step{{web(probeAPIStatus), apiStatus}}, want: HTTP, family: FamilyOTS, asked: 4},
		{name: "plain address: no web port", ev: Evidence{NoWeb: true}, port: &portOK, want: HTTP, asked: 7},
		{name: "plain address: ESPHome native OTA", port: &portOK, script: []step{{up(probeUpdate), esphome}}, refused: true, family: FamilyESPHome, why: "0x80, ESPHome's native OTA error); auto chooses ESPHome only from its _esphomelib._tcp mDNS record", asked: 2},
		{name: "plain address: ArduinoOTA", port: &portUDP, want: Espota, family: FamilyArduinoOTA, why: "refused a connection", asked: 1},
		{name: "plain address: silent", port: &portSilent, fail: FailUnreachable, why: "no answer from 10.0.0.5:3232", asked: 1},
		// Nothing listens at the OTA port: the web port may name a family.
		{name: "nothing listens", port: &portDead, fail: FailNothingListens, why: "nothing listens at 10.0.0.5:3232", asked: 6},
		{name: "nothing listens, no web port", ev: Evidence{NoWeb: true}, port: &portDead, fail: FailNothingListens, asked: 1},
		{name: "nothing listens, WLED on 80", port: &portDead, script: []step{{web(probeJSONInfo), wledInfo}}, want: ProtoWLED, family: FamilyWLED, onWeb: true, why: `looks like WLED (GET /json/info answered "brand":"WLED")`, asked: 4},
		{name: "nothing listens, Tasmota's 404 on the web port", port: &portDead, script: []step{{web(probeUpdate), withHeader(status(404, "File Not Found"), "Server", "Tasmota/15.1.0 (ESP32)")}}, want: ProtoTasmota, family: FamilyTasmota, onWeb: true, why: "GET /update answered with Server: Tasmota/15.1.0", asked: 2},
		// The web uploaders on the upload port.
		{name: "ElegantOTA v3", ev: flag(HTTP), script: []step{{up(probeUpdate), elegant3}}, want: ProtoElegantOTA, family: FamilyElegantOTA3, asked: 2},
		{name: "ElegantOTA v2", ev: flag(HTTP), script: []step{{up(probeUpdate), elegant3}, {up(probeIdentity), identity}}, refused: true, family: FamilyElegantOTA2, asked: 2},
		{name: "ESP8266HTTPUpdateServer behind auth", ev: flag(HTTP), script: []step{{up(probeUpdate), needAuth}, {up(probeOptions), husOptions}}, want: ProtoForm, family: FamilyHTTPUpdateServer, chip: "esp8266", why: "GET /update answered 401, and OPTIONS /update answered 200 y", asked: 2},
		// A 401 on GET /update hides a web uploader: the seed and OTS answer 405.
		{name: "401, OPTIONS not y", ev: flag(HTTP), script: []step{{up(probeUpdate), needAuth}}, refused: true, family: FamilyWebUploader, why: "looks like a web uploader behind a password (GET /update answered 401", asked: 8},
		{name: "401 Digest by address", port: &portOK, script: []step{{up(probeUpdate), digestAuth}, {up(probeOptions), status(500, "")}}, refused: true, family: FamilyWebUploader, why: "update it from its web page at /update, or build it with ArduinoOTA and use --protocol espota", asked: 9},
		{name: "401, WLED with its OTA lock", ev: flag(HTTP), script: []step{{up(probeUpdate), needAuth}, {up(probeJSONInfo), wledInfo}}, want: ProtoWLED, family: FamilyWLED, asked: 6},
		{name: "401 on _http._tcp", ev: svc("_http._tcp", nil), script: []step{{up(probeUpdate), needAuth}}, refused: true, family: FamilyWebUploader, why: "behind a password", asked: 8},
		{name: "401 then silence", ev: flag(HTTP), script: []step{{up(probeUpdate), needAuth}, {up(probeOTAStatus), none}}, refused: true, family: FamilyWebUploader, asked: 3},
		{name: "nothing listens, 401 on the web port", port: &portDead, script: []step{{web(probeUpdate), needAuth}}, refused: true, family: FamilyWebUploader, why: "behind a password", asked: 7},
		// Any multipart form with a file input is a web uploader; name='firmware' names HTTPUpdateServer.
		{name: "old form name='update'", ev: flag(HTTP), script: []step{{up(probeUpdate), oldForm}}, refused: true, family: FamilyWebUploader, why: "looks like a web uploader (GET /update answered a multipart form with a file input); ots-ota does not speak a web uploader it cannot name yet; if it runs HTTPUpdateServer, ESPEasy or ElegantOTA v3, name it with --protocol form", asked: 7},
		{name: "form name='update', WLED", ev: flag(HTTP), script: []step{{up(probeUpdate), oldForm}, {up(probeJSONInfo), wledInfo}}, want: ProtoWLED, family: FamilyWLED, asked: 5},
		{name: "form name='update', ESPEasy", ev: flag(HTTP), script: []step{{up(probeUpdate), oldForm}, {up(probeJSON), espeasy}}, want: ProtoForm, family: FamilyESPEasy, asked: 6},
		{name: "nothing listens, a form on the web port", port: &portDead, script: []step{{web(probeUpdate), oldForm}}, refused: true, family: FamilyWebUploader, asked: 6},
		{name: "ElegantOTA v2 hint", ev: flag(HTTP), script: []step{{up(probeUpdate), elegant3}, {up(probeIdentity), identity}}, refused: true, family: FamilyElegantOTA2, why: "ots-ota does not speak ElegantOTA v2 yet; update it from its web page at /update, or build it with ArduinoOTA and use --protocol espota", asked: 2},
		{name: "Tasmota on the web port", port: &portDead, script: []step{{web(probeRoot), withHeader(status(200, "<html>"), "Server", "Tasmota/14.3.0 (ESP32-DevKit)")}}, want: ProtoTasmota, family: FamilyTasmota, onWeb: true, why: "looks like Tasmota (GET / answered with Server: Tasmota/14.3.0)", asked: 3},
		{name: "WLED by URL", ev: Evidence{Word: HTTP, WordFrom: "the URL (/update)"}, script: []step{{up(probeUpdate), gzipped(status(200, "<html>WLED update"))}, {up(probeJSONInfo), wledInfo}}, want: ProtoWLED, family: FamilyWLED, why: `looks like WLED (GET /json/info answered "brand":"WLED")`, asked: 6},
		{name: "Tasmota by /cm", ev: flag(HTTP), script: []step{{up(probeTasmotaCmd), tasmotaCm}}, want: ProtoTasmota, family: FamilyTasmota, asked: 7},
		{name: "Tasmota by /cm 401", ev: flag(HTTP), script: []step{{up(probeTasmotaCmd), tasmotaRaw}}, want: ProtoTasmota, family: FamilyTasmota, why: "Tasmota's Status JSON", asked: 7},
		{name: "Tasmota by /cm 401, a German build", ev: flag(HTTP), script: []step{{up(probeTasmotaCmd), status(401, `{"WARNING":"Benötige user=<Benutzername>&password=<Passwort>"}`)}}, want: ProtoTasmota, family: FamilyTasmota, asked: 7},
		{name: "a WARNING that asks for nothing is no Tasmota", ev: flag(HTTP), script: []step{{up(probeTasmotaCmd), status(401, `{"WARNING":"go away"}`)}}, want: HTTP, why: "no family fingerprint matched", asked: 7},
		{name: "Tasmota header on the first answer", ev: flag(HTTP), script: []step{{up(probeUpdate), withHeader(status(404, ""), "Server", "Tasmota/13.1.0 (ESP8266EX)")}}, want: ProtoTasmota, family: FamilyTasmota, asked: 1},
		{name: "Tasmota's 401 JSON behind its password on the web port", port: &portDead, script: []step{{web(probeUpdate), needAuth}, {web(probeTasmotaCmd), tasmotaRaw}}, want: ProtoTasmota, family: FamilyTasmota, onWeb: true, asked: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, asked := run(t, tc.ev, tc.port, tc.script)
			text := d.Why
			if d.Failure != nil {
				text = d.Failure.Reason
			}
			switch {
			case tc.fail != "":
				if d.Failure == nil || d.Failure.Kind != tc.fail || d.Protocol != "" || d.Refused {
					t.Fatalf("got %+v, want failure %s", d, tc.fail)
				}
			case tc.refused:
				if !d.Refused || d.Protocol != "" || d.Failure != nil {
					t.Fatalf("got %+v, want refused", d)
				}
			default:
				if d.Protocol != tc.want || d.Refused || d.Failure != nil {
					t.Fatalf("got %+v, want %s", d, tc.want)
				}
			}
			if d.Web != tc.onWeb || d.Chip != tc.chip {
				t.Errorf("web %v chip %q, want %v %q (%s)", d.Web, d.Chip, tc.onWeb, tc.chip, text)
			}
			if tc.family != "" && d.Family != tc.family {
				t.Errorf("family %q, want %q (%s)", d.Family, tc.family, text)
			}
			if text == "" || !strings.Contains(text, tc.why) || strings.Contains(text, "\n") {
				t.Errorf("why %q, want it to contain %q", text, tc.why)
			}
			if nestedParens(text) {
				t.Errorf("why %q has nested parentheses", text)
			}
			if tc.asked >= 0 && len(asked) != tc.asked {
				t.Errorf("asked %d probes %v, want %d", len(asked), asked, tc.asked)
			}
		})
	}
}

// The port probe and the fingerprints run in the documented order, cheap
// first: TCP, then GET /update (which settles the seed and OTS), then the
// rest only while the family stays open.
func TestDecideOrder(t *testing.T) {
	_, asked := run(t, Evidence{}, &portOK, nil)
	want := []Step{up(probeTCP), up(probeUpdate), up(probeOTAStatus), web(probeAPIStatus), up(probeRoot), up(probeJSONInfo), up(probeJSON), up(probeTasmotaCmd)}
	if len(asked) != len(want) {
		t.Fatalf("asked %v, want %v", asked, want)
	}
	for i := range want {
		if asked[i] != want[i] {
			t.Fatalf("asked %v, want %v", asked, want)
		}
	}
}

// Issue 19: WLED and Tasmota are spoken, so no refusal names them; one
// found on the web port is updated there, one at the upload port there.
func TestDecideWLEDTasmotaSpoken(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ev    Evidence
		port  *PortAnswer
		steps []step
		want  Protocol
		web   bool
	}{
		{"URL to a WLED", Evidence{Word: HTTP, WordFrom: "the URL (/update)"}, nil, []step{{up(probeJSONInfo), wledInfo}}, ProtoWLED, false},
		{"WLED on 80", Evidence{}, &portDead, []step{{web(probeJSONInfo), wledInfo}}, ProtoWLED, true},
		{"Tasmota at the upload port", Evidence{}, &portOK, []step{{up(probeRoot), withHeader(status(200, "<html>"), "Server", "Tasmota/14.3.0 (ESP8266EX)")}}, ProtoTasmota, false},
		{"Tasmota on 80", Evidence{}, &portDead, []step{{web(probeTasmotaCmd), tasmotaCm}}, ProtoTasmota, true},
	} {
		d, _ := run(t, tc.ev, tc.port, tc.steps)
		if d.Protocol != tc.want || d.Refused || d.Web != tc.web || !d.Probed || strings.Contains(d.Why, "does not speak") {
			t.Errorf("%s: %+v, want %s (web %v) by probe", tc.name, d, tc.want, tc.web)
		}
	}
}

// Every row's marks use allowed probes only, and every family but the
// spoken ones is refused by name.
func TestTableProbesAllowed(t *testing.T) {
	for _, r := range Table() {
		for _, m := range r.Marks {
			if !Allowed(m.Probe) {
				t.Errorf("%s: mark on %s, not an allowed probe", r.Name, m.Probe)
			}
		}
		unspoken := r.Family == FamilyWebUploader || r.Family == FamilyElegantOTA2
		if r.Spoken == unspoken {
			t.Errorf("%s: spoken %v but protocol %s", r.Name, r.Spoken, r.Protocol)
		}
	}
	for _, p := range AllowedProbes() {
		if p.Kind == KindHTTP && (p.Method != "GET" && p.Method != "OPTIONS" || bytes.ContainsAny([]byte(p.Target), " \r\n")) {
			t.Errorf("allowed probe %s is not a bodiless GET or OPTIONS", p)
		}
	}
}

// TestAllowedProbesAreTheIssuesList pins the list to issue 17's words,
// byte for byte: a probe added or changed in the code fails here first.
func TestAllowedProbesAreTheIssuesList(t *testing.T) {
	want := []string{
		"tcp-connect", "udp-empty", "mdns",
		"GET /ota/status", "GET /api/status", "GET /", "GET /json/info", "GET /json",
		"GET /update", "GET /update/identity", "OPTIONS /update", "GET /cm?cmnd=Status%200 with Referer",
	}
	var got []string
	for _, p := range AllowedProbes() {
		got = append(got, p.String())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("allowed probes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, never := range []Probe{
		{Kind: KindHTTP, Method: "GET", Target: "/ota/start"},
		{Kind: KindHTTP, Method: "GET", Target: "/update?revert"},
		{Kind: KindHTTP, Method: "GET", Target: "/up"},
		{Kind: KindHTTP, Method: "GET", Target: "/rs"},
		{Kind: KindHTTP, Method: "GET", Target: "/u1"},
		{Kind: KindHTTP, Method: "GET", Target: "/cm?cmnd=Upgrade%201", Referer: true},
		{Kind: KindHTTP, Method: "GET", Target: "/?rst="},
		{Kind: KindHTTP, Method: "GET", Target: "/cm?cmnd=Status%200"}, // without the Referer it is not the probe
		{Kind: KindHTTP, Method: "POST", Target: "/update"},
	} {
		if Allowed(never) {
			t.Errorf("%s is allowed", never)
		}
	}
}

// Device text quoted in a decision is one safe line: no C0 or C1 control,
// no bidi override, valid UTF-8 even where it is cut.
func TestDecideCleansDeviceText(t *testing.T) {
	evil := "Tasmota/14.3.0\u009b31m\u202egnp.exe\x1b[2J" + strings.Repeat("é", 40)
	for name, d := range map[string]Decision{
		"Server header": func() Decision {
			d, _ := run(t, Evidence{Word: HTTP, WordFrom: "--protocol"}, nil, []step{{up(probeUpdate), withHeader(status(404, ""), "Server", evil)}})
			return d
		}(),
		"TXT value": Decide(Evidence{Service: "_arduino._tcp", TXT: map[string]string{"board": "esp32\u009b\u202e" + strings.Repeat("é", 40)}}),
	} {
		if strings.ContainsAny(d.Why, "\u009b\u202e\x1b") || !utf8.ValidString(d.Why) {
			t.Errorf("%s: %q", name, d.Why)
		}
	}
}

// The lists callers read are copies: changing them changes no decision.
func TestTableIsReadOnly(t *testing.T) {
	post := Probe{Kind: KindHTTP, Method: "POST", Target: "/update"}
	ap := AllowedProbes()
	ap[0] = post
	_ = append(ap, post)
	if Allowed(post) {
		t.Error("a caller's change to AllowedProbes() made POST /update allowed")
	}
	tb := Table()
	tb[0].Marks[0].Probe = post
	tb[0].Services[0] = "_printer._tcp"
	if r, ok := RowOf(tb[0].Family); !ok || r.Marks[0].Probe == post || r.Services[0] != "_ota._tcp" {
		t.Errorf("a caller's change to Table() reached the table: %+v", r)
	}
	r, _ := RowOf(FamilyWLED)
	r.Spoken = false
	if d := Decide(Evidence{Service: "_wled._tcp"}); d.Refused || d.Protocol != ProtoWLED {
		t.Errorf("a caller's change to RowOf made WLED unspoken: %+v", d)
	}
}

// nestedParens reports a parenthesis opened inside another.
func nestedParens(s string) bool {
	depth := 0
	for _, r := range s {
		switch r {
		case '(':
			depth++
			if depth > 1 {
				return true
			}
		case ')':
			depth--
		}
	}
	return false
}
