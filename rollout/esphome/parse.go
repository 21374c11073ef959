package esphome

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/oneline"
	"github.com/ots-ota/ots-ota/rollout"
)

// maxText bounds a device's text (a version, a title) in reports and
// messages.
const maxText = 100

// State is what an ESPHome update entity publishes on
// <prefix>/update/<id>/state: {"installed_version","latest_version",
// "title"[,"release_summary"][,"release_url"]}, nothing about installing,
// progress or errors. "" = not told: before its first manifest check
// after a boot a device tells "" for all three.
type State struct {
	Installed string // installed_version: the running build's project version
	Latest    string // latest_version: the manifest's version at its last check
	Title     string // title: the manifest's name
}

// ParseState reads an update entity's state payload. ok is false when it
// is no JSON object (what it cannot read tells nothing); a field that is
// absent or not a string is not told.
func ParseState(payload []byte) (State, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(payload), &m); err != nil || m == nil {
		return State{}, false
	}
	str := func(k string) string {
		var s string
		if raw, ok := m[k]; ok && json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	return State{Installed: str("installed_version"), Latest: str("latest_version"), Title: str("title")}, true
}

// parseStatus reads <prefix>/status: ESPHome's birth "online" and will
// "offline" (its defaults; a device built with other words tells
// nothing here).
func parseStatus(payload []byte) rollout.ReportKind {
	switch strings.ToLower(strings.TrimSpace(string(payload))) {
	case "online":
		return rollout.ReportOnline
	case "offline":
		return rollout.ReportOffline
	}
	return ""
}

// shown is device text as messages show it: one clean line.
func shown(s string) string { return oneline.Clean(s, maxText) }

// facts are what a state tells, for reports and reads: the installed
// version is both Version and Release (ESPHome compares versions as whole
// strings, as --expect-version is compared). A version that is not clean
// text is shown cleaned and names no release (it cannot be the target).
func facts(s State) rollout.Facts {
	f := rollout.Facts{Version: shown(s.Installed), Latest: shown(s.Latest)}
	if f.Version == s.Installed {
		f.Release = s.Installed
	}
	return f
}

// stateWords are a state's facts in a report's words (only those told).
func stateWords(s State) string {
	var parts []string
	if s.Installed != "" {
		parts = append(parts, "installed_version "+shown(s.Installed))
	}
	if s.Latest != "" {
		parts = append(parts, "latest_version "+shown(s.Latest))
	}
	if len(parts) == 0 {
		return "no versions told"
	}
	return strings.Join(parts, ", ")
}

// topicKind is what a device topic carries.
type topicKind int

const (
	topicNone topicKind = iota
	topicStatus
	topicState
)

// parseTopic splits <prefix>/status and <prefix>/update/<id>/state.
func parseTopic(topic string) (kind topicKind, prefix, id string) {
	parts := strings.Split(topic, "/")
	n := len(parts)
	switch {
	case n >= 4 && parts[n-1] == "state" && parts[n-3] == "update" && parts[n-2] != "":
		return topicState, strings.Join(parts[:n-3], "/"), parts[n-2]
	case n >= 2 && parts[n-1] == "status":
		return topicStatus, strings.Join(parts[:n-1], "/"), ""
	}
	return topicNone, "", ""
}

func statusTopic(prefix string) string      { return prefix + "/status" }
func statesFilter(prefix string) string     { return prefix + "/update/+/state" }
func stateTopic(prefix, id string) string   { return prefix + "/update/" + id + "/state" }
func commandTopic(prefix, id string) string { return prefix + "/update/" + id + "/command" }

// The filters of every device whose prefix is one level.
const (
	wildStatus = "+/status"
	wildStates = "+/update/+/state"
)

// checkPrefix refuses a topic prefix no device can have.
func checkPrefix(p string) error {
	switch {
	case p == "":
		return errors.New("no MQTT topic prefix (ESPHome's mqtt: topic_prefix:, by default the node name)")
	case strings.ContainsAny(p, "+#\x00"):
		return fmt.Errorf("the MQTT topic prefix %q holds a wildcard or NUL", p)
	case len(p) > 1000:
		return errors.New("the MQTT topic prefix is too long")
	}
	return nil
}

// checkEntity refuses an update object id that is no single topic level.
func checkEntity(id string) error {
	if strings.ContainsAny(id, "/+#\x00") || len(id) > 200 {
		return fmt.Errorf("the update entity %q is not an ESPHome object id (one topic level)", shown(id))
	}
	return nil
}

// oneLevel: the prefix is one topic level (the wildcard filters cover it).
func oneLevel(p string) bool { return !strings.Contains(p, "/") }

// chipFamilies are ESPHome's variants (ESPHOME_VARIANT, the manifest's
// chipFamily) by image chip words.
var chipFamilies = map[string]string{
	"esp32":    "ESP32",
	"esp32s2":  "ESP32-S2",
	"esp32s3":  "ESP32-S3",
	"esp32c2":  "ESP32-C2",
	"esp32c3":  "ESP32-C3",
	"esp32c5":  "ESP32-C5",
	"esp32c6":  "ESP32-C6",
	"esp32c61": "ESP32-C61",
	"esp32h2":  "ESP32-H2",
	"esp32p4":  "ESP32-P4",
	"esp8266":  "ESP8266",
}

// ChipFamily is ESPHome's chipFamily for an image chip's words ("esp32s3"
// or "ESP32-S3" → "ESP32-S3", "esp8266" → "ESP8266"); ok false when
// ESPHome builds for no such chip (or the name is no chip).
func ChipFamily(chip string) (string, bool) {
	c, ok := image.ChipByName(chip)
	if !ok {
		return "", false
	}
	fam, ok := chipFamilies[c.String()]
	return fam, ok
}

// manifest is the JSON an ESPHome device polls, in the fields its
// http_request update reads.
type manifest struct {
	Name    string  `json:"name"`
	Version string  `json:"version"`
	Builds  []build `json:"builds"`
}

// build is one entry of manifest.Builds.
type build struct {
	ChipFamily string `json:"chipFamily"`
	OTA        ota    `json:"ota"`
}

// ota is a build's image.
type ota struct {
	Path    string `json:"path"` // always an absolute URL here
	MD5     string `json:"md5"`
	Summary string `json:"summary"`
}

// encode is the manifest's bytes: compact JSON in the fields' order, no
// HTML escaping, one newline at the end.
func (m manifest) encode() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// checkImageURL refuses a URL the manifest cannot name as an absolute
// path: ESPHome takes ota.path as is only when it holds "http" (else it
// joins it to the manifest's URL).
func checkImageURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return errors.New("the image URL written into an ESPHome manifest must be http:// or https://")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return errors.New("the image URL written into an ESPHome manifest may not hold a space or control character")
	}
	return nil
}

// isMD5 reports a lower-case hex MD5.
func isMD5(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// stem is the image's name up to its first "." ("node.ota.bin" → "node").
func stem(name string) string {
	if i := strings.IndexByte(name, '.'); i > 0 {
		return name[:i]
	}
	return name
}
