package detect

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ots-ota/ots-ota/internal/oneline"
)

// Evidence is everything known about one device: what was said before
// any packet (the user's word, the inventory, mDNS) and what the probes
// answered so far.
type Evidence struct {
	// Word is the protocol the user or the inventory named ("" = none):
	// --protocol, a URL target (always HTTP) or the inventory's protocol:.
	Word Protocol
	// WordFrom says who named it ("--protocol", "the URL", "the
	// inventory"), for messages.
	WordFrom string
	// Service is the mDNS service type the device was found under
	// ("_ota._tcp"); "" when mDNS did not find it.
	Service string
	// TXT is that record's TXT keys; nil when it had none.
	TXT map[string]string
	// NoWeb: there is no web port to ask (mDNS advertised none).
	NoWeb bool

	port    *PortAnswer
	answers map[Step]*Answer
}

// Step is one probe to one of the device's ports.
type Step struct {
	Probe Probe
	// Web: on the web port; else on the upload (OTA) port.
	Web bool
}

// WithPort returns ev with the port probe's answer.
func (ev Evidence) WithPort(p PortAnswer) Evidence {
	ev.port = &p
	return ev
}

// WithAnswer returns ev with the answer to one HTTP step.
func (ev Evidence) WithAnswer(s Step, a Answer) Evidence {
	m := make(map[Step]*Answer, len(ev.answers)+1)
	maps.Copy(m, ev.answers)
	m[s] = &a
	ev.answers = m
	return ev
}

// Decision is the table's verdict on one device, or the next probe it needs.
type Decision struct {
	// Protocol to send the image with: HTTP, Espota, ProtoForm,
	// ProtoElegantOTA, ProtoWLED, ProtoTasmota or ProtoESPHome; "" when
	// nothing is to be sent (Refused, Failure) or Need is set.
	Protocol Protocol
	// Family is the family recognised; "" when none was.
	Family Family
	// Why is one line for the user: which evidence decided.
	Why string
	// Probed: a packet to the device decided (not a word, not mDNS).
	Probed bool
	// Web: the family was found on the web port, not the upload (OTA)
	// port: the upload goes there (the web uploaders serve their form on
	// the web server, port 80, where nothing listens at 3232).
	Web bool
	// Chip is the chip family a fingerprint told ("esp8266": OPTIONS
	// /update answered as ESP8266HTTPUpdateServer does); "" when none told.
	Chip string
	// Path is the upload path the device advertised (TXT path= on
	// _ota._tcp); "" when it told none.
	Path string
	// Refused: nothing may be sent: the device belongs to a family ots-ota
	// does not speak, or shows none where one is required. Why says which.
	Refused bool
	// Failure: no device answered to decide for.
	Failure *Failure
	// Need is the next probe to send; nil once decided.
	Need *Step
}

// arduinoTXTKeys are the keys ArduinoOTA puts in its _arduino._tcp TXT
// record; the OTS firmware's _arduino._tcp record has no TXT at all.
var arduinoTXTKeys = []string{"board", "auth_upload", "tcp_check", "ssh_upload"}

// esphomeTXTKeys: ESPHome without api: announces _http._tcp with these
// (uploaders.md §8.7, since 2026.7.0).
var esphomeTXTKeys = []string{"version", "mac", "config_hash"}

