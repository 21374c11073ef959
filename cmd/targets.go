package cmd

import (
	"os"
	"path/filepath"

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
}

func (o *selectOptions) bind(c *cobra.Command) {
	f := c.Flags()
	f.BoolVar(&o.All, "all", false, "every device: found by mDNS and listed in the inventory")
	f.StringVar(&o.Group, "group", "", "the devices of an inventory group")
	f.BoolVar(&o.InventoryOnly, "inventory-only", false, "no mDNS: only the inventory (and names the system resolves)")
}

// inventoryPath is the config file that holds the inventory: the one the
// config loader reads, or where `discover --save` creates one.
func inventoryPath(a *app) string {
	p, required := configPath(a.opts.ConfigFile)
	if required {
		return p
	}
	if _, err := os.Stat(p); err == nil {
		return p
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		dir, _ = os.UserConfigDir()
	}
	if dir == "" {
		return p
	}
	return filepath.Join(dir, "ots-ota", "config.yaml")
}

func loadInventory(a *app) (*inventory.Inventory, error) {
	p, required := configPath(a.opts.ConfigFile)
	if _, err := os.Stat(p); err != nil && !required {
		return &inventory.Inventory{}, nil
	}
	return inventory.Load(p)
}
