package discover

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/inventory"
)

// Target is one device a command acts on, from mDNS, the inventory or both.
type Target struct {
	// Name: the inventory name, else the mDNS instance.
	Name string `json:"name"`
	// Host: the mDNS host name or the inventory address as written.
	Host     string       `json:"host,omitempty"`
	Addrs    []netip.Addr `json:"addrs,omitempty"`
	Port     int          `json:"port,omitempty"`
	Protocol string       `json:"protocol,omitempty"`
	WebPort  int          `json:"web_port,omitempty"`
	// Chip: what the inventory says the device's chip is.
	Chip    string            `json:"chip,omitempty"`
	Service string            `json:"service,omitempty"`
	TXT     map[string]string `json:"txt,omitempty"`
	Auth    inventory.AuthRef `json:"auth,omitzero"`
	// Sources: "mdns", "inventory".
	Sources []string `json:"sources"`
	// Given: every argument that named this device, when more than one
	// did (Select merges targets of the same address and port).
	Given []string `json:"given,omitempty"`
	// Arg is the argument as the user wrote it ("" for --all, --group).
	Arg string `json:"-"`
}

// Info is the target for devinfo.Query. Host is the first address when one
// is known, so the caller resolves names only for inventory entries.
func (t Target) Info() devinfo.Target {
	it := devinfo.Target{Name: t.Name, Host: t.Host, Port: t.Port, Protocol: t.Protocol, WebPort: t.WebPort, TXT: t.TXT, Service: t.Service}
	if len(t.Addrs) > 0 {
		it.Host = t.Addrs[0].String()
	}
	if it.WebPort == 0 && slices.Contains(t.Sources, "mdns") && !slices.Contains(t.Sources, "inventory") {
		it.WebPort = -1 // mDNS named no web server: do not guess port 80
	}
	return it
}

