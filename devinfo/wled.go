package devinfo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// FromJSONInfo: WLED's GET /json/info on its web port.
const FromJSONInfo Source = "/json/info"

// WLEDInfo is what ots-ota reads of WLED's GET /json/info
// (docs/protocols/wled.md). Strings not told are empty and numbers not
// told nil: unknown, never 0.
type WLEDInfo struct {
	// Ver is WLED's version ("0.15.5", "16.0.1", "17.0.0-devV5").
	Ver string `json:"ver,omitempty"`
	// VID is the build code (yymmddb), fixed per release, not per compile.
	VID string `json:"vid,omitempty"`
	// Release is the release name the device's update check compares
	// ("ESP32", "ESP8266_160"); WLED before 0.15.0 tells none.
	Release string `json:"release,omitempty"`
	// Arch is "esp8266", "esp32" (classic) or the chip model ("ESP32-S3").
	Arch string `json:"arch,omitempty"`
	// UptimeS is the uptime in seconds.
	UptimeS *int64 `json:"uptime,omitempty"`
	MAC     string `json:"mac,omitempty"`
	// Name is the device's name (its "Server description").
	Name  string `json:"name,omitempty"`
	Brand string `json:"brand,omitempty"`
}

// errNotWLED: the body is JSON, but not WLED's /json/info.
var errNotWLED = errors.New("not WLED's /json/info (no ver and no brand)")

// ParseWLEDInfo reads a GET /json/info body. It fails when the body is no
// JSON object, tells neither ver nor brand (some other server's JSON), or
// a field it reads has the wrong type. vid is a number on the wire and
// kept as its digits.
func ParseWLEDInfo(b []byte) (WLEDInfo, error) {
	var raw struct {
		Ver     json.RawMessage `json:"ver"`
		VID     json.RawMessage `json:"vid"`
		Release json.RawMessage `json:"release"`
		Arch    json.RawMessage `json:"arch"`
		Uptime  json.RawMessage `json:"uptime"`
		MAC     json.RawMessage `json:"mac"`
		Name    json.RawMessage `json:"name"`
		Brand   json.RawMessage `json:"brand"`
	}
	if err := unmarshalObject(b, &raw); err != nil {
		return WLEDInfo{}, err
	}
	if raw.Ver == nil && raw.Brand == nil {
		return WLEDInfo{}, errNotWLED
	}
	var s WLEDInfo
	errs := fieldErrors(
		named("ver", jsonText(raw.Ver, &s.Ver)),
		named("vid", jsonText(raw.VID, &s.VID)),
		named("release", jsonString(raw.Release, &s.Release)),
		named("arch", jsonString(raw.Arch, &s.Arch)),
		named("uptime", jsonCount(raw.Uptime, &s.UptimeS)),
		named("mac", jsonString(raw.MAC, &s.MAC)),
		named("name", jsonString(raw.Name, &s.Name)),
		named("brand", jsonString(raw.Brand, &s.Brand)),
	)
	if len(errs) > 0 {
		return s, fmt.Errorf("wled info: %w", oneLine(errs))
	}
	return s, nil
}

// Chip is the chip Arch names, as ots-ota spells chips ("esp32s3"); ""
// when Arch is not told.
func (w WLEDInfo) Chip() string {
	return strings.ReplaceAll(strings.ToLower(w.Arch), "-", "")
}

// GetWLEDInfo fetches and parses WLED's GET /json/info from addr
// (host:port of the web port).
func GetWLEDInfo(ctx context.Context, addr string, o Options) (WLEDInfo, error) {
	b, err := get(ctx, addr, "/json/info", o)
	return parseAnswer(b, err, ParseWLEDInfo)
}

// queryWLED is Query for a WLED device (Target.WLED): one GET /json/info
// on the web port, WLED's one server (it serves no /ota/status and no
// /api/status).
func queryWLED(ctx context.Context, t Target, o Options, f *Facts, connErr func() error) Facts {
	wp := t.WebPort
	if wp <= 0 {
		wp = 80
	}
	addr := net.JoinHostPort(t.Host, strconv.Itoa(wp))
	f.Address = addr
	f.Protocol = Fact{ProtoHTTP, FromTarget}
	st, err := GetWLEDInfo(ctx, addr, o)
	f.Silent = f.noteRead("GET /json/info", err)
	if err == nil {
		f.WLED = &st
	}
	if f.WLED != nil {
		w := f.WLED
		f.Version = Fact{w.Ver, FromJSONInfo}
		f.Chip = Fact{w.Chip(), FromJSONInfo}
		if w.UptimeS != nil {
			f.Uptime = Fact{strconv.FormatInt(*w.UptimeS, 10), FromJSONInfo}
		}
	}
	if !f.Version.Known() {
		f.Version = Fact{}
		if f.Reachable {
			f.VersionNote = "version not observable: WLED's /json/info told no ver (see the note)"
		} else {
			f.VersionNote = "version not observable: the device did not answer"
		}
	}
	if !f.Chip.Known() {
		f.Chip = Fact{}
	}
	if !f.Reachable {
		f.ConnectErr = connErr()
	}
	return *f
}
