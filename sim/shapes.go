package sim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// What a device tells, and how a test makes it tell less (Config.Omit, the
// CLI's --omit). Real firmware varies: the OTS web app's /api/status has
// no uptime, a firmware may have /ota/status without elf_sha256, or no
// version in TXT. A field name is one of
//
//	ota-status            GET /ota/status itself (404, as without Extensions)
//	ota-status.KEY        one key of /ota/status: project, version, idf, chip,
//	                      running, boot, state, secure_version, elf_sha256,
//	                      slot_size, uptime_s
//	api-status            the OTS web app's GET /api/status itself (404)
//	api-status.KEY        one key of /api/status: firmwareVersion, mode, ip,
//	                      hostname, serialNumber, ownerName, wifiConnected,
//	                      rssi, freeHeap, and uptime when Config.APIUptime
//	txt.KEY               one Extensions TXT key: version, project, chip
//
// A name for something the device does not serve (ota-status without
// Extensions, api-status on any personality but ots) is an error.

// The keys of GET /ota/status, in the order the device sends them.
var otaStatusKeys = []string{"project", "version", "idf", "chip", "running", "boot", "state", "secure_version",
	"elf_sha256", "slot_size", "uptime_s"}

// The keys of the OTS web app's GET /api/status, in its order; "uptime"
// only with Config.APIUptime.
var apiStatusKeys = []string{"firmwareVersion", "mode", "ip", "hostname", "serialNumber", "ownerName",
	"wifiConnected", "rssi", "uptime", "freeHeap"}

// The Extensions TXT keys a device can leave out.
var omitTXTKeys = []string{"version", "project", "chip"}

const (
	omitOTAStatus = "ota-status"
	omitAPIStatus = "api-status"
	omitTXT       = "txt"
)

// OmittableFields lists the field names Config.Omit accepts for a device
// of personality p with or without Extensions and APIUptime.
func OmittableFields(p Personality, extensions, apiUptime bool) []string {
	var out []string
	if extensions && p.http() {
		out = append(out, omitOTAStatus)
		for _, k := range otaStatusKeys {
			out = append(out, omitOTAStatus+"."+k)
		}
	}
	if p == OTS {
		out = append(out, omitAPIStatus)
		for _, k := range apiStatusKeys {
			if k == "uptime" && !apiUptime {
				continue
			}
			out = append(out, omitAPIStatus+"."+k)
		}
	}
	if extensions {
		for _, k := range omitTXTKeys {
			out = append(out, omitTXT+"."+k)
		}
	}
	return out
}

// CheckOmit says in one line why a field cannot be omitted on such a device.
func CheckOmit(p Personality, extensions, apiUptime bool, fields []string) error {
	have := OmittableFields(p, extensions, apiUptime)
	for _, f := range fields {
		if slices.Contains(have, f) {
			continue
		}
		ep, key, _ := strings.Cut(f, ".")
		switch {
		case ep == omitOTAStatus && (!extensions || !p.http()):
			return fmt.Errorf("omit %q: only an HTTP device with Extensions serves /ota/status", f)
		case ep == omitAPIStatus && p != OTS:
			return fmt.Errorf("omit %q: only the ots personality serves /api/status", f)
		case ep == omitAPIStatus && key == "uptime":
			return fmt.Errorf("omit %q: this /api/status tells no uptime already (APIUptime is off, as on the OTS firmware)", f)
		case ep == omitTXT && !extensions:
			return fmt.Errorf("omit %q: only a device with Extensions adds TXT keys", f)
		}
		return fmt.Errorf("omit %q: unknown field (have: %s)", f, strings.Join(have, ", "))
	}
	return nil
}

// omits reports whether the device leaves out field.
func (d *Device) omits(field string) bool { return d.s.omit[field] }

// jsonField is one key of a JSON object, in the order it is sent.
type jsonField struct {
	key string
	val any
}

// objectJSON encodes fields in order, leaving out the ones the device omits
// (prefix is the endpoint's name in Config.Omit).
func (d *Device) objectJSON(prefix string, fields []jsonField) ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	n := 0
	for _, f := range fields {
		if d.omits(prefix + "." + f.key) {
			continue
		}
		v, err := json.Marshal(f.val)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
		n++
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}
