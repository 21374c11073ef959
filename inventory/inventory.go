// Package inventory reads and extends the inventory: the devices and
// groups listed under the `inventory:` key of the config file, for networks
// mDNS cannot reach (other subnets, VLANs, VPNs). Secrets never live in it:
// a device names an environment variable or a file that holds its password.
//
//	inventory:
//	  devices:
//	    - name: kitchen
//	      address: 192.168.1.40     # an IP or a host name (".local" works); none for a device reached only over MQTT
//	      port: 3232                # OTA port; default 3232 (8266 for esp8266 espota)
//	      protocol: http            # http, espota, form, elegantota, wled, tasmota or esphome; default: probed
//	      web_port: 80              # the web app's port, for /api/status
//	      auth: {env: KITCHEN_OTA_TOKEN}   # or {file: ~/.config/ots-ota/kitchen.token}
//	      mqtt_topic: kitchen_plug  # rollout: the device's Tasmota %topic% on the broker
//	      full_topic: "%prefix%/%topic%/"  # rollout: its FullTopic, when not the default
//	      manifest: canary.json     # rollout --family esphome: the manifest it polls, when not --manifest's
//	      entity: firmware          # rollout --family esphome: its update entity's object id, when it has two
//	  groups:
//	    downstairs: [kitchen, hall]
package inventory

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/image"
)

// Key is the config file key that holds the inventory.
const Key = "inventory"

// Device is one hand-written (or saved) device.
type Device struct {
	Name string `yaml:"name" json:"name"`
	// Address is "" only for a device reached over MQTT alone (it has an
	// MQTTTopic): rollout reaches it through the broker; push, info and
	// discover have nothing to connect to and leave it out (MQTTOnly).
	Address  string `yaml:"address,omitempty" json:"address,omitempty"`
	Port     int    `yaml:"port,omitempty" json:"port,omitempty"`
	Protocol string `yaml:"protocol,omitempty" json:"protocol,omitempty"`
	WebPort  int    `yaml:"web_port,omitempty" json:"web_port,omitempty"`
	// Chip is the device's chip (esp32s3, esp8266, …) where no TXT tells
	// it: push refuses an image for another chip before sending.
	Chip string  `yaml:"chip,omitempty" json:"chip,omitempty"`
	Auth AuthRef `yaml:"auth,omitempty" json:"auth,omitzero"`
	// MQTTTopic is the device's topic on the user's broker (Tasmota's
	// %topic%), for rollout; "" = not reached over MQTT by name.
	MQTTTopic string `yaml:"mqtt_topic,omitempty" json:"mqtt_topic,omitempty"`
	// FullTopic is the device's FullTopic pattern when it is not the
	// family's default ("%prefix%/%topic%/" for Tasmota).
	FullTopic string `yaml:"full_topic,omitempty" json:"full_topic,omitempty"`
	// Manifest is the name of the ESPHome update manifest the device
	// polls (the file its http_request update's source: URL ends in), when
	// not rollout's --manifest; "" = --manifest's.
	Manifest string `yaml:"manifest,omitempty" json:"manifest,omitempty"`
	// Entity is the object id of the ESPHome update entity rollout
	// commands (firmware for `name: Firmware`); "" = the device's only
	// one, found over MQTT. A device with two update entities needs it.
	Entity string `yaml:"entity,omitempty" json:"entity,omitempty"`
}

// MQTTOnly reports a device without an address: one reached only over
// MQTT (its mqtt_topic:), by rollout. Commands that connect to devices
// leave it out and say so.
func (d Device) MQTTOnly() bool { return strings.TrimSpace(d.Address) == "" }

// AuthRef says where a device's password is: an environment variable or a
// file. It is a reference, never the secret.
type AuthRef struct {
	Env  string `yaml:"env,omitempty" json:"env,omitempty"`
	File string `yaml:"file,omitempty" json:"file,omitempty"`
}

// IsZero reports an empty reference.
func (a AuthRef) IsZero() bool { return a.Env == "" && a.File == "" }

// Inventory is the parsed `inventory:` section.
type Inventory struct {
	Devices []Device            `yaml:"devices,omitempty" json:"devices"`
	Groups  map[string][]string `yaml:"groups,omitempty" json:"groups,omitempty"`
}