// Decide applies the table to what is known: evidence wins in the order
// the user's word, the inventory's protocol:, mDNS (service and TXT), then
// the probes, cheapest first: TCP connect, one empty UDP datagram, then
// HTTP fingerprints only to tell HTTP families apart. It sends nothing:
// when a probe is needed, Need says which (Detector.Detect sends it).
func Decide(ev Evidence) Decision {
	svc := ServiceName(ev.Service)
	// The word picks espota over everything: an ESPEasy or WLED that runs
	// ArduinoOTA takes espota whatever its web server is.
	if ev.Word == Espota {
		return Decision{Protocol: Espota, Why: "espota set by " + ev.WordFrom}
	}
	if ev.Word == ProtoESPHome {
		// The user or the inventory names ESPHome: its OTA port takes the
		// session, no probe (a GET there only draws its error byte).
		return Decision{Protocol: ProtoESPHome, Family: FamilyESPHome, Why: "esphome set by " + ev.WordFrom,
			Chip: esphomeChip(ev, svc)}
	}
	if ev.Word != "" && ev.Word != HTTP && spokenWord(ev.Word) {
		// A family's own protocol by word (form, elegantota, wled,
		// tasmota): no probe, as for espota (a form behind a password shows
		// no family to the probes). wled and tasmota name their family too;
		// form and elegantota leave it to the transport, as since issue 18.
		d := Decision{Protocol: ev.Word, Why: string(ev.Word) + " set by " + ev.WordFrom}
		if ev.Word != ProtoForm && ev.Word != ProtoElegantOTA {
			d.Family = familyOfWord(ev.Word)
		}
		return d
	}
	if ev.Word != "" && ev.Word != HTTP {
		return Decision{Refused: true, Why: fmt.Sprintf("%s names protocol %s, which ots-ota does not speak yet", ev.WordFrom, ev.Word)}
	}
	// mDNS services that name a family by themselves (_wled._tcp,
	// _esphomelib._tcp): its protocol, or its refusal, with no probe. The
	// word http never sends them a raw body: WLED's own protocol is used,
	// and ESPHome, whose protocol auto chooses only unasked, is refused
	// with the way to name it.
	if r, ok := rowForService(svc); ok && r.Family == FamilyESPHome {
		if ev.Word == HTTP {
			// A raw body never goes to a family that takes none.
			return Decision{Refused: true, Family: FamilyESPHome, Why: fmt.Sprintf(
				"looks like ESPHome (mDNS service %s), but http was set by %s: ESPHome takes no raw POST; name it with --protocol esphome", svc, ev.WordFrom)}
		}
		return Decision{Protocol: ProtoESPHome, Family: FamilyESPHome, Why: "mDNS service " + svc + " (ESPHome)", Chip: esphomeChip(ev, svc)}
	}
	if r, ok := rowForService(svc); ok && !r.Spoken {
		return refusal(r, "mDNS service "+svc, false)
	} else if ok && r.Protocol != HTTP && r.Protocol != Espota {
		// _ota._tcp and _arduino._tcp are read below, with their TXT.
		return Decision{Protocol: r.Protocol, Family: r.Family, Why: fmt.Sprintf("looks like %s (mDNS service %s)", r.Name, svc)}
	}
	if svc == "_http._tcp" && hasAll(ev.TXT, esphomeTXTKeys) {
		return esphomeUnnamed("mDNS _http._tcp with TXT version, mac and config_hash, as ESPHome without its native API announces")
	}
	switch svc {
	case "_ota._tcp":
		// The service ots-ota documents for raw-POST firmware
		// (device-contract.md §4): no probe needed.
		d := Decision{Protocol: HTTP, Family: FamilySeed, Why: "mDNS service _ota._tcp (HTTP OTA)"}
		if ev.Word == HTTP {
			d.Why = "http set by " + ev.WordFrom + "; mDNS service _ota._tcp"
		}
		if p, ok := txtValue(ev.TXT, "path"); ok && strings.HasPrefix(p, "/") {
			d.Path = p
		}
		return d
	case "_arduino._tcp":
		if ev.Word == "" {
			for _, k := range arduinoTXTKeys {
				if v, ok := txtValue(ev.TXT, k); ok {
					return Decision{Protocol: Espota, Family: FamilyArduinoOTA, Why: fmt.Sprintf("mDNS TXT %s=%s on _arduino._tcp (ArduinoOTA)", k, clean(v, 40))}
				}
			}
		}
	}
	if svc == "_http._tcp" {
		// A host seen only as a web server (a printer, a router) gets
		// nothing without a positive family fingerprint, whoever said
		// http (docs/protocols §6).
		why := "mDNS service _http._tcp"
		if ev.Word == HTTP {
			why = "http set by " + ev.WordFrom + "; " + why
		}
		if d, ok := connectFailed(ev); ok {
			return d
		}
		return ladder(ev, true, why)
	}
	if ev.Word == HTTP {
		// The word picks raw HTTP over espota, and skips the port probe;
		// the fingerprints still keep a raw body from a family that
		// takes none.
		if d, ok := connectFailed(ev); ok {
			return d
		}
		return ladder(ev, false, "http set by "+ev.WordFrom)
	}
	if ev.port == nil {
		return need(probeTCP, false)
	}
	p := ev.port
	switch p.Kind {
	case Accepted:
		if svc == "_arduino._tcp" {
			// _arduino._tcp without ArduinoOTA's TXT, and TCP accepted: the
			// OTS firmware (device-contract.md §1).
			return Decision{Protocol: HTTP, Family: FamilyOTS, Probed: true,
				Why: "TCP " + p.Addr + " accepted a connection behind _arduino._tcp without ArduinoOTA's TXT keys (OTS firmware)"}
		}
		return ladder(ev, false, "TCP "+p.Addr+" accepted a connection")
	case Refused:
		return Decision{Protocol: Espota, Family: FamilyArduinoOTA, Probed: true,
			Why: "TCP " + p.Addr + " refused a connection (espota listens on UDP only)"}
	case Closed:
		return webLadder(ev)
	}
	return Decision{Failure: p.failure(), Probed: true}
}

