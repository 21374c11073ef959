package esphome

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// The ESPHome personalities.
const (
	// ESP32 is an ESPHome node on an ESP32 (ESP-IDF): OTA on TCP 3232.
	ESP32 core.Personality = "esphome"
	// ESP8266 is an ESPHome node on an ESP8266: OTA on TCP 8266, gzip
	// payloads offered.
	ESP8266 core.Personality = "esphome-esp8266"
)

// The firmwares of the personalities.
var (
	ESP32Firmware   core.Firmware = firmware{esp8266: false}
	ESP8266Firmware core.Firmware = firmware{esp8266: true}
)

// Auth kinds (Options.Auth): how a device with a password challenges.
const (
	// AuthMD5: 01 + a 32-hex nonce whatever the client flags (firmware up
	// to 2025.9).
	AuthMD5 = "md5"
	// AuthSHA256: 02 + a 64-hex nonce; a client without the 0x02 flag is
	// answered 82 (2026.1.0 and later; the default).
	AuthSHA256 = "sha256"
	// AuthSHA256MD5: SHA-256 when the client flags 0x02, else MD5 (2025.10
	// to 2025.12, ALLOW_OTA_DOWNGRADE_MD5).
	AuthSHA256MD5 = "sha256-md5"
)

// Noise settings (Options.Noise).
const (
	// NoiseOffered: the extended answer carries server flag 0x04; a
	// plaintext client goes on in plaintext.
	NoiseOffered = "offered"
	// NoiseRequired: a client that does not ask for Noise is answered 94.
	NoiseRequired = "required"
)

// Options are an ESPHome node's build settings (core.Config.Options); the
// zero value is a current ESP32 or ESP8266 build without a project.
type Options struct {
	// Version is the OTA protocol version (USE_OTA_VERSION): 1, or 2 (the
	// default, with a 47 per 8192 bytes received).
	Version int
	// NoExtended is a build without the extended protocol: a client's 0x04
	// flag is ignored and the answer is 40 or 46, never 48.
	NoExtended bool
	// Auth is how a password (core.Config.Password) is challenged: AuthMD5,
	// AuthSHA256 (default) or AuthSHA256MD5.
	Auth string
	// Compression: whether the backend offers gzip payloads: "" = the
	// platform's (ESP8266 yes, ESP32 no), "on", "off".
	Compression string
	// Mode2024 is 2024 firmware: each handshake read and write gives up
	// after 1 s, the data phase waits for data forever, no extended
	// protocol and no SHA-256 (Auth md5), and on ESP8266 the Arduino
	// Updater backend (an MD5 mismatch is 84).
	Mode2024 bool
	// HandshakeTimeout and DataTimeout replace the current firmware's 20 s
	// handshake deadline and 90 s without data (tests); 0 = the firmware's.
	HandshakeTimeout, DataTimeout time.Duration
	// Noise: "" none, NoiseOffered or NoiseRequired (OTA encryption).
	Noise string
	// PartitionAccess advertises server flag 0x02 (allow_partition_access).
	PartitionAccess bool
	// Fail is an error byte (0x80–0x94, 0xFF) the device answers at the
	// step where its firmware sends it (FailSteps); 0 = none. The image is
	// not installed.
	Fail byte
	// FailCount limits Fail to the first FailCount sessions that reach its
	// step; 0 = every session.
	FailCount int

	// Release is the ESPHome release in TXT version; default "2026.7.0".
	Release string
	// ProjectName ("author.name") adds project_name and project_version to
	// the TXT record; "" = a node without esphome: project:.
	ProjectName string
	// FriendlyName adds friendly_name; "" = none.
	FriendlyName string
	// APIEncryption adds api_encryption (an API Noise key is set).
	APIEncryption bool
	// ConfigHash is the factory image's config hash (8 hex); "" = derived
	// like any other image's (ConfigHashOf).
	ConfigHash string
	// Identities name the identity of images by their version (see the
	// package documentation); a version not listed has the derived one.
	Identities map[string]Identity
	// MAC is the TXT mac (12 hex); default derived from the device's name.
	MAC string
}

// Identity is what TXT tells of the image a node runs.
type Identity struct {
	ProjectVersion string
	ConfigHash     string
}

// APIPort is the native API port the TXT record names.
const APIPort = 6053

// DefaultRelease is the ESPHome release the TXT key version tells by default.
const DefaultRelease = "2026.7.0"

// firmware is ESPHome on one of the two chips.
type firmware struct{ esp8266 bool }

func (f firmware) Traits() core.Traits {
	if f.esp8266 {
		return core.Traits{Name: ESP8266, Platform: core.PlatformESP8266, Protocol: "esphome", OTAPort: 8266}
	}
	return core.Traits{Name: ESP32, Platform: core.PlatformIDF, Protocol: "esphome", OTAPort: 3232}
}

