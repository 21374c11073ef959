package wled

import (
	"encoding/json"
	"github.com/ots-ota/ots-ota/sim/internal/ordered"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
)

// kv and object write JSON in the device's order, without spaces.
type kv struct {
	k string
	v any
}

type object []kv

func (o object) MarshalJSON() ([]byte, error) {
	return ordered.Marshal(o, func(e kv) (string, any) { return e.k, e.v })
}

// info is serializeInfo (json.cpp): the keys a client reads (ver, vid,
// release, brand, product, arch, core, mac, ip, uptime, name) in WLED's
// order, among the others with plausible values of an idle strip.
func (d *device) info() object {
	c := d.e.Config()
	st := d.e.State()
	codename := "Kōsen"
	if d.line16 {
		codename = "Niji"
	}
	arch, coreVer, lwip := "esp8266", "3_1_2", 2
	if !d.esp8266 {
		lwip = 0
		arch = strings.ToUpper(strings.Replace(c.Chip, "esp32", "ESP32-", 1))
		if c.Chip == "esp32" {
			arch = "esp32"
		}
		coreVer = st.IDFVer
		if coreVer == "" {
			coreVer = "v4.4.7-dirty"
		}
	}
	o := object{
		{"ver", d.ver}, {"vid", jsonNumber(d.vid)}, {"cn", codename}, {"release", d.release}, {"repo", "wled/WLED"},
	}
	if d.line16 {
		o = append(o, kv{"deviceId", escapedMAC(d.e)})
	}
	o = append(o,
		kv{"leds", object{{"count", 30}, {"pwr", 0}, {"fps", 0}, {"maxpwr", 0}, {"maxseg", 32}, {"bootps", 0},
			{"seglc", []int{1}}, {"lc", 1}, {"rgbw", false}, {"wv", 0}, {"cct", 0}}},
		kv{"str", false}, kv{"name", "WLED"}, kv{"udpport", 21324}, kv{"simplifiedui", false}, kv{"live", false},
		kv{"liveseg", -1}, kv{"lm", ""}, kv{"lip", ""}, kv{"ws", 0}, kv{"fxcount", 187}, kv{"palcount", 71},
		kv{"cpalcount", 0}, kv{"maps", []object{{{"id", 0}}}},
		kv{"wifi", object{{"bssid", "00:00:00:00:00:00"}, {"rssi", -60}, {"signal", 80}, {"channel", 1}, {"ap", false}}},
		kv{"fs", object{{"u", 12}, {"t", 983}, {"pmt", 0}}},
		kv{"ndc", 0}, kv{"arch", arch}, kv{"core", coreVer}, kv{"clock", clockMHz(d.esp8266)}, kv{"flash", 4},
		kv{"lwip", lwip}, kv{"freeheap", 180000}, kv{"uptime", int64(st.Uptime / time.Second)},
		kv{"time", "1970-1-1, 00:00:00"}, kv{"opt", 79}, kv{"brand", "WLED"}, kv{"product", "FOSS"},
		kv{"mac", escapedMAC(d.e)}, kv{"ip", c.IP.String()},
	)
	return o
}

func clockMHz(esp8266 bool) int {
	if esp8266 {
		return 80
	}
	return 240
}

// jsonNumber writes vid as the number it is in WLED's JSON.
type jsonNumber string

func (n jsonNumber) MarshalJSON() ([]byte, error) { return []byte(n), nil }

// state is a small serializeState: an idle strip.
func (d *device) state() object {
	return object{{"on", true}, {"bri", 128}, {"transition", 7}, {"ps", -1}, {"pl", -1}}
}

// handleJSON is GET /json and its subpaths, chosen as serveJson does (by
// what the path contains): state, info, si (both), /json alone (both; the
// effect and palette lists left out), anything else 501 {"error":4}
// (ERR_NOT_IMPL).
func (d *device) handleJSON(r *core.Request) error {
	var v any
	p := r.Path()
	switch {
	case strings.Index(p, "state") > 0:
		v = d.state()
	case strings.Index(p, "info") > 0:
		v = d.info()
	case strings.Index(p, "si") > 0 || len(p) <= 6:
		v = object{{"state", d.state()}, {"info", d.info()}}
	default:
		return d.web.Reply(r, 501, arduino.TypeJSON, `{"error":4}`)
	}
	body, _ := json.Marshal(v)
	return d.web.Reply(r, 200, arduino.TypeJSON, string(body))
}

// handleRoot stands in for the UI's index page.
func (d *device) handleRoot(r *core.Request) error {
	return d.web.Reply(r, 200, arduino.TypeHTML, `<!DOCTYPE html><html><head><title>WLED</title></head><body>WLED `+d.ver+`</body></html>`)
}
