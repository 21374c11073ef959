package core

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// What a device tells, and how a test makes it tell less (Config.Omit, the
// CLI's --omit). Real firmware varies: the OTS web app's /api/status has
// no uptime, a firmware may have /ota/status without elf_sha256, or no
// version in TXT. A field name is one of (the endpoints are sim/rawhttp's:
// each family lists its own, Teller)
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

// The Extensions TXT keys a device can leave out.
var omitTXTKeys = []string{"version", "project", "chip"}

const omitTXT = "txt"

// OmittableFields lists the field names Config.Omit accepts for a device
// of personality p with or without Extensions and APIUptime: its
// firmware's endpoints' (Teller), then the TXT keys.
func OmittableFields(p Personality, extensions, apiUptime bool) []string {
	var out []string
	if fw, ok := Lookup(p); ok {
		if t, ok := fw.(Teller); ok {
			out = append(out, t.Omittable(extensions, apiUptime)...)
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
		if why := notOmittable(p, f, extensions, apiUptime); why != "" {
			return fmt.Errorf("omit %q: %s", f, why)
		}
		return fmt.Errorf("omit %q: unknown field (have: %s)", f, strings.Join(have, ", "))
	}
	return nil
}

// notOmittable asks every firmware, p's first, why f cannot be omitted.
func notOmittable(p Personality, f string, extensions, apiUptime bool) string {
	ep, _, _ := strings.Cut(f, ".")
	if ep == omitTXT && !extensions {
		return "only a device with Extensions adds TXT keys"
	}
	ps := Personalities()
	if i := slices.Index(ps, p); i > 0 {
		ps = append(append([]Personality{p}, ps[:i]...), ps[i+1:]...)
	}
	for _, q := range ps {
		fw, _ := Lookup(q)
		if t, ok := fw.(Teller); ok {
			if why := t.NotOmittable(p, f, extensions, apiUptime); why != "" {
				return why
			}
		}
	}
	return ""
}

// omits reports whether the device leaves out field.
func (d *Device) omits(field string) bool { return d.s.omit[field] }

// JSONField is one key of a JSON object, in the order it is sent.
type JSONField struct {
	Key string
	Val any
}

// objectJSON encodes fields in order, leaving out the ones the device omits
// (prefix is the endpoint's name in Config.Omit).
func (d *Device) objectJSON(prefix string, fields []JSONField) ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	n := 0
	for _, f := range fields {
		if d.omits(prefix + "." + f.Key) {
			continue
		}
		v, err := json.Marshal(f.Val)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.Key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
		n++
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}
