package rawhttp

import (
	"strings"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// The raw HTTP family: the seed firmware and the OTS firmware take the
// image as the raw body of POST /update on TCP 3232 (device-contract.md
// §1–§2); the OTS firmware's web app on port 80 has /api/status and its
// own upload form, POST /ota/upload.

// The raw HTTP personalities.
const (
	// Seed is the seed firmware: HTTP POST /update on TCP 3232 with Bearer
	// auth, mDNS _ota._tcp + _http._tcp, version visible only on the serial log.
	Seed core.Personality = "seed"
	// OTS is the OTS firmware as shipped: HTTP POST /update on 3232 without
	// auth, the web app on 80 (/api/status, /ota/upload), mDNS _arduino._tcp.
	OTS core.Personality = "ots"
)

// The firmwares of the raw HTTP personalities.
var (
	SeedFirmware core.Firmware = rawFirmware{Seed}
	OTSFirmware  core.Firmware = rawFirmware{OTS}
)

// rawFirmware is the seed's or the OTS firmware.
type rawFirmware struct{ p core.Personality }

func (f rawFirmware) Traits() core.Traits {
	t := core.Traits{Name: f.p, Platform: core.PlatformIDF, Protocol: "http", OTAPort: 3232, Web: true}
	switch f.p {
	case Seed:
		t.Instance = "OTS Firmware Main"
	case OTS:
		t.Instance = "OTS Firmware Main Controller"
		t.Knobs = []core.Knob{{Field: "APIUptime", Why: "only its web app serves /api/status"}}
	}
	return t
}

// Servers: the upload port and the web app (the seed advertises _http._tcp
// on 80 too, and serves its page there).
func (f rawFirmware) Servers(e *core.Env) []core.Server {
	d := &rawDevice{e: e, p: f.p}
	return []core.Server{
		{Name: "ota", Port: core.PortOTA, Routes: d.otaRoutes()},
		{Name: "web", Port: core.PortWeb, Routes: d.webRoutes()},
	}
}

// Services is what the firmware registers with mDNS (device-contract.md
// §1), plus the §4 TXT keys with Extensions.
func (f rawFirmware) Services(e *core.Env) []mdnsd.Service {
	c := e.Config()
	otaPort, webPort := e.Port(core.PortOTA), e.Port(core.PortWeb)
	var out []mdnsd.Service
	web := func() {
		if webPort >= 0 {
			out = append(out, mdnsd.Service{Instance: c.Instance, Type: "_http._tcp", Port: uint16(webPort)})
		}
	}
	switch f.p {
	case Seed:
		ota := mdnsd.Service{Instance: c.Instance, Type: "_ota._tcp", Port: uint16(otaPort)}
		if c.Extensions {
			auth := "none"
			if !c.Password.IsZero() {
				auth = "bearer"
			}
			ota.TXT = e.ContractTXT("board="+c.Board, "auth="+auth, "path=/update", "api="+core.ContractAPIVersion)
		}
		out = append(out, ota)
		web()
	case OTS:
		out = append(out, mdnsd.Service{Instance: c.Instance, Type: "_arduino._tcp", Port: uint16(otaPort)})
		web()
		if c.Extensions {
			out = append(out, mdnsd.Service{Instance: c.Instance, Type: "_ota._tcp", Port: uint16(otaPort),
				TXT: e.ContractTXT("board="+c.Board, "auth=none", "path=/update", "api="+core.ContractAPIVersion)})
		}
	}
	return out
}

// The endpoints Config.Omit can name.
const (
	omitOTAStatus = "ota-status"
	omitAPIStatus = "api-status"
)

// The keys of GET /ota/status, in the order the device sends them.
var otaStatusKeys = []string{"project", "version", "idf", "chip", "running", "boot", "state", "secure_version",
	"elf_sha256", "slot_size", "uptime_s"}

// The keys of the OTS web app's GET /api/status, in its order; "uptime"
// only with Config.APIUptime.
var apiStatusKeys = []string{"firmwareVersion", "mode", "ip", "hostname", "serialNumber", "ownerName",
	"wifiConnected", "rssi", "uptime", "freeHeap"}

// Omittable: /ota/status with Extensions, and the OTS web app's /api/status.
func (f rawFirmware) Omittable(extensions, apiUptime bool) []string {
	var out []string
	if extensions {
		out = append(out, omitOTAStatus)
		for _, k := range otaStatusKeys {
			out = append(out, omitOTAStatus+"."+k)
		}
	}
	if f.p == OTS {
		out = append(out, omitAPIStatus)
		for _, k := range apiStatusKeys {
			if k == "uptime" && !apiUptime {
				continue
			}
			out = append(out, omitAPIStatus+"."+k)
		}
	}
	return out
}

func (f rawFirmware) NotOmittable(p core.Personality, field string, extensions, apiUptime bool) string {
	ep, key, _ := strings.Cut(field, ".")
	switch {
	case ep == omitOTAStatus && (!extensions || !p.HTTP()):
		return "only an HTTP device with Extensions serves /ota/status"
	case ep == omitAPIStatus && p != OTS:
		return "only the ots personality serves /api/status"
	case ep == omitAPIStatus && key == "uptime":
		return "this /api/status tells no uptime already (APIUptime is off, as on the OTS firmware)"
	}
	return ""
}

// rawDevice is one device's handlers.
type rawDevice struct {
	e *core.Env
	p core.Personality
}
