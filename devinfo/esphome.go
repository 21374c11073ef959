package devinfo

import "strings"

// ProtoESPHome is ESPHome's native OTA: its devices tell what they run in
// their _esphomelib._tcp TXT record only; nothing is asked over the network.
const ProtoESPHome = "esphome"

// ESPHomeService is the mDNS service type of ESPHome's native API, under
// which its devices announce themselves (on the API port, not the OTA one).
const ESPHomeService = "_esphomelib._tcp"

// ESPHomeTXT is what an ESPHome device's _esphomelib._tcp TXT record tells
// (docs/protocols/esphome.md). Every field is "" when the record does not
// carry the key.
type ESPHomeTXT struct {
	// Release is TXT version: the ESPHome release the firmware was built
	// with. It is never the firmware's own version: two builds of one
	// release tell the same.
	Release string `json:"version,omitempty"`
	// Platform is ESP32, ESP8266, RP2, a LibreTiny model or nRF52.
	Platform string `json:"platform,omitempty"`
	Board    string `json:"board,omitempty"`
	MAC      string `json:"mac,omitempty"`
	// ConfigHash is 8 hex digits, lower case, of the validated YAML: it
	// changes with the configuration, not with a rebuild of the same one.
	ConfigHash string `json:"config_hash,omitempty"`
	// ProjectName and ProjectVersion are the YAML's esphome: project:
	// (name and version), when it sets one.
	ProjectName    string `json:"project_name,omitempty"`
	ProjectVersion string `json:"project_version,omitempty"`
	// APIEncryption is the Noise protocol name when the native API has a
	// key (TXT api_encryption), else "".
	APIEncryption string `json:"api_encryption,omitempty"`
	// APIEncryptionSupported: Noise compiled in, no key provisioned yet.
	APIEncryptionSupported string `json:"api_encryption_supported,omitempty"`
	FriendlyName           string `json:"friendly_name,omitempty"`
	Network                string `json:"network,omitempty"`
}

// ParseESPHomeTXT reads an _esphomelib._tcp TXT record (ParseTXT's map);
// nil when txt is nil. A config_hash that is not 8 hex digits is not kept:
// a value that identifies nothing must not pass for one.
func ParseESPHomeTXT(txt map[string]string) *ESPHomeTXT {
	if txt == nil {
		return nil
	}
	e := &ESPHomeTXT{
		Release: txt["version"], Platform: txt["platform"], Board: txt["board"], MAC: txt["mac"],
		ProjectName: txt["project_name"], ProjectVersion: txt["project_version"],
		APIEncryption: txt["api_encryption"], APIEncryptionSupported: txt["api_encryption_supported"],
		FriendlyName: txt["friendly_name"], Network: txt["network"],
	}
	if h := strings.ToLower(txt["config_hash"]); isHex(h) && len(h) == 8 {
		e.ConfigHash = h
	}
	return e
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// ESPHomeChip is the chip fact a platform tells: "esp8266" for ESP8266;
// "" otherwise (ESP32 names the family, not the variant an image is for).
func ESPHomeChip(platform string) string {
	if strings.EqualFold(platform, "ESP8266") {
		return "esp8266"
	}
	return ""
}

// ESPHomeOTAPort is the default OTA port of a platform: 8266 on ESP8266,
// 3232 on ESP32, 0 when the platform is not told or ots-ota updates none
// of its kind.
func ESPHomeOTAPort(platform string) int {
	switch strings.ToUpper(platform) {
	case "ESP8266":
		return 8266
	case "ESP32":
		return 3232
	}
	return 0
}

// queryESPHome fills f from the TXT record alone: an ESPHome device's OTA
// port is asked nothing outside an update.
func (f *Facts) queryESPHome(t Target) {
	src := FromTXT
	f.Protocol = Fact{ProtoESPHome, src}
	if t.Protocol == ProtoESPHome {
		f.Protocol.Source = FromTarget
	}
	e := ParseESPHomeTXT(t.TXT)
	f.ESPHome = e
	if e == nil {
		f.Notes = append(f.Notes, "an ESPHome device tells what it runs in its mDNS record only, and none was found")
		f.VersionNote = "version not observable: no mDNS record of the device (ESPHome tells its project version there only)"
		return
	}
	f.Reachable = true
	f.Version = Fact{e.ProjectVersion, src}
	f.Project = Fact{e.ProjectName, src}
	f.Chip = Fact{ESPHomeChip(e.Platform), src}
	if !f.Chip.Known() {
		f.Chip = Fact{}
	}
	if !f.Version.Known() {
		f.Version = Fact{}
		f.VersionNote = "version not observable: the YAML sets no esphome: project: (TXT project_version); TXT version is the ESPHome release, not the firmware's version"
	}
	if !f.Project.Known() {
		f.Project = Fact{}
	}
}
