package cmd

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/discover"
	"github.com/ots-ota/ots-ota/inventory"
)

// mdnsOptions are the flags of every command that uses mDNS.
type mdnsOptions struct {
	Interfaces []string
	Services   []string
	IPv4Only   bool
}

func (o *mdnsOptions) bind(c *cobra.Command, services bool) {
	f := c.Flags()
	f.StringArrayVar(&o.Interfaces, "interface", nil, "network interface for mDNS (repeatable; default: every interface that is up and multicast-capable)")
	f.BoolVar(&o.IPv4Only, "ipv4-only", false, "mDNS over IPv4 only")
	if services {
		f.StringArrayVar(&o.Services, "service", nil, "another DNS-SD service type to browse, e.g. _esphomelib._tcp (repeatable)")
	}
	_ = c.RegisterFlagCompletionFunc("interface", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		ifs, _ := discover.Interfaces()
		var names []string
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
}

// config checks the flags and makes the browse configuration.
func (o *mdnsOptions) config(a *app) (discover.Config, error) {
	cfg := discover.Config{IPv4Only: o.IPv4Only, Logger: a.log}
	if len(o.Interfaces) > 0 {
		ifs, err := discover.InterfacesByName(o.Interfaces)
		if err != nil {
			return cfg, usageErrorf("--interface: %v", err)
		}
		cfg.Interfaces = ifs
	}
	if len(o.Services) > 0 {
		cfg.Services = append([]string(nil), discover.DefaultServices...)
		for _, s := range o.Services {
			name, err := discover.ServiceName(s)
			if err != nil {
				return cfg, usageErrorf("--service: %v", err)
			}
			cfg.Services = append(cfg.Services, name)
		}
	}
	return cfg, nil
}

// selectOptions pick the devices a command acts on.
type selectOptions struct {
	All           bool
	Group         string
	InventoryOnly bool
	Cached        bool
}

func (o *selectOptions) bind(c *cobra.Command) {
	f := c.Flags()
	f.BoolVar(&o.All, "all", false, "every device: found by mDNS and listed in the inventory")
	f.StringVar(&o.Group, "group", "", "the devices of an inventory group")
	f.BoolVar(&o.InventoryOnly, "inventory-only", false, "no mDNS: only the inventory (and names the system resolves)")
	f.BoolVar(&o.Cached, "cached", false, "with --all: the devices the last discover found (its cache file) instead of a new browse")
}

func (o *selectOptions) validate() error {
	if o.All && o.Group != "" {
		return usageErrorf("--all and --group do not go together: --all already takes every device")
	}
	if o.Cached && !o.All {
		return usageErrorf("--cached goes with --all: it replaces the browse for every device")
	}
	return nil
}

// inventoryPath is the config file that holds the inventory: the one that
// was read, else where `discover --save` creates one.
func inventoryPath(a *app) string {
	if p := a.cfg.Path(); p != "" {
		return p
	}
	if p, required := configPath(a.opts.ConfigFile); required {
		return p
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		dir, _ = os.UserConfigDir()
	}
	if dir == "" {
		return "ots-ota.yaml"
	}
	return filepath.Join(dir, "ots-ota", "config.yaml")
}

// loadInventory reads the config file's inventory: section; a bad one is a
// usage error naming the file.
func loadInventory(a *app) (*inventory.Inventory, error) {
	n := a.cfg.Data(inventory.Key)
	if n == nil {
		return &inventory.Inventory{}, nil
	}
	inv, err := inventory.FromNode(n)
	if err != nil {
		return nil, usageErrorf("config file %s: inventory: %v", a.cfg.Path(), err)
	}
	return inv, nil
}

// leftOutMQTTOnly says, in one line on stderr, that an inventory device
// without an address (reached over MQTT only) was left out; what is what
// did not happen to it ("not pushed").
func leftOutMQTTOnly(a *app, d inventory.Device, what string) {
	if !a.opts.Quiet {
		fmt.Fprintf(a.io.ErrOut, "ots-ota: %s: no address (reached over MQTT only); %s\n", a.secrets.Redact(d.Name), what)
	}
}

// completeTargets offers the inventory's names and the hosts the last
// discover found (its cache file), for TARGET arguments.
func completeTargets(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		return targetCandidates(a, args, prefix, false), cobra.ShellCompDirectiveNoFileComp
	}
}

// completePush offers *.bin files for FIRMWARE, then the targets, the
// inventory's groups as group:NAME, and all.
func completePush(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return []string{"bin"}, cobra.ShellCompDirectiveFilterFileExt
		}
		return targetCandidates(a, args, prefix, true), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeGroups offers the inventory's group names, for --group.
func completeGroups(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		if inv := completionInventory(a); inv != nil {
			for g := range inv.Groups {
				out = append(out, g)
			}
			slices.Sort(out)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completionInventory reads the inventory for a completion request, which
// skips the config loader; nil when there is none.
func completionInventory(a *app) *inventory.Inventory {
	p, _ := configPath(a.opts.ConfigFile)
	if p == "" {
		return nil
	}
	inv, err := inventory.Load(p)
	if err != nil {
		return nil
	}
	return inv
}

func targetCandidates(a *app, args []string, prefix string, selectors bool) []string {
	var out []string
	seen := make(map[string]bool)
	add := func(s string) {
		if s != "" && !seen[s] && !slices.Contains(args, s) && strings.HasPrefix(s, prefix) {
			seen[s] = true
			out = append(out, s)
		}
	}
	if inv := completionInventory(a); inv != nil {
		for _, d := range inv.Devices {
			add(d.Name)
		}
		if selectors {
			groups := make([]string, 0, len(inv.Groups))
			for g := range inv.Groups {
				groups = append(groups, g)
			}
			slices.Sort(groups)
			for _, g := range groups {
				add("group:" + g)
			}
		}
	}
	if ds, _, err := discover.LoadCache(); err == nil {
		for _, d := range ds {
			add(d.Host)
		}
	}
	if selectors {
		add("all")
	}
	return out
}

// parallel runs fn(0) … fn(n-1), at most limit at a time, and waits for all.
func parallel(n, limit int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, limit)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}