// Load reads the inventory section of a config file. A missing file or a
// file without the section gives an empty inventory.
func Load(path string) (*Inventory, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Inventory{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	inv, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("inventory in %s: %w", path, err)
	}
	return inv, nil
}

// Parse reads the inventory section of a whole config file's YAML.
func Parse(config []byte) (*Inventory, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(config, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %s", yamlMessage(err))
	}
	sec := section(&doc)
	if sec == nil {
		return &Inventory{}, nil
	}
	return FromNode(sec)
}

// FromNode reads an already parsed `inventory:` value.
func FromNode(n *yaml.Node) (*Inventory, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return &Inventory{}, nil
	}
	if err := checkSecrets(n); err != nil {
		return nil, err
	}
	if err := checkShape(n); err != nil {
		return nil, err
	}
	var inv Inventory
	if err := n.Decode(&inv); err != nil {
		return nil, errors.New(yamlMessage(err))
	}
	if err := inv.Validate(); err != nil {
		return nil, err
	}
	return &inv, nil
}

// Keys each level of the section may have.
var (
	sectionKeys = []string{"devices", "groups"}
	deviceKeys  = []string{"name", "address", "port", "protocol", "web_port", "chip", "auth", "mqtt_topic", "full_topic", "manifest", "entity"}
	authKeys    = []string{"env", "file"}
)

// checkShape checks the section's structure and keys, with line numbers,
// before it is decoded: a typo is an error, not a silently ignored key.
func checkShape(n *yaml.Node) error {
	keys := func(m *yaml.Node, what string, allowed []string) error {
		if m.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: %s: want keys (%s)", m.Line, what, strings.Join(allowed, ", "))
		}
		for i := 0; i+1 < len(m.Content); i += 2 {
			if k := m.Content[i]; !slices.Contains(allowed, k.Value) {
				return fmt.Errorf("line %d: %s: unknown key %q (known: %s)", k.Line, what, k.Value, strings.Join(allowed, ", "))
			}
		}
		return nil
	}
	if err := keys(n, "inventory", sectionKeys); err != nil {
		return err
	}
	if devs := mapValue(n, "devices"); devs != nil && devs.Tag != "!!null" {
		if devs.Kind != yaml.SequenceNode {
			return fmt.Errorf("line %d: inventory.devices: want a list of devices (- name: …)", devs.Line)
		}
		for _, d := range devs.Content {
			if err := keys(d, "device", deviceKeys); err != nil {
				return err
			}
			if a := mapValue(d, "auth"); a != nil {
				if err := keys(a, "auth", authKeys); err != nil {
					return err
				}
			}
		}
	}
	if gs := mapValue(n, "groups"); gs != nil && gs.Tag != "!!null" {
		if gs.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: inventory.groups: want group names, each with a list of device names", gs.Line)
		}
		for i := 1; i < len(gs.Content); i += 2 {
			if g := gs.Content[i]; g.Kind != yaml.SequenceNode {
				return fmt.Errorf("line %d: group %q: want a list of device names ([a, b])", g.Line, gs.Content[i-1].Value)
			}
		}
	}
	return nil
}

// typeErr matches yaml.v3's "cannot unmarshal !!str `abc` into int".
var typeErr = regexp.MustCompile("cannot unmarshal !!(\\w+) (`[^`]*` )?into (\\S+)")

func yamlMessage(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: ")
	s = strings.ReplaceAll(s, "unmarshal errors:\n  ", "")
	s = strings.ReplaceAll(s, "\n  ", "; ")
	// Say what was wanted in words, not Go types.
	return typeErr.ReplaceAllStringFunc(s, func(m string) string {
		g := typeErr.FindStringSubmatch(m)
		got := map[string]string{"str": "text", "int": "a number", "float": "a number", "bool": "true or false",
			"seq": "a list", "map": "a mapping", "null": "nothing"}[g[1]]
		if got == "" {
			got = "this value"
		}
		if v := strings.Trim(strings.TrimSpace(g[2]), "`"); v != "" {
			got += " " + strconv.Quote(v)
		}
		want := map[string]string{"int": "a whole number", "string": "text"}[g[3]]
		if want == "" {
			want = "what belongs here"
		}
		return got + " where " + want + " belongs"
	})
}

// secretKeys are keys that would hold a secret inline.
var secretKeys = []string{"password", "token", "secret", "key", "bearer", "pass"}

