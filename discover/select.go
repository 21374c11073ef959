package discover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/inventory"
)

// Selection says which devices a command acts on: named ones, a group, or
// all (mDNS merged with the inventory).
type Selection struct {
	// Args: inventory names, IP addresses, host names, HOST:PORT.
	Args []string
	// All: every device mDNS finds plus every inventory entry.
	All bool
	// Group: an inventory group.
	Group string
	// InventoryOnly: no mDNS at all (names must be inventory entries or
	// resolve through the OS).
	InventoryOnly bool
	// Cached: with All, take the devices the last discover saved (the cache
	// file) instead of browsing; named devices are still browsed for.
	Cached bool
	// Inventory; nil = empty.
	Inventory *inventory.Inventory
	// Config for mDNS.
	Config Config
	// BrowseTimeout bounds the browse (for --all, and to learn the TXT
	// records of named devices); 0 = 2 s.
	BrowseTimeout time.Duration
	// Resolver for host names; nil = one on Config.
	Resolver *Resolver
	// KeepDuplicates: return every target, even several that name one
	// device, for a caller that merges them itself (push compares their
	// credentials first).
	KeepDuplicates bool
	// SkipESPHome: All leaves out devices found only by their
	// _esphomelib._tcp record (an inventory entry keeps one in). push sets
	// it unless ESPHome is asked for: an ESPHome device takes only an image
	// built from its own YAML, and nothing else it tells could refuse
	// another one.
	SkipESPHome bool
	// SkippedESPHome, when set, is told how many devices SkipESPHome left
	// out (so that "no devices" can say why).
	SkippedESPHome func(n int)
	// MQTTOnly, when set, is told each inventory device that All or Group
	// leaves out for having no address (it is reached over MQTT only, by
	// rollout), so the caller can say so. Named, such a device is refused
	// (CheckArgs).
	MQTTOnly func(d inventory.Device)
}

// Selected is one target, or why it could not be used (the rest of the
// batch goes on).
type Selected struct {
	Target Target
	Err    error
}

// ErrNoTargets: nothing was named.
var ErrNoTargets = errors.New("no devices named: give HOST arguments, --all or --group")