// connectFailed: on the paths that skip the port probe (the word http, a
// host seen only as _http._tcp), the first probe's connect failed, and
// Detect recorded that as the port probe's answer. It ends as the port
// probe would: unreachable, nothing listens, a name that does not resolve.
func connectFailed(ev Evidence) (Decision, bool) {
	p := ev.port
	switch {
	case p == nil || p.Kind == Accepted:
		return Decision{}, false
	case p.Kind == Closed:
		return webLadder(ev), true
	case p.Kind == Refused:
		// The UDP port did not refuse: ArduinoOTA's may listen there, but
		// the word named http.
		return Decision{Probed: true, Failure: &Failure{Kind: FailNetwork, Err: p.Err,
			Reason: fmt.Sprintf("connection refused by %s: no HTTP server listens there; if it is an ArduinoOTA device, give HOST:PORT with --protocol espota", p.Addr)}}, true
	}
	f := p.failure()
	if f.Kind == FailUnreachable {
		// The protocol is named: the probe had nothing to tell apart.
		f.Reason = strings.TrimSuffix(f.Reason, "; cannot tell HTTP from espota until it answers")
	}
	return Decision{Failure: f, Probed: true}, true
}

// ladder is the HTTP fingerprint ladder on the upload port, for a device
// raw HTTP would go to. Each rung is asked only when the ones before it
// left the family open; the first mark decides. A 401 or an unnamed
// upload form on GET /update shows a web uploader whose family a later
// rung may still name (WLED behind its OTA lock answers 401 too); with
// none named, it is refused as that. strict (a host seen only as
// _http._tcp): with no mark at all nothing is sent, and a 405 on /update
// is no mark.
func ladder(ev Evidence, strict bool, why string) Decision {
	up := func(p Probe) Step { return Step{Probe: p} }
	raw := func(f Family, s Step, says string) Decision {
		return Decision{Protocol: HTTP, Family: f, Probed: ev.port != nil || len(ev.answers) > 0,
			Why: fmt.Sprintf("%s; %s answered %s", why, s.Probe, says)}
	}
	var uploader *Decision // a web uploader no rung has named yet
	rungs := []Step{up(probeUpdate), up(probeOTAStatus), {Probe: probeAPIStatus, Web: true}, up(probeRoot), up(probeJSONInfo), up(probeJSON), up(probeTasmotaCmd)}
	for _, s := range rungs {
		if s.Web && ev.NoWeb {
			continue
		}
		a := ev.answers[s]
		if a == nil {
			return need(s.Probe, s.Web)
		}
		if d, ok := familyMark(ev, s, a); ok {
			return d
		}
		if !s.Web && (a.None || a.Status == 0) {
			// Silence or a stranger's bytes on the upload port: ask no more.
			switch {
			case uploader != nil:
				return *uploader
			case strict:
				return noFamily(ev, fmt.Sprintf("%s got no HTTP answer: %s", s.Probe, a.Note))
			}
			return Decision{Protocol: HTTP, Probed: true, Why: fmt.Sprintf("%s; %s got no HTTP answer, %s; no family told", why, s.Probe, a.Note)}
		}
		switch s.Probe {
		case probeUpdate:
			if matches(FamilySeed, probeUpdate, a) && !strict {
				return raw(FamilySeed, s, markFor(FamilySeed, probeUpdate).Says)
			}
			d, ok := followUp(ev, s, a, false)
			switch {
			case ok && d.Need == nil && d.Family == FamilyWebUploader:
				uploader = &d
			case ok:
				return d
			}
		case probeOTAStatus:
			if matches(FamilySeed, probeOTAStatus, a) {
				return raw(FamilySeed, s, markFor(FamilySeed, probeOTAStatus).Says)
			}
		case probeAPIStatus:
			if matches(FamilyOTS, probeAPIStatus, a) {
				return raw(FamilyOTS, s, markFor(FamilyOTS, probeAPIStatus).Says)
			}
		}
	}
	switch {
	case uploader != nil:
		return *uploader
	case strict:
		return noFamily(ev, "no family answered the fingerprint probes")
	}
	return Decision{Protocol: HTTP, Probed: true, Why: why + "; no family fingerprint matched: raw HTTP POST"}
}