// checkSecrets refuses a password written into the inventory, with a line
// number and what to do instead.
func checkSecrets(n *yaml.Node) error {
	var walk func(*yaml.Node) error
	walk = func(n *yaml.Node) error {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := strings.ToLower(n.Content[i].Value)
				if slices.Contains(secretKeys, k) {
					return fmt.Errorf("line %d: %q holds a secret inline; put it in an environment variable or a file and write auth: {env: NAME} or auth: {file: PATH}", n.Content[i].Line, n.Content[i].Value)
				}
			}
		}
		for _, c := range n.Content {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(n)
}

// section finds the inventory mapping value in a document, nil if absent.
func section(doc *yaml.Node) *yaml.Node {
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == Key {
			return root.Content[i+1]
		}
	}
	return nil
}

// Validate checks names, addresses, ports, protocols, auth references and
// groups.
func (inv *Inventory) Validate() error {
	var errs []error
	names := make(map[string]bool)
	topics := make(map[string]string) // MQTT topic → the device that has it
	for i, d := range inv.Devices {
		where := fmt.Sprintf("device %d", i+1)
		if d.Name != "" {
			where = fmt.Sprintf("device %q", d.Name)
		}
		switch {
		case d.Name == "":
			errs = append(errs, fmt.Errorf("%s: no name", where))
		case names[strings.ToLower(d.Name)]:
			errs = append(errs, fmt.Errorf("%s: listed twice", where))
		}
		names[strings.ToLower(d.Name)] = true
		if d.MQTTOnly() {
			// A device reached over the broker alone (the point of a
			// rollout) needs no address; any other needs one.
			if d.MQTTTopic == "" {
				errs = append(errs, fmt.Errorf("%s: no address: give address:, or mqtt_topic: for a device reached over MQTT only", where))
			}
		} else if strings.ContainsAny(d.Address, " /:") {
			if _, err := netip.ParseAddr(d.Address); err != nil {
				// A URL's user:password@ is never printed back.
				errs = append(errs, fmt.Errorf("%s: address %q is neither an IP address nor a host name (no port or URL here)", where, auth.StripUserinfo(d.Address)))
			}
		}
		if d.Port < 0 || d.Port > 65535 || d.WebPort < -1 || d.WebPort > 65535 {
			errs = append(errs, fmt.Errorf("%s: port out of range", where))
		}
		switch d.Protocol {
		case "", "http", "espota", "form", "elegantota", "wled", "tasmota", "esphome":
		default:
			errs = append(errs, fmt.Errorf("%s: protocol %q (want http, espota, form, elegantota, wled, tasmota or esphome)", where, d.Protocol))
		}
		if _, ok := image.ChipByName(d.Chip); d.Chip != "" && !ok {
			errs = append(errs, fmt.Errorf("%s: chip %q is not one ots-ota knows (esp32, esp32s3, esp32c3, esp8266, …)", where, d.Chip))
		}
		if d.Auth.Env != "" && d.Auth.File != "" {
			errs = append(errs, fmt.Errorf("%s: auth names both env and file; pick one", where))
		}
		if err := CheckTopic(d.MQTTTopic); d.MQTTTopic != "" && err != nil {
			errs = append(errs, fmt.Errorf("%s: mqtt_topic %q: %v", where, d.MQTTTopic, err))
		} else if other, ok := topics[d.MQTTTopic]; ok && d.MQTTTopic != "" {
			// One command on that topic would reach both.
			errs = append(errs, fmt.Errorf("%s: mqtt_topic %q is %s's too", where, d.MQTTTopic, other))
		} else if d.MQTTTopic != "" {
			topics[d.MQTTTopic] = d.Name
		}
		if d.FullTopic != "" {
			if err := CheckFullTopic(d.FullTopic); err != nil {
				errs = append(errs, fmt.Errorf("%s: full_topic %q: %v", where, d.FullTopic, err))
			} else if d.MQTTTopic == "" {
				errs = append(errs, fmt.Errorf("%s: full_topic without mqtt_topic: give the device's topic too", where))
			}
		}
		if d.Manifest != "" {
			if err := CheckManifest(d.Manifest); err != nil {
				errs = append(errs, fmt.Errorf("%s: manifest %q: %v", where, d.Manifest, err))
			} else if d.MQTTTopic == "" {
				errs = append(errs, fmt.Errorf("%s: manifest without mqtt_topic: give the device's MQTT topic prefix too", where))
			}
		}
		if d.Entity != "" {
			if err := CheckEntity(d.Entity); err != nil {
				errs = append(errs, fmt.Errorf("%s: entity %q: %v", where, d.Entity, err))
			} else if d.MQTTTopic == "" {
				errs = append(errs, fmt.Errorf("%s: entity without mqtt_topic: give the device's MQTT topic prefix too", where))
			}
		}
	}
	for g, members := range inv.Groups {
		if g == "" {
			errs = append(errs, errors.New("a group without a name"))
		}
		for _, m := range members {
			if !names[strings.ToLower(m)] {
				errs = append(errs, fmt.Errorf("group %q: no device named %q", g, m))
			}
		}
	}
	// Errors are one line each (the CLI prints one): the first problem,
	// and how many more there are.
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	case 2:
		return fmt.Errorf("%w, and 1 more problem", errs[0])
	}
	return fmt.Errorf("%w, and %d more problems", errs[0], len(errs)-1)
}

