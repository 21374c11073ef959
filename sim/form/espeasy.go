package form

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"html"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/arduino"
)

// ESPEasy's own pages: GET /json (no password, ever), GET / (behind the
// admin password, by Digest), and its not-found handler.

// espeasyRealm is the realm of ESPEasy's login.
const espeasyRealm = "Login Required (default user: admin)"

// buildEpoch is where the sim's build times start: the ESPEasy snapshot
// the facts were read from was built on this day.
var buildEpoch = time.Date(2024, 10, 19, 0, 0, 0, 0, time.UTC)

// buildTime is the running image's build time: __DATE__ " " __TIME__ of
// its build, which the sim derives from the image's bytes (every build
// differs, the same build tells the same).
func (d *device) buildTime(st core.State) time.Time {
	var sum [32]byte
	for _, s := range st.Slots {
		if s.Label == st.Running && s.SHA256 != "" {
			sum = sha256.Sum256([]byte(s.SHA256))
		}
	}
	secs := binary.BigEndian.Uint32(sum[:4]) % (365 * 86400)
	return buildEpoch.Add(time.Duration(secs) * time.Second)
}

// handleJSON is GET /json: the System and WiFi objects, keys named as the
// UI labels, in ESPEasy's order and layout (one key a line); view=
// sensorupdate leaves them out.
func (d *device) handleJSON(r *core.Request) error {
	c := d.e.Config()
	st := d.e.State()
	view, _ := arduino.ArgValue(arduino.Args(r), "view")
	var b strings.Builder
	b.WriteString("{")
	if view != "sensorupdate" {
		bt := d.buildTime(st)
		cause := "Cold Boot"
		if st.BootCount > 1 {
			cause = "Soft Reboot"
		}
		chip := "ESP8266"
		if !d.esp8266 {
			chip = strings.ToUpper(strings.Replace(c.Chip, "esp32", "ESP32-", 1))
			chip = strings.TrimSuffix(chip, "-")
		}
		sys := []struct {
			k string
			v string // JSON
		}{
			{"Build", bt.Format("20060102")},
			{"Git Build", strconv.Quote(st.Version)},
			{"System Libraries", strconv.Quote(d.libraries())},
			{"Plugin Count", "48"},
			{"Plugin Description", `["Normal"]`},
			{"Build Time", strconv.Quote(bt.Format("Jan _2 2006 15:04:05"))},
			{"Binary Filename", strconv.Quote(st.Project + "-" + st.Version + ".bin")},
			{"Unit Number", "0"},
			{"Unit Name", strconv.Quote(c.Name)},
			{"Uptime", strconv.FormatInt(int64(st.Uptime/time.Minute), 10)},
			{"Uptime (ms)", strconv.FormatInt(st.Uptime.Milliseconds(), 10)},
			{"Last Boot Cause", strconv.Quote(cause)},
			{"ESP Chip Model", strconv.Quote(chip)},
		}
		b.WriteString(`"System":{` + "\n")
		for i, kv := range sys {
			if i > 0 {
				b.WriteString(",\n")
			}
			fmt.Fprintf(&b, "%q:%s", kv.k, kv.v)
		}
		b.WriteString("\n},\n")
		fmt.Fprintf(&b, `"WiFi":{`+"\n"+`"Hostname":%q,`+"\n"+`"IP Address":%q`+"\n},\n", c.Name, c.IP.String())
	}
	b.WriteString(`"Sensors":[` + "\n" + `],` + "\n" + `"TTL":60000` + "\n}")
	return d.web.Reply(r, 200, arduino.TypeJSON, b.String())
}

// libraries is System Libraries: the core the build runs on.
func (d *device) libraries() string {
	if d.esp8266 {
		return "ESP82xx Core 3.1.2, NONOS SDK 2.2.2-dev(38a443e), LWIP: 2.1.3 PUYA support"
	}
	return "ESP32 SDK 5.1.4"
}

// handleRoot is GET /: the main page, or the login ESPEasy asks for when
// it has an admin password.
func (d *device) handleRoot(r *core.Request) error {
	c := d.e.Config()
	if !c.Password.IsZero() && !d.web.Authenticate(r, "admin", c.Password.Reveal()) {
		return d.web.RequestAuth(r, true, espeasyRealm)
	}
	name := html.EscapeString(c.Name)
	body := "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'/><title>" + name +
		"</title></head><body><header><h1>ESP Easy Mega: " + name + "</h1></header></body></html>"
	return d.web.Reply(r, 200, arduino.TypeHTML, body)
}

// handleNotFound is ESPEasy's handleNotFound(): 404 text/plain naming the
// URI, method and argument count (a debug build adds each argument and
// header; this is a release build).
func (d *device) handleNotFound(r *core.Request) error {
	if !d.web.ReadBody(r, nil) {
		return core.ErrClose
	}
	method := "GET"
	if r.Method() == "POST" {
		method = "POST"
	}
	body := fmt.Sprintf("URI: %s\nMethod: %s\nArguments: %d", r.Path(), method, len(arduino.Args(r)))
	return d.web.Reply(r, 404, arduino.TypePlain, body)
}