// TakesOptions: Options or *Options.
func (f firmware) TakesOptions(o any) bool {
	switch o.(type) {
	case Options, *Options:
		return true
	}
	return false
}

// optionsOf returns c's options with the defaults applied.
func optionsOf(c *core.Config, esp8266 bool) Options {
	var o Options
	switch v := c.Options.(type) {
	case Options:
		o = v
	case *Options:
		if v != nil {
			o = *v
		}
	}
	if o.Version == 0 {
		o.Version = 2
	}
	if o.Auth == "" {
		o.Auth = AuthSHA256
		if o.Mode2024 {
			o.Auth = AuthMD5
		}
	}
	if o.Release == "" {
		o.Release = DefaultRelease
		if o.Mode2024 {
			o.Release = "2024.11.0"
		}
	}
	if o.Mode2024 {
		o.NoExtended = true
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 20 * time.Second
		if o.Mode2024 {
			o.HandshakeTimeout = time.Second
		}
	}
	if o.DataTimeout == 0 {
		o.DataTimeout = 90 * time.Second
		if o.Mode2024 {
			o.DataTimeout = time.Second // readall_; the data loop itself waits forever
		}
	}
	if o.MAC == "" {
		sum := fnv.New64a()
		sum.Write([]byte(c.Name))
		o.MAC = fmt.Sprintf("%012x", sum.Sum64()&0xFFFFFFFFFFFF)
	}
	return o
}

// compression reports whether the backend offers gzip payloads.
func (o Options) compression(esp8266 bool) bool {
	switch o.Compression {
	case "on":
		return true
	case "off":
		return false
	}
	return esp8266
}

// Check validates the options against the chip and each other.
func (f firmware) Check(c *core.Config) error {
	o := optionsOf(c, f.esp8266)
	switch {
	case o.Version != 1 && o.Version != 2:
		return fmt.Errorf("esphome: OTA protocol version %d (want 1 or 2)", o.Version)
	case o.Auth != AuthMD5 && o.Auth != AuthSHA256 && o.Auth != AuthSHA256MD5:
		return fmt.Errorf("esphome: auth %q (want %s, %s or %s)", o.Auth, AuthMD5, AuthSHA256, AuthSHA256MD5)
	case o.Compression != "" && o.Compression != "on" && o.Compression != "off":
		return fmt.Errorf("esphome: compression %q (want on or off)", o.Compression)
	case o.Noise != "" && o.Noise != NoiseOffered && o.Noise != NoiseRequired:
		return fmt.Errorf("esphome: noise %q (want %s or %s)", o.Noise, NoiseOffered, NoiseRequired)
	case o.Mode2024 && o.Auth != AuthMD5:
		return fmt.Errorf("esphome: 2024 firmware challenges with MD5 only")
	case o.Mode2024 && (o.Noise != "" || o.PartitionAccess):
		return fmt.Errorf("esphome: 2024 firmware has neither OTA encryption nor partition access")
	case o.Noise != "" && !c.Password.IsZero():
		return fmt.Errorf("esphome: OTA encryption and an OTA password exclude each other")
	case o.Noise != "" && o.NoExtended:
		return fmt.Errorf("esphome: OTA encryption needs the extended protocol")
	case o.HandshakeTimeout < 0 || o.DataTimeout < 0:
		return fmt.Errorf("esphome: negative timeout")
	case o.FailCount < 0:
		return fmt.Errorf("esphome: negative fail count")
	}
	if len(o.MAC) != 12 || strings.Trim(strings.ToLower(o.MAC), "0123456789abcdef") != "" {
		return fmt.Errorf("esphome: mac %q is not 12 hex digits", o.MAC)
	}
	if o.Fail != 0 {
		if why := failImpossible(o, f.esp8266, !c.Password.IsZero()); why != "" {
			return fmt.Errorf("esphome: error byte %02X %s", o.Fail, why)
		}
	}
	if o.ConfigHash != "" && !isHash(o.ConfigHash) {
		return fmt.Errorf("esphome: config hash %q is not 8 hex digits", o.ConfigHash)
	}
	for v, id := range o.Identities {
		if id.ConfigHash != "" && !isHash(id.ConfigHash) {
			return fmt.Errorf("esphome: config hash %q of %q is not 8 hex digits", id.ConfigHash, v)
		}
	}
	return nil
}

func isHash(s string) bool {
	return len(s) == 8 && strings.Trim(s, "0123456789abcdef") == ""
}

// Servers: the OTA server on the OTA port, one client at a time.
func (f firmware) Servers(e *core.Env) []core.Server {
	return []core.Server{{Name: "esphome-ota", Port: core.PortOTA, Stream: func(ctx context.Context, c net.Conn) {
		newSession(e, f, ctx, c).run()
	}}}
}