// webLadder: nothing listens at the OTA port; the web port may still name
// a family that the user should hear about rather than "nothing listens".
func webLadder(ev Evidence) Decision {
	fail := Decision{Failure: ev.port.failure(), Probed: true}
	if ev.NoWeb {
		return fail
	}
	var uploader *Decision
	web := func(p Probe) Step { return Step{Probe: p, Web: true} }
	for _, s := range []Step{web(probeUpdate), web(probeRoot), web(probeJSONInfo), web(probeJSON), web(probeTasmotaCmd)} {
		a := ev.answers[s]
		if a == nil {
			return need(s.Probe, true)
		}
		if d, ok := familyMark(ev, s, a); ok {
			return d
		}
		if a.None || a.Status == 0 {
			break
		}
		if s.Probe == probeUpdate {
			d, ok := followUp(ev, s, a, true)
			switch {
			case ok && d.Need == nil && d.Family == FamilyWebUploader:
				uploader = &d
			case ok:
				return d
			}
		}
	}
	if uploader != nil {
		return *uploader
	}
	return fail
}

// familyMark checks the marks any answer may carry: Tasmota's Server
// header, ESPHome's error byte, and the rung's own family marks.
func familyMark(ev Evidence, s Step, a *Answer) (Decision, bool) {
	says := func(f Family) string { return fmt.Sprintf("%s answered %s", s.Probe, markFor(f, s.Probe).Says) }
	switch {
	case isTasmotaServer(*a):
		return verdict(ev, row(FamilyTasmota), fmt.Sprintf("%s answered with Server: %s", s.Probe, serverProduct(a.Header.Get("Server"))), s.Web, ""), true
	case isESPHomeByte(*a):
		return esphomeUnnamed(fmt.Sprintf("%s answered the single byte 0x80, ESPHome's native OTA error", s.Probe)), true
	}
	for _, f := range []Family{FamilyWLED, FamilyESPEasy, FamilyTasmota, FamilyElegantOTA2} {
		if matches(f, s.Probe, a) {
			return verdict(ev, row(f), says(f), s.Web, ""), true
		}
	}
	return Decision{}, false
}

// esphomeUnnamed refuses an ESPHome device that auto may not choose: no
// _esphomelib._tcp record and no word named it (docs/protocols/README.md).
func esphomeUnnamed(evidence string) Decision {
	return Decision{Refused: true, Family: FamilyESPHome, Why: fmt.Sprintf("looks like ESPHome (%s); %s", evidence, esphomeHint)}
}

