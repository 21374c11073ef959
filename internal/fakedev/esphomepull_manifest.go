package fakedev

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// The manifest an ESPHome `update: platform: http_request` entity polls,
// read as the device reads it (esphome http_request_update.cpp, as the
// lead and docs/protocols/esphome-pull.md state it), then checked against
// the shape ots-ota promises to write: a fake that only did what the
// device does would let a manifest pass that works by luck.

// esphomeInfo is the entity's update_info after a good check: what its
// state JSON tells and what INSTALL fetches.
type esphomeInfo struct {
	Title, Latest, Current string
	Summary, ReleaseURL    string
	URL, MD5               string // the firmware URL after the path rule; ota.md5 as written
}

// parseESPHomeManifest reads body as the device built for chip (its
// variant: "ESP32", "ESP32-S3", "ESP8266", …) does. refusal is the
// device's reason for keeping its old update_info ("" = taken): the
// manifest must be a JSON object with string "name" and "version" and an
// array "builds"; every build up to the first whose "chipFamily" equals
// chip must have a string chipFamily; that build needs an object "ota"
// with string "path" and "md5". A manifest with no build for chip is
// refused too. The path rule is applied against source.
func parseESPHomeManifest(body []byte, chip, source string) (info esphomeInfo, refusal string) {
	var root map[string]any
	if err := json.Unmarshal(body, &root); err != nil || root == nil {
		return info, "not a JSON object"
	}
	name, ok1 := root["name"].(string)
	version, ok2 := root["version"].(string)
	builds, ok3 := root["builds"].([]any)
	if !ok1 || !ok2 || !ok3 {
		return info, `no string "name", string "version" and array "builds"`
	}
	info.Title, info.Latest = name, version
	for i, b := range builds {
		build, _ := b.(map[string]any)
		family, ok := build["chipFamily"].(string)
		if !ok {
			return info, fmt.Sprintf("build %d has no string chipFamily", i)
		}
		if family != chip {
			continue
		}
		ota, ok := build["ota"].(map[string]any)
		if !ok {
			return info, fmt.Sprintf("the %s build has no ota object", chip)
		}
		path, ok1 := ota["path"].(string)
		md5, ok2 := ota["md5"].(string)
		if !ok1 || !ok2 {
			return info, fmt.Sprintf(`the %s build's ota has no string "path" and "md5"`, chip)
		}
		info.URL, info.MD5 = esphomeFirmwareURL(source, path), md5
		info.Summary, _ = ota["summary"].(string)
		info.ReleaseURL, _ = ota["release_url"].(string)
		return info, ""
	}
	return info, "no build for " + chip
}

// esphomeFirmwareURL is ESPHome's rule for ota.path: a path holding
// "http" anywhere is taken as it is (so "/fw/http-1.bin" is too, quirk
// and all); one starting with "/" is joined to the source's scheme and
// host (everything before the first "/" from the ninth character on);
// anything else is relative to the source's folder (up to its last "/").
func esphomeFirmwareURL(source, path string) string {
	if path == "" || strings.Contains(path, "http") {
		return path
	}
	if path[0] == '/' {
		domain := source
		if len(source) > 8 {
			if i := strings.IndexByte(source[8:], '/'); i >= 0 {
				domain = source[:8+i]
			}
		}
		return domain + path
	}
	return source[:strings.LastIndexByte(source, '/')+1] + path
}

// esphomeManifestShape lists what is wrong with a manifest against the
// shape ots-ota writes ({"name","version","builds":[{"chipFamily",
// "ota":{"path","md5","summary"}}]}), for a device of chip: what the
// device refuses, and what it takes but should not be given: an ota.path
// that is not an absolute http(s) URL (the path rule's quirks then
// apply), an md5 that is not 32 lower-case hex digits (the device
// compares its lower-case digest with strncmp: upper case never matches),
// an empty name or version, no summary, unknown keys, more than one build
// for the chip. nil: the shape is right.
func esphomeManifestShape(body []byte, chip string) []string {
	var problems []string
	info, refusal := parseESPHomeManifest(body, chip, "http://manifest.invalid/m/manifest.json")
	if refusal != "" {
		return []string{"the device refuses it: " + refusal}
	}
	var root map[string]json.RawMessage
	_ = json.Unmarshal(body, &root)
	for k := range root {
		if k != "name" && k != "version" && k != "builds" {
			problems = append(problems, fmt.Sprintf("unknown key %q", k))
		}
	}
	if info.Title == "" {
		problems = append(problems, "empty name")
	}
	if info.Latest == "" {
		problems = append(problems, "empty version (the device reads it as no update)")
	}
	var m struct {
		Builds []map[string]json.RawMessage `json:"builds"`
	}
	_ = json.Unmarshal(body, &m)
	n := 0
	for _, b := range m.Builds {
		var family string
		_ = json.Unmarshal(b["chipFamily"], &family)
		if family != chip {
			continue
		}
		n++
		if n > 1 {
			continue
		}
		for k := range b {
			if k != "chipFamily" && k != "ota" {
				problems = append(problems, fmt.Sprintf("unknown build key %q", k))
			}
		}
		var ota map[string]any
		_ = json.Unmarshal(b["ota"], &ota)
		for k := range ota {
			if k != "path" && k != "md5" && k != "summary" && k != "release_url" {
				problems = append(problems, fmt.Sprintf("unknown ota key %q", k))
			}
		}
		path, _ := ota["path"].(string)
		if u, err := url.Parse(path); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			problems = append(problems, fmt.Sprintf("ota.path %q is not an absolute http(s) URL", path))
		}
		if md5, _ := ota["md5"].(string); !lowerHex32(md5) {
			problems = append(problems, fmt.Sprintf("ota.md5 %q is not 32 lower-case hex digits", md5))
		}
		if s, ok := ota["summary"].(string); !ok || s == "" {
			problems = append(problems, "no ota.summary")
		}
	}
	if n > 1 {
		problems = append(problems, fmt.Sprintf("%d builds for %s (the device takes the first)", n, chip))
	}
	slices.Sort(problems) // map order is random; a test compares them
	return problems
}

func lowerHex32(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