// Services is _esphomelib._tcp on the API port with mdns_component's TXT
// keys, in its order (reversed on the wire: both responders prepend).
func (f firmware) Services(e *core.Env) []mdnsd.Service {
	c := e.Config()
	o := optionsOf(c, f.esp8266)
	id := stateOf(e).running(e, o)
	var txt []string
	if o.FriendlyName != "" {
		txt = append(txt, "friendly_name="+o.FriendlyName)
	}
	platform := "ESP32"
	if f.esp8266 {
		platform = "ESP8266"
	}
	// config_hash is newer than the 2024 list (PR #16145): after version
	// (its place in the list is unconfirmed).
	txt = append(txt, "version="+o.Release)
	if !o.Mode2024 {
		txt = append(txt, "config_hash="+id.ConfigHash)
	}
	txt = append(txt, "mac="+strings.ToLower(o.MAC), "platform="+platform, "board="+c.Board, "network=wifi")
	if o.APIEncryption {
		txt = append(txt, "api_encryption=Noise_NNpsk0_25519_ChaChaPoly_SHA256")
	}
	if o.ProjectName != "" {
		txt = append(txt, "project_name="+o.ProjectName, "project_version="+id.ProjectVersion)
	}
	slices.Reverse(txt)
	return []mdnsd.Service{{Instance: c.Instance, Type: "_esphomelib._tcp", Port: APIPort, TXT: txt}}
}

// ConfigHashOf is the config hash the sim gives an image of version for a
// node of project (FNV-1a 32 of both, 8 hex): a rebuild of the same version
// keeps it, another version changes it.
func ConfigHashOf(project, version string) string {
	h := fnv.New32a()
	h.Write([]byte(project + "\x00" + version))
	return fmt.Sprintf("%08x", h.Sum32())
}

// identityOf is the identity of an image of version on a node with o.
func identityOf(o Options, project, version string) Identity {
	if version == "" {
		version = "unknown"
	}
	id := o.Identities[version]
	if id.ProjectVersion == "" {
		id.ProjectVersion = version
	}
	if id.ConfigHash == "" {
		id.ConfigHash = ConfigHashOf(project, version)
	}
	return id
}

// ImageVersion is the version the sim reads from an image (uncompressed):
// the app description's on ESP32, the "version=" marker of a sim ESP8266
// image; "" when it tells none.
func ImageVersion(data []byte) string {
	if img, _ := image.Parse(data); img != nil && img.App != nil && img.App.Version != "" {
		return img.App.Version
	}
	for _, marker := range [][]byte{[]byte("ots-ota sim esp8266 sketch "), []byte("ots-sim esp8266 image ")} {
		i := bytes.Index(data, marker)
		if i < 0 {
			continue
		}
		rest := data[i+len(marker):]
		if end := bytes.IndexByte(rest, 0); end >= 0 {
			rest = rest[:end]
		}
		if len(rest) > 200 {
			rest = rest[:200]
		}
		for _, f := range strings.Fields(string(rest)) {
			if v, ok := strings.CutPrefix(f, "version="); ok {
				return v
			}
		}
	}
	return ""
}

// nodeState is what a device keeps across its boots: the identity of each
// image it installed, by the SHA-256 the core reports for its slot.
type nodeState struct {
	mu    sync.Mutex
	byKey map[string]Identity
	fails int // sessions Fail acted on
}

var states sync.Map // *core.Env → *nodeState

func stateOf(e *core.Env) *nodeState {
	if s, ok := states.Load(e); ok {
		return s.(*nodeState)
	}
	s, loaded := states.LoadOrStore(e, &nodeState{byKey: make(map[string]Identity)})
	if ctx := e.Context(); !loaded && ctx != nil {
		go func() { <-ctx.Done(); states.Delete(e) }()
	}
	return s.(*nodeState)
}

// record remembers the identity of the image installed with sha256 hex key.
func (s *nodeState) record(key string, id Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byKey[key] = id
}

// running is the identity of the running image.
func (s *nodeState) running(e *core.Env, o Options) Identity {
	st := e.State()
	project := o.ProjectName
	for _, sl := range st.Slots {
		if sl.Label != st.Running || sl.SHA256 == "" {
			continue
		}
		s.mu.Lock()
		id, ok := s.byKey[sl.SHA256]
		s.mu.Unlock()
		if ok {
			return id
		}
	}
	// The image the device started with.
	id := identityOf(o, project, e.Config().Version)
	if o.ConfigHash != "" && o.Identities[e.Config().Version].ConfigHash == "" {
		id.ConfigHash = o.ConfigHash
	}
	return id
}

// takeFail reports whether Fail acts on this session (FailCount).
func (s *nodeState) takeFail(o Options) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.FailCount > 0 && s.fails >= o.FailCount {
		return false
	}
	s.fails++
	return true
}