// Select builds the target list. It fails only for a selection that cannot
// work (unknown group, nothing named); per-device failures are in Selected.Err.
func Select(ctx context.Context, s Selection) ([]Selected, error) {
	inv := s.Inventory
	if inv == nil {
		inv = &inventory.Inventory{}
	}
	res := s.Resolver
	if res == nil {
		res = &Resolver{Config: s.Config}
	}
	if s.BrowseTimeout <= 0 {
		s.BrowseTimeout = 2 * time.Second
	}
	var targets []Target
	var browsed []Device
	didBrowse := false
	browse := func(until func([]Device) bool) error {
		if s.InventoryOnly || didBrowse {
			return nil
		}
		didBrowse = true
		ds, err := browseUntil(ctx, s.Config, s.BrowseTimeout, until)
		if err != nil {
			return err
		}
		browsed = ds
		for _, d := range ds {
			res.Remember(d.Host, d.Addrs)
		}
		return nil
	}

	// Devices without an address have nothing to connect to.
	var devs []inventory.Device
	leftOut := 0
	for _, d := range inv.Devices {
		if d.MQTTOnly() {
			if s.All && s.MQTTOnly != nil {
				s.MQTTOnly(d)
			}
			continue
		}
		devs = append(devs, d)
	}
	switch {
	case s.All && s.Cached && !s.InventoryOnly:
		ds, _, err := LoadCache()
		if err != nil {
			return nil, err
		}
		// The cache holds what the last discover browsed, --service types
		// included; --all takes only what this run would browse.
		browsed, didBrowse = Sweepable(ds, s.Config.Services), true
		for _, d := range ds {
			res.Remember(d.Host, d.Addrs)
		}
		targets = Merge(browsed, devs)
	case s.All:
		if err := browse(nil); err != nil {
			return nil, err
		}
		targets = Merge(browsed, devs)
	case s.Group != "":
		members, err := inv.Group(s.Group)
		if err != nil {
			return nil, err
		}
		for _, d := range members {
			if d.MQTTOnly() {
				leftOut++
				if s.MQTTOnly != nil {
					s.MQTTOnly(d)
				}
				continue
			}
			targets = append(targets, FromInventory(d))
		}
	}
	if s.All && s.SkipESPHome {
		n := len(targets)
		targets = slices.DeleteFunc(targets, func(t Target) bool {
			return t.Service == devinfo.ESPHomeService && !slices.Contains(t.Sources, "inventory")
		})
		if s.SkippedESPHome != nil {
			s.SkippedESPHome(n - len(targets))
		}
	}
	if err := CheckArgs(s.Args, inv); err != nil {
		return nil, err // before any browse: a bad argument costs no time
	}
	for _, arg := range s.Args {
		if d, ok := inv.Device(arg); ok {
			t := FromInventory(d)
			t.Arg = arg
			targets = append(targets, t)
			continue
		}
		t, err := ParseTarget(arg)
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 && !s.All && leftOut == 0 {
		return nil, ErrNoTargets
	}

	// Learn the TXT records of named devices: browse until each is seen.
	if !s.All && !s.InventoryOnly {
		if err := browse(func(ds []Device) bool {
			for _, t := range targets {
				if matchDevice(t, ds) < 0 {
					return false
				}
			}
			return true
		}); err != nil && ctx.Err() == nil {
			// Browsing is a bonus for named devices: go on without TXT.
			if l := s.Config.Logger; l != nil {
				l.Debug("mdns browse for TXT records failed", "err", err)
			}
		}
	}
	out := make([]Selected, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		if i := matchDevice(t, browsed); i >= 0 {
			t = enrich(t, browsed[i])
		}
		out[i].Target = t
		if len(t.Addrs) > 0 || t.Host == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := res
			if s.InventoryOnly {
				r = &Resolver{LookupOS: res.LookupOS, NoMDNS: true}
			}
			addrs, err := r.Lookup(ctx, t.Host)
			if err != nil {
				out[i].Err = err
				return
			}
			out[i].Target.Addrs = addrs
			if j := matchDevice(out[i].Target, browsed); j >= 0 {
				out[i].Target = enrich(out[i].Target, browsed[j])
			}
		}()
	}
	wg.Wait()
	if s.KeepDuplicates {
		return out, ctx.Err()
	}
	return dedup(out), ctx.Err()
}

// Sweepable keeps the devices --all may take: those found under a service
// this run browses (services; nil = DefaultServices). A host seen only as
// _http._tcp (a printer, a router) is never swept in: _http._tcp is
// browsed for web ports alone, so it takes part only when it is named as a
// service of its own, and then the detection table sends it nothing
// without a family fingerprint (docs/protocols/README.md).
func Sweepable(ds []Device, services []string) []Device {
	if len(services) == 0 {
		services = DefaultServices
	}
	var out []Device
	for _, d := range ds {
		for _, sv := range services {
			if name, err := ServiceName(sv); err == nil && name == d.Service {
				out = append(out, d)
				break
			}
		}
	}
	return out
}

// dedup drops later targets that are the same device as an earlier one
// (SameDevice: an address in common, the same port): one device named
// twice, as a name and its address, or one argument given twice. The kept
// target lists every name it was given as, so the merge is said, not
// silent. Different ports on one address stay apart.
func dedup(in []Selected) []Selected {
	addrs := make([][]netip.Addr, len(in))
	ports := make([]int, len(in))
	for i, s := range in {
		if s.Err == nil {
			addrs[i] = s.Target.Addrs
		}
		ports[i] = s.Target.Port
	}
	var out []Selected
	for _, g := range SameDevice(addrs, ports) {
		s := in[g.Items[0]]
		if len(g.Items) > 1 {
			for _, i := range g.Items {
				s.Target.Given = append(s.Target.Given, givenName(in[i].Target))
			}
		}
		out = append(out, s)
	}
	return out
}

func givenName(t Target) string {
	if t.Arg != "" {
		return t.Arg
	}
	return t.Name
}

// ErrBadTarget marks an argument that names no device the way it is written
// (a usage error: the caller exits 2 before any work).
var ErrBadTarget = errors.New("bad target")

