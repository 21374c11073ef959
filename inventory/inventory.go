// Package inventory reads and extends the inventory: the devices and
// groups listed under the `inventory:` key of the config file, for networks
// mDNS cannot reach (other subnets, VLANs, VPNs). Secrets never live in it:
// a device names an environment variable or a file that holds its password.
//
//	inventory:
//	  devices:
//	    - name: kitchen
//	      address: 192.168.1.40     # an IP or a host name (".local" works)
//	      port: 3232                # OTA port; default 3232 (8266 for esp8266 espota)
//	      protocol: http            # http or espota; default: probed
//	      web_port: 80              # the web app's port, for /api/status
//	      auth: {env: KITCHEN_OTA_TOKEN}   # or {file: ~/.config/ots-ota/kitchen.token}
//	  groups:
//	    downstairs: [kitchen, hall]
package inventory

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Key is the config file key that holds the inventory.
const Key = "inventory"

// Device is one hand-written (or saved) device.
type Device struct {
	Name     string  `yaml:"name" json:"name"`
	Address  string  `yaml:"address" json:"address"`
	Port     int     `yaml:"port,omitempty" json:"port,omitempty"`
	Protocol string  `yaml:"protocol,omitempty" json:"protocol,omitempty"`
	WebPort  int     `yaml:"web_port,omitempty" json:"web_port,omitempty"`
	Auth     AuthRef `yaml:"auth,omitempty" json:"auth,omitzero"`
}

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
	var inv Inventory
	if err := decodeStrict(n, &inv); err != nil {
		return nil, err
	}
	if err := inv.Validate(); err != nil {
		return nil, err
	}
	return &inv, nil
}

// decodeStrict decodes with unknown keys rejected.
func decodeStrict(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return errors.New(yamlMessage(err))
	}
	return nil
}

func yamlMessage(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: ")
	s = strings.ReplaceAll(s, "unmarshal errors:\n  ", "")
	s = strings.ReplaceAll(s, "\n  ", "; ")
	s = strings.ReplaceAll(s, " in type inventory.Inventory", "")
	s = strings.ReplaceAll(s, " in type inventory.Device", "")
	s = strings.ReplaceAll(s, " in type inventory.AuthRef", "")
	return s
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
		if strings.TrimSpace(d.Address) == "" {
			errs = append(errs, fmt.Errorf("%s: no address", where))
		} else if strings.ContainsAny(d.Address, " /:") {
			if _, err := netip.ParseAddr(d.Address); err != nil {
				errs = append(errs, fmt.Errorf("%s: address %q is neither an IP address nor a host name (no port or URL here)", where, d.Address))
			}
		}
		if d.Port < 0 || d.Port > 65535 || d.WebPort < -1 || d.WebPort > 65535 {
			errs = append(errs, fmt.Errorf("%s: port out of range", where))
		}
		switch d.Protocol {
		case "", "http", "espota":
		default:
			errs = append(errs, fmt.Errorf("%s: protocol %q (want http or espota)", where, d.Protocol))
		}
		if d.Auth.Env != "" && d.Auth.File != "" {
			errs = append(errs, fmt.Errorf("%s: auth names both env and file; pick one", where))
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
	return errors.Join(errs...)
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