// OTAAddr is host:port of the OTA port (the first address when one is
// known; port 3232 when none is), "" without a host.
func (t Target) OTAAddr() string {
	host := t.Host
	if len(t.Addrs) > 0 {
		host = t.Addrs[0].String()
	}
	if host == "" {
		return ""
	}
	port := t.Port
	if port == 0 {
		port = 3232
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// SeenByMDNS reports whether mDNS saw the device in this run.
func (t Target) SeenByMDNS() bool { return slices.Contains(t.Sources, "mdns") }

// InventoryEntries are the inventory entries for devices found by mDNS
// (for discover --save): one per address, named after the host, with the
// protocol that protocol tells for its first address ("" when unknown).
// Hosts seen only as _http._tcp are left out.
func InventoryEntries(found []Device, protocol func(netip.Addr) string) []inventory.Device {
	var devs []inventory.Device
	seen := make(map[netip.Addr]bool)
	for _, t := range Merge(found, nil) {
		if len(t.Addrs) == 0 || seen[t.Addrs[0]] || t.Service == webService {
			// A host seen only as _http._tcp is no device to save: in the
			// inventory it would be swept into --all.
			continue
		}
		a := t.Addrs[0]
		seen[a] = true
		devs = append(devs, inventory.Device{Name: strings.TrimSuffix(t.Host, ".local"), Address: a.String(), Port: t.Port,
			Protocol: protocol(a), WebPort: t.WebPort})
	}
	return devs
}

// FromDevice makes a target of a browsed device.
func FromDevice(d Device) Target {
	return Target{Name: d.Instance, Host: d.Host, Addrs: slices.Clone(d.Addrs), Port: d.OTAPort(), WebPort: d.WebPort,
		Service: d.Service, TXT: d.TXT, Sources: []string{"mdns"}}
}

// FromInventory makes a target of an inventory entry (its address is not
// resolved here).
func FromInventory(d inventory.Device) Target {
	t := Target{Name: d.Name, Host: d.Address, Port: d.Port, Protocol: d.Protocol, WebPort: d.WebPort, Auth: d.Auth, Chip: d.Chip,
		Sources: []string{"inventory"}}
	if a, err := netip.ParseAddr(d.Address); err == nil {
		t.Addrs = []netip.Addr{a.Unmap()}
	}
	return t
}

// Merge joins browsed devices and inventory entries into one target list,
// deduplicated by address (or host name) and port. A device that
// advertises both _ota._tcp and _arduino._tcp (the OTS firmware with the
// extensions) is one target, described by _ota._tcp. An inventory entry
// that matches a browsed device keeps its name, port, protocol and auth
// and gains the device's TXT and addresses. Inventory entries without an
// address (reached over MQTT only) are left out: the caller says so.
func Merge(found []Device, inv []inventory.Device) []Target {
	var out []Target
	// browsed: t is a browsed device. Two browsed instances are one device
	// only when they also share an address: one host name with different
	// addresses is two devices in a name conflict, not one.
	find := func(t Target, browsed bool) int {
		for i, o := range out {
			// An ESPHome record's port is only its platform's default OTA
			// port, which the inventory may override.
			if t.Port != 0 && o.Port != 0 && t.Port != o.Port && o.Service != devinfo.ESPHomeService {
				continue
			}
			if t.Host != "" && strings.EqualFold(strings.TrimSuffix(t.Host, "."), strings.TrimSuffix(o.Host, ".")) &&
				(!browsed || len(t.Addrs) == 0 || len(o.Addrs) == 0) {
				return i
			}
			for _, a := range t.Addrs {
				if slices.Contains(o.Addrs, a) {
					return i
				}
			}
		}
		return -1
	}
	// _ota._tcp first, so it describes devices that advertise both.
	sorted := slices.Clone(found)
	slices.SortStableFunc(sorted, func(a, b Device) int {
		return cmp.Compare(serviceRank(a.Service), serviceRank(b.Service))
	})
	for _, d := range sorted {
		t := FromDevice(d)
		if i := find(t, true); i >= 0 {
			if out[i].WebPort == 0 {
				out[i].WebPort = t.WebPort
			}
			continue
		}
		out = append(out, t)
	}
	for _, d := range inv {
		if d.MQTTOnly() {
			continue
		}
		t := FromInventory(d)
		i := find(t, false)
		if i < 0 {
			out = append(out, t)
			continue
		}
		m := &out[i]
		m.Name, m.Auth, m.Chip = t.Name, t.Auth, t.Chip
		m.Sources = append(m.Sources, "inventory")
		if t.Port != 0 {
			m.Port = t.Port
		}
		if t.Protocol != "" {
			m.Protocol = t.Protocol
		}
		if t.WebPort != 0 {
			m.WebPort = t.WebPort
		}
	}
	return out
}

func serviceRank(s string) int {
	switch s {
	case "_ota._tcp":
		return 0
	case "_arduino._tcp":
		return 1
	}
	return 2
}

// DeviceGroup is one device that several targets name: Items are their
// indexes, in order; Shared is an address the first merge was made on
// (invalid when the group has one item).
type DeviceGroup struct {
	Items  []int
	Shared netip.Addr
}

// SameDevice groups targets into devices: two targets are one device when
// their address sets intersect and their ports are equal (the caller
// fills in its default port), also through a third target. A target without
// addresses (a name that did not resolve) is a device of its own. Groups
// come in the order of their first target.
func SameDevice(addrs [][]netip.Addr, ports []int) []DeviceGroup {
	n := len(addrs)
	parent := make([]int, n)
	shared := make([]netip.Addr, n)
	for i := range parent {
		parent[i] = i
	}
	var root func(int) int
	root = func(i int) int {
		for parent[i] != i {
			i = parent[i]
		}
		return i
	}
	for i := range n {
		for j := range i {
			if ports[i] != ports[j] {
				continue
			}
			k := slices.IndexFunc(addrs[i], func(a netip.Addr) bool {
				return slices.ContainsFunc(addrs[j], func(b netip.Addr) bool { return a.Unmap() == b.Unmap() })
			})
			if k < 0 {
				continue
			}
			ri, rj := root(i), root(j)
			if ri == rj {
				continue
			}
			// The earlier target's group absorbs the later one.
			lo, hi := min(ri, rj), max(ri, rj)
			parent[hi] = lo
			if !shared[lo].IsValid() {
				shared[lo] = addrs[i][k].Unmap()
			}
		}
	}
	var out []DeviceGroup
	at := map[int]int{}
	for i := range n {
		r := root(i)
		g, ok := at[r]
		if !ok {
			g = len(out)
			at[r] = g
			out = append(out, DeviceGroup{})
		}
		out[g].Items = append(out[g].Items, i)
	}
	for r, g := range at {
		out[g].Shared = shared[r]
	}
	return out
}