// esphomeChip is the chip an ESPHome record's TXT platform tells:
// "esp8266" for ESP8266, "" otherwise (ESP32 names no variant).
func esphomeChip(ev Evidence, svc string) string {
	if p, ok := txtValue(ev.TXT, "platform"); ok && rowForServiceFamily(svc) == FamilyESPHome && strings.EqualFold(p, "ESP8266") {
		return "esp8266"
	}
	return ""
}

func rowForServiceFamily(svc string) Family {
	r, _ := rowForService(svc)
	return r.Family
}

// serverProduct is a Server header's first product token, cleaned: the
// name and version, without the comment in parentheses.
func serverProduct(h string) string {
	h, _, _ = strings.Cut(strings.TrimSpace(h), " ")
	h, _, _ = strings.Cut(h, "(")
	return clean(h, 40)
}

// followUp reads GET /update's answer: the web uploaders serve a page
// there; one more probe may be needed to name which. A Decision of family
// FamilyWebUploader is not final: a later rung may still name the family.
func followUp(ev Evidence, s Step, a *Answer, web bool) (Decision, bool) {
	at := func(p Probe) (Step, *Answer) {
		st := Step{Probe: p, Web: web}
		return st, ev.answers[st]
	}
	switch {
	case matches(FamilyHTTPUpdateServer, probeUpdate, a):
		// ESPEasy serves the same form: its /json tells it apart.
		st, j := at(probeJSON)
		if j == nil {
			d := need(probeJSON, web)
			return d, true
		}
		if matches(FamilyESPEasy, probeJSON, j) {
			return verdict(ev, row(FamilyESPEasy), fmt.Sprintf("%s answered %s", st.Probe, markFor(FamilyESPEasy, probeJSON).Says), web, ""), true
		}
		// OPTIONS /update tells ESP8266HTTPUpdateServer (core 3.1.0 and
		// later) from arduino-esp32's, which has no such route: the chip,
		// which decides where a filesystem image may go.
		so, o := at(probeOptions)
		if o == nil {
			return need(probeOptions, web), true
		}
		says := fmt.Sprintf("%s answered %s", s.Probe, markFor(FamilyHTTPUpdateServer, probeUpdate).Says)
		if matches(FamilyHTTPUpdateServer, probeOptions, o) {
			return verdict(ev, row(FamilyHTTPUpdateServer), fmt.Sprintf("%s, and %s answered %s", says, so.Probe, markFor(FamilyHTTPUpdateServer, probeOptions).Says), web, "esp8266"), true
		}
		return verdict(ev, row(FamilyHTTPUpdateServer), says, web, ""), true
	case a.Gzip && a.Status == 200:
		// ElegantOTA gzips its page always; v2 also has /update/identity.
		st, id := at(probeIdentity)
		if id == nil {
			return need(probeIdentity, web), true
		}
		if matches(FamilyElegantOTA2, probeIdentity, id) {
			return verdict(ev, row(FamilyElegantOTA2), fmt.Sprintf("%s answered %s", st.Probe, markFor(FamilyElegantOTA2, probeIdentity).Says), web, ""), true
		}
		if matches(FamilyElegantOTA3, probeUpdate, a) {
			return verdict(ev, row(FamilyElegantOTA3), fmt.Sprintf("%s answered %s", s.Probe, markFor(FamilyElegantOTA3, probeUpdate).Says), web, ""), true
		}
		if isUploadForm(*a) {
			return webUploader(ev, s, false), true
		}
	case isUploadForm(*a):
		return webUploader(ev, s, false), true
	case isLogin(*a):
		// A web uploader behind HTTP auth: ESP8266HTTPUpdateServer's
		// OPTIONS route checks no credentials.
		st, o := at(probeOptions)
		if o == nil {
			return need(probeOptions, web), true
		}
		if matches(FamilyHTTPUpdateServer, probeOptions, o) {
			// The 401 and OPTIONS name the family: spoken, with the
			// credentials the user gives (--user, --password); without
			// them the device's 401 ends the upload as an auth failure.
			return verdict(ev, row(FamilyHTTPUpdateServer), fmt.Sprintf("%s answered 401, and %s answered %s", s.Probe, st.Probe, markFor(FamilyHTTPUpdateServer, probeOptions).Says), web, "esp8266"), true
		}
		// No rung names the family behind the 401: refused as before,
		// credentials or not (a probe never carries them).
		return webUploader(ev, s, true), true
	}
	return Decision{}, false
}

