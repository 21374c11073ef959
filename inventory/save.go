package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Add appends the devices not yet in the inventory of the config file at
// path (matched by address or name, case-insensitive) and rewrites the file
// through YAML nodes, so hand-written entries, other keys and comments stay.
// A missing file is created. It returns the devices added, with the names
// they got (a taken name gets "-2", "-3"…).
func Add(path string, found []Device) ([]Device, error) {
	orig, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read config: %w", err)
	}
	out, added, err := AddToYAML(orig, found)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(added) == 0 {
		return nil, nil
	}
	if err := writeAtomic(path, out); err != nil {
		return nil, err
	}
	return added, nil
}

// AddToYAML is Add on bytes.
func AddToYAML(orig []byte, found []Device) ([]byte, []Device, error) {
	var doc yaml.Node
	if len(bytes.TrimSpace(orig)) > 0 {
		if err := yaml.Unmarshal(orig, &doc); err != nil {
			return nil, nil, fmt.Errorf("not valid YAML: %s", yamlMessage(err))
		}
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, nil, errors.New("the config file is not a mapping of keys")
	}
	sec := section(&doc)
	if sec == nil || (sec.Kind == yaml.ScalarNode && sec.Tag == "!!null") {
		if sec == nil {
			sec = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: Key}, sec)
		} else {
			*sec = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}
	}
	inv, err := FromNode(sec)
	if err != nil {
		return nil, nil, err
	}
	devs := mapValue(sec, "devices")
	if devs == nil {
		devs = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		sec.Content = append(sec.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "devices"}, devs)
	} else if devs.Kind != yaml.SequenceNode {
		if devs.Tag != "!!null" {
			return nil, nil, errors.New("inventory.devices is not a list")
		}
		*devs = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	}

	names := make(map[string]bool)
	addrs := make(map[string]bool)
	for _, d := range inv.Devices {
		names[strings.ToLower(d.Name)] = true
		addrs[addrKey(d.Address)] = true
	}
	var added []Device
	for _, d := range found {
		if d.Address == "" || addrs[addrKey(d.Address)] || (d.Name != "" && names[strings.ToLower(d.Name)] && sameDevice(inv, d)) {
			continue
		}
		d.Name = uniqueName(d.Name, d.Address, names)
		names[strings.ToLower(d.Name)] = true
		addrs[addrKey(d.Address)] = true
		var n yaml.Node
		if err := n.Encode(d); err != nil {
			return nil, nil, err
		}
		n.Style = 0
		devs.Content = append(devs.Content, &n)
		added = append(added, d)
	}
	if len(added) == 0 {
		return orig, nil, nil
	}
	// Never write a file the next run would refuse.
	merged := &Inventory{Devices: append(slices.Clone(inv.Devices), added...), Groups: inv.Groups}
	if err := merged.Validate(); err != nil {
		return nil, nil, fmt.Errorf("the devices found do not fit the inventory: %w", err)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), added, nil
}

// sameDevice: a found device whose name is taken by an entry with the same
// address is that entry.
func sameDevice(inv *Inventory, d Device) bool {
	e, ok := inv.Device(d.Name)
	return ok && addrKey(e.Address) == addrKey(d.Address)
}

func addrKey(a string) string {
	if ip, err := netip.ParseAddr(a); err == nil {
		return ip.Unmap().String()
	}
	return strings.ToLower(strings.TrimSuffix(a, "."))
}

func uniqueName(name, addr string, taken map[string]bool) string {
	if name == "" {
		name = addr
	}
	if !taken[strings.ToLower(name)] {
		return name
	}
	for i := 2; ; i++ {
		n := name + "-" + strconv.Itoa(i)
		if !taken[strings.ToLower(n)] {
			return n
		}
	}
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// writeAtomic replaces path through a temporary file in the same directory,
// keeping the file's mode (0600 for a new one: it is the user's config).
func writeAtomic(path string, data []byte) error {
	// A symlinked config (dotfiles in a repository) is written where the
	// link points: renaming over the link would replace it with a file.
	path = linkTarget(path)
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save inventory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".ots-ota-config-*")
	if err != nil {
		return fmt.Errorf("save inventory: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("save inventory: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("save inventory: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save inventory: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save inventory: %w", err)
	}
	return nil
}

// linkTarget follows path's symbolic links, also a dangling one (its target
// is created), up to a sane depth; path itself when it is no link.
func linkTarget(path string) string {
	for range 40 {
		st, err := os.Lstat(path)
		if err != nil || st.Mode()&os.ModeSymlink == 0 {
			return path
		}
		to, err := os.Readlink(path)
		if err != nil {
			return path
		}
		if !filepath.IsAbs(to) {
			to = filepath.Join(filepath.Dir(path), to)
		}
		path = to
	}
	return path
}
