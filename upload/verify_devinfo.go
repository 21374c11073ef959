package upload

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/detect"
	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/image"
)

// DeviceObserver reads devices through package devinfo: GET /ota/status on
// the OTA port, GET /api/status on the web port, and the mDNS TXT record
// when TXT supplies one. The Arduino web uploaders (protocols form and
// elegantota) tell no version of their own: for them it reads
// /ota/status and /api/status on the web server that takes the upload (a
// sketch may add either) and ESPEasy's GET /json. For WLED it reads GET
// /json/info only. It only reads.
type DeviceObserver struct {
	// Timeout bounds each connection and request; 0 = devinfo's default.
	Timeout time.Duration
	// TXT returns the device's TXT record, nil when none is known; while
	// IsVerifying(ctx) it must be a fresh one. nil = no TXT at all.
	TXT func(ctx context.Context, t Target) map[string]string
	// ExpectVersion is --expect-version. ESPEasy's /json tells a version
	// only when it is given: the device's Git Build, or ExpectVersion
	// itself when it equals the device's Build Time. Without it the
	// expected version is the image's own (its app descriptor's), which no
	// ESPEasy build tells, so a Git Build would read as another image.
	ExpectVersion string
	// Credentials gives a device's credentials, for the families whose
	// reads need them (Tasmota's /cm behind a WebPassword); nil = none.
	Credentials func(t Target) Credentials
}

// TasmotaUser is the one user Tasmota's web server knows.
const TasmotaUser = "admin"