// webUploader is the refusal of a web uploader no row names: an upload
// form on GET /update, or a login there (login).
func webUploader(ev Evidence, s Step, login bool) Decision {
	r := row(FamilyWebUploader)
	m := r.Marks[0]
	if login {
		r.Name, m = "a web uploader behind a password", r.Marks[1]
	}
	return refusal(r, fmt.Sprintf("%s answered %s", s.Probe, m.Says), ev.udpClosed())
}

// verdict is the decision for a family a fingerprint named: its protocol
// when ots-ota speaks it (on the web port when found there, with the chip
// the fingerprint told), else the refusal.
func verdict(ev Evidence, r Row, evidence string, web bool, chip string) Decision {
	if !r.Spoken {
		return refusal(r, evidence, ev.udpClosed())
	}
	return Decision{Protocol: r.Protocol, Family: r.Family, Probed: true, Web: web, Chip: chip,
		Why: fmt.Sprintf("looks like %s (%s)", r.Name, evidence)}
}

// udpClosed: the OTA port's UDP side was shown closed, so a hint at
// espota would not help.
func (ev Evidence) udpClosed() bool { return ev.port != nil && ev.port.Kind == Closed }

// refusal is the one line for a device of a family ots-ota does not speak.
func refusal(r Row, evidence string, udpClosed bool) Decision {
	unspoken := r.Unspoken
	if unspoken == "" {
		unspoken = r.Name
	}
	why := fmt.Sprintf("looks like %s (%s); ots-ota does not speak %s yet", r.Name, evidence, unspoken)
	if r.Hint != "" {
		why += "; " + r.Hint
	}
	if r.EspotaHint != "" && !udpClosed {
		why += "; " + r.EspotaHint
	}
	return Decision{Refused: true, Family: r.Family, Why: why}
}

// noFamily refuses a host seen only as _http._tcp that showed no family.
func noFamily(ev Evidence, what string) Decision {
	why := fmt.Sprintf("seen only as a web server, mDNS _http._tcp, and %s; nothing is sent to a host without a device family, such as a printer or a router", what)
	if ev.Word == HTTP {
		why += ", even with http set by " + ev.WordFrom
	}
	return Decision{Refused: true, Probed: true, Why: why}
}

func need(p Probe, web bool) Decision { return Decision{Need: &Step{Probe: p, Web: web}} }

// spokenWord: p is the protocol of a row ots-ota speaks.
func spokenWord(p Protocol) bool {
	for _, r := range table {
		if r.Spoken && r.Protocol == p {
			return true
		}
	}
	return false
}

// familyOfWord is the one family whose protocol p is; "" when several
// rows share it (form) or none does.
func familyOfWord(p Protocol) Family {
	var f Family
	for _, r := range table {
		if r.Protocol != p || r.Family == FamilyWebUploader {
			continue
		}
		if f != "" {
			return ""
		}
		f = r.Family
	}
	return f
}

func hasAll(txt map[string]string, keys []string) bool {
	for _, k := range keys {
		if _, ok := txtValue(txt, k); !ok {
			return false
		}
	}
	return len(keys) > 0
}

func txtValue(txt map[string]string, key string) (string, bool) {
	for _, k := range slices.Sorted(maps.Keys(txt)) {
		if strings.EqualFold(k, key) {
			return txt[k], true
		}
	}
	return "", false
}

// ServiceName normalises a service type: "_OTA._tcp.local." → "_ota._tcp".
func ServiceName(s string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "."), ".local"))
}

// clean makes device text safe to quote on one line.
func clean(s string, n int) string { return oneline.Clean(s, n) }