// CheckTopic checks a device's MQTT topic (Tasmota's %topic%): one or more
// topic levels a device publishes under, so no wildcard, no space or
// control character, no empty level.
func CheckTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty")
	case strings.ContainsAny(t, "+#"):
		return errors.New("a device's topic has no wildcard (+ or #)")
	case strings.IndexFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return errors.New("a device's topic has no space or control character")
	case strings.HasPrefix(t, "/") || strings.HasSuffix(t, "/") || strings.Contains(t, "//"):
		return errors.New("an empty topic level (a leading, trailing or doubled /)")
	}
	return nil
}

// CheckManifest checks a manifest's name: one file below the rollout's
// public URL, of letters, digits, '.', '_' and '-', not starting with '.'.
func CheckManifest(n string) error {
	switch {
	case n == "":
		return errors.New("empty: give a file name such as manifest.json")
	case strings.HasPrefix(n, "."):
		return errors.New("a name does not start with '.'")
	case len(n) > 64:
		return errors.New("longer than 64 characters")
	case strings.Trim(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "":
		return errors.New("a file name of letters, digits, '.', '_' and '-' (no folder)")
	}
	return nil
}

// CheckEntity checks an ESPHome update entity's object id: what ESPHome
// makes of its name (lower case, '_' for spaces), one topic level of its
// command topic <prefix>/update/<id>/command.
func CheckEntity(id string) error {
	switch {
	case id == "":
		return errors.New("empty: give the update entity's object id, such as firmware")
	case len(id) > 200:
		return errors.New("longer than 200 characters")
	case strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "":
		return errors.New("an object id of letters, digits, '_' and '-' (firmware for name: Firmware)")
	}
	return nil
}

// CheckFullTopic checks what any FullTopic pattern must be: topic levels
// with no "+" wildcard, no space or control character. Which tokens it
// must hold is the device family's rule (rollout/tasmota checks them).
func CheckFullTopic(p string) error {
	switch {
	case strings.TrimSpace(p) == "":
		return errors.New("empty")
	case strings.Contains(p, "+"):
		return errors.New("a FullTopic has no + wildcard")
	case strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return errors.New("a FullTopic has no space or control character")
	}
	return nil
}

// Device returns the device named name (case-insensitive).
func (inv *Inventory) Device(name string) (Device, bool) {
	for _, d := range inv.Devices {
		if strings.EqualFold(d.Name, name) {
			return d, true
		}
	}
	return Device{}, false
}

// Group returns a group's devices, in the group's order.
func (inv *Inventory) Group(name string) ([]Device, error) {
	members, ok := inv.Groups[name]
	if !ok {
		var known []string
		for g := range inv.Groups {
			known = append(known, g)
		}
		slices.Sort(known)
		if len(known) == 0 {
			return nil, fmt.Errorf("no group %q: the inventory has no groups", name)
		}
		return nil, fmt.Errorf("no group %q (groups: %s)", name, strings.Join(known, ", "))
	}
	out := make([]Device, 0, len(members))
	for _, m := range members {
		d, _ := inv.Device(m)
		out = append(out, d)
	}
	return out, nil
}