type badTarget struct{ msg string }

func (e badTarget) Error() string        { return e.msg }
func (e badTarget) Is(target error) bool { return target == ErrBadTarget }

func badTargetf(format string, args ...any) error { return badTarget{fmt.Sprintf(format, args...)} }

// CheckArgs parses every argument that is not an inventory name, so a
// command can refuse a malformed one before it starts any work, and
// refuses an inventory name without an address (a device reached over
// MQTT only). The error wraps ErrBadTarget.
func CheckArgs(args []string, inv *inventory.Inventory) error {
	for _, a := range args {
		if inv != nil {
			if d, ok := inv.Device(a); ok {
				if d.MQTTOnly() {
					return badTargetf("%s has no address in the inventory: it is reached over MQTT only (ots-ota rollout updates it); give it address: to reach it directly", d.Name)
				}
				continue
			}
		}
		if _, err := ParseTarget(a); err != nil {
			return err
		}
	}
	return nil
}

// ParseTarget reads HOST, IP, HOST:PORT or [IPv6]:PORT. Its errors wrap
// ErrBadTarget.
func ParseTarget(arg string) (Target, error) {
	a := strings.TrimSpace(arg)
	shown := auth.StripUserinfo(arg) // a URL's password is never printed
	bad := func() error {
		return badTargetf("target %q is not a device: give a host name, an IP address or HOST:PORT", shown)
	}
	if a == "" || strings.Contains(a, "/") {
		return Target{}, bad()
	}
	t := Target{Name: a, Host: a, Arg: arg}
	if ip, err := netip.ParseAddr(a); err == nil {
		t.Addrs = []netip.Addr{ip.Unmap()}
		return t, nil
	}
	if h, p, err := net.SplitHostPort(a); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Target{}, badTargetf("target %q: bad port %q: give a port from 1 to 65535", shown, auth.StripUserinfo(p))
		}
		if h == "" {
			return Target{}, bad()
		}
		t.Host, t.Port = h, n
		if ip, err := netip.ParseAddr(h); err == nil {
			t.Addrs = []netip.Addr{ip.Unmap()}
		}
	}
	if len(t.Addrs) == 0 && strings.ContainsAny(t.Host, " :[]%") {
		return Target{}, bad()
	}
	return t, nil
}

// matchDevice finds the browsed device that is t (by host name or
// address, and port when t has one), preferring _ota._tcp. An ESPHome
// record matches by host or address alone: it names the API port, and its
// OTA port is only the platform's default, which HOST:PORT or the
// inventory may override.
func matchDevice(t Target, ds []Device) int {
	best := -1
	for i, d := range ds {
		if t.Port != 0 && d.OTAPort() != t.Port && d.OTAPort() != 0 && d.Service != devinfo.ESPHomeService {
			continue
		}
		ok := t.Host != "" && strings.EqualFold(strings.TrimSuffix(t.Host, "."), d.Host)
		for _, a := range t.Addrs {
			ok = ok || slices.Contains(d.Addrs, a)
		}
		if ok && (best < 0 || serviceRank(d.Service) < serviceRank(ds[best].Service)) {
			best = i
		}
	}
	return best
}

func enrich(t Target, d Device) Target {
	if len(t.Addrs) == 0 {
		t.Addrs = slices.Clone(d.Addrs)
	}
	if t.Port == 0 {
		t.Port = d.OTAPort()
	}
	if t.WebPort == 0 {
		t.WebPort = d.WebPort
		if t.WebPort == 0 && !slices.Contains(t.Sources, "inventory") {
			t.WebPort = -1
		}
	}
	t.TXT, t.Service = d.TXT, d.Service
	if !slices.Contains(t.Sources, "mdns") {
		t.Sources = append(t.Sources, "mdns")
	}
	return t
}

// browseUntil browses for up to timeout, stopping early once until holds
// (and a moment more, for TXT records in packets of their own).
func browseUntil(ctx context.Context, cfg Config, timeout time.Duration, until func([]Device) bool) ([]Device, error) {
	return Browse(ctx, cfg, BrowseOptions{Timeout: timeout, Until: until})
}