// TasmotaBasic is the HTTP Basic credential Tasmota takes: cred's user, or
// TasmotaUser when only a password is given; zero when no password is.
func TasmotaBasic(cred Credentials) auth.Secret {
	if cred.Password.IsZero() {
		return auth.Secret{}
	}
	user := cred.User
	if user == "" {
		user = TasmotaUser
	}
	return auth.NewSecret("Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+cred.Password.Reveal())))
}

// webUploader: the protocol's devices are Arduino web uploaders
// (HTTPUpdateServer, ESPEasy, ElegantOTA), one web server for everything.
func webUploader(p Protocol) bool {
	return p == Protocol(detect.ProtoForm) || p == Protocol(detect.ProtoElegantOTA)
}

// Observe implements Observer.
func (o *DeviceObserver) Observe(ctx context.Context, t Target) (Facts, error) {
	if t.Protocol == ESPHome {
		return o.observeTXT(ctx, t)
	}
	dt := devinfo.Target{Name: t.Name, Host: t.Host, Port: t.Port, WebPort: t.WebPort}
	switch t.Protocol {
	case HTTP:
		dt.Protocol = devinfo.ProtoHTTP
	case Espota:
		dt.Protocol = devinfo.ProtoEspota
	}
	if t.Protocol == WLED {
		// WLED answers everything on its one web server, where the upload
		// goes: GET /json/info is all that is read.
		dt.Protocol, dt.WLED = devinfo.ProtoHTTP, true
		if t.WebPort == 0 {
			dt.WebPort = t.Port
		}
	}
	if t.Protocol == Tasmota {
		// Status 0 on its web server, nothing else: Tasmota tells
		// everything there.
		dt.Protocol, dt.Tasmota = devinfo.ProtoHTTP, true
		if dt.Port == 0 {
			dt.Port = 80
		}
		if o.Credentials != nil {
			dt.Authorization = TasmotaBasic(o.Credentials(t))
		}
	}
	if webUploader(t.Protocol) {
		// The upload's web server answers the reads too, unless the
		// target names another web port.
		dt.Protocol, dt.ReadJSON = devinfo.ProtoHTTP, true
		if t.WebPort == 0 {
			dt.WebPort = t.Port
		}
	}
	// TXT is the last source: ask for it (a browse, while verifying) only
	// where the device's HTTP answers tell no version.
	if o.TXT != nil && t.Protocol == Espota {
		dt.TXT = o.TXT(ctx, t)
	}
	df, err := devinfo.Query(ctx, dt, devinfo.Options{Timeout: o.Timeout})
	if err != nil {
		return Facts{}, err
	}
	if o.TXT != nil && dt.TXT == nil && !dt.Tasmota && !df.Version.Known() && ctx.Err() == nil {
		if dt.TXT = o.TXT(ctx, t); dt.TXT != nil {
			if df, err = devinfo.Query(ctx, dt, devinfo.Options{Timeout: o.Timeout}); err != nil {
				return Facts{}, err
			}
		}
	}
	f := factsFromDevinfo(df, t.Protocol, o.ExpectVersion)
	if dt.TXT != nil && IsVerifying(ctx) {
		// A fresh TXT record is the device answering, over mDNS.
		f.Answered = true
	}
	return f, nil
}

// observeTXT reads a device that tells what it runs in its mDNS TXT
// record only (ESPHome): nothing is sent to it. While verifying, no record
// is a device that does not answer (restarting, or gone): silent.
func (o *DeviceObserver) observeTXT(ctx context.Context, t Target) (Facts, error) {
	var txt map[string]string
	if o.TXT != nil {
		txt = o.TXT(ctx, t)
	}
	if txt == nil {
		if IsVerifying(ctx) {
			return Facts{Silent: true}, nil
		}
		return Facts{}, errors.New("no mDNS record of the device: ESPHome tells what it runs only there")
	}
	df, err := devinfo.Query(ctx, devinfo.Target{Name: t.Name, Host: t.Host, Port: t.Port, Protocol: devinfo.ProtoESPHome, TXT: txt}, devinfo.Options{Timeout: o.Timeout})
	if err != nil {
		return Facts{}, err
	}
	f := factsFromDevinfo(df, t.Protocol, o.ExpectVersion)
	f.Answered = true
	if df.ESPHome != nil {
		f.Build = df.ESPHome.ConfigHash
	}
	return f, nil
}

func factsFromDevinfo(df devinfo.Facts, asked Protocol, expect string) Facts {
	f := Facts{
		Project: df.Project.Value, Version: df.Version.Value, Chip: df.Chip.Value,
		State: df.State.Value, Board: df.Board.Value, VersionSource: string(df.Version.Source),
		Running: df.Running.Value, Boot: df.Boot.Value,
	}
	if df.Version.Source == devinfo.FromJSON {
		f.Version = espeasyVersion(df.ESPEasy, expect)
		if f.Version == "" {
			f.VersionSource = ""
		}
	}
	// Reachable after a TCP probe only means a connect succeeded; an answer
	// is an HTTP reply (or, asked as HTTP, what Reachable then means).
	f.Answered = df.OTA != nil || df.API != nil || df.Reachable && df.Protocol.Source != devinfo.FromProbe && df.Protocol.Value == devinfo.ProtoHTTP
	if asked == Auto || asked == "" {
		switch df.Protocol.Value {
		case devinfo.ProtoHTTP:
			f.Protocol = HTTP
		case devinfo.ProtoEspota:
			f.Protocol = Espota
		case devinfo.ProtoESPHome:
			f.Protocol = ESPHome
		}
		if df.Board.Known() {
			// TXT board/auth_upload on _arduino._tcp: ArduinoOTA (contract §1).
			f.Protocol = Espota
		}
	}
	if df.Tasmota != nil {
		f.Intermediate, f.Image = df.Tasmota.Intermediate(), df.Tasmota.Version
	}
	if df.OTA != nil {
		f.ELFSHA256 = df.OTA.ELFSHA256
		if df.OTA.SlotSize != nil {
			f.SlotSize, f.SlotSizeKnown = *df.OTA.SlotSize, true
		}
	}
	f.Silent = df.Silent
	if df.Uptime.Known() {
		if n, err := strconv.ParseInt(df.Uptime.Value, 10, 64); err == nil {
			f.Uptime, f.UptimeKnown, f.UptimeSource = time.Duration(n)*time.Second, true, string(df.Uptime.Source)
		}
	}
	return f
}

// espeasyVersion is the version ESPEasy's /json tells when --expect-version
// (expect) is given: expect itself when the device's Build Time says the
// same (the compiler's __DATE__ pads the day with a space, so spaces are
// not counted), else its Git Build. "" when expect is not given, or
// nothing was told.
func espeasyVersion(e *devinfo.ESPEasyJSON, expect string) string {
	if e == nil || expect == "" {
		return ""
	}
	if e.BuildTime != "" && strings.Join(strings.Fields(e.BuildTime), " ") == strings.Join(strings.Fields(expect), " ") {
		return expect
	}
	return e.GitBuild
}

// deviceChip is the device's chip as it tells it: the chip fact (/ota/status,
// TXT chip=), else the chip its TXT board= names (ArduinoOTA: ESP8266_GENERIC,
// esp32s3, …); from says which. "" when neither tells: the port (8266 or
// 3232) is no chip fact, it only selects the protocol.
func deviceChip(f Facts, t Target) (chip, from string) {
	if f.Chip != "" {
		return f.Chip, "it tells chip " + f.Chip
	}
	if c, ok := image.BoardChip(f.Board); ok {
		return c.String(), "its board is " + f.Board
	}
	if c, ok := image.ChipByName(t.Chip); ok {
		if t.ChipFrom != "" {
			return c.String(), t.ChipFrom
		}
		return c.String(), "the inventory says chip " + t.Chip
	}
	return "", ""
}

// otherFamily: one chip is an ESP8266 and the other is not. Names the
// image package does not know count as neither.
func otherFamily(a, b string) bool {
	ca, oka := image.ChipByName(a)
	cb, okb := image.ChipByName(b)
	return oka && okb && ca.IsESP8266() != cb.IsESP8266()
}
