package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// FleetConfig describes many devices, each on its own loopback address and
// the real ports, as a LAN full of devices looks to a client.
type FleetConfig struct {
	// N is the number of devices (≥ 1).
	N int
	// BaseIP is the first device's address; the next ones count up,
	// skipping .0 and .255. Default 127.0.0.2.
	BaseIP netip.Addr
	// Addrs, when set, are the devices' addresses (at least N), instead of
	// counting from BaseIP.
	Addrs []netip.Addr
	// AllowNonLoopback permits addresses outside 127.0.0.0/8 and ::1.
	AllowNonLoopback bool
	// Template is every device's Config; Name, IP, Seed, ports, MDNS, Store
	// and OnEvent are set per device, and OnRequest is called one call at a
	// time across the fleet.
	Template Config
	// NamePrefix of the host names; default "ots-sim" → ots-sim-01 … (three
	// digits when N > 99).
	NamePrefix string
	// NameByAddress names each device after its address instead of its
	// index: NamePrefix-127-0-0-2 ("." and ":" become "-"). Fleets on other
	// addresses, in this process or another, then claim none of its host
	// names, so mDNS renames none of them.
	NameByAddress bool
	// InstanceWithHost gives the seed and ots personalities' instance names,
	// fixed in their firmware, the device's host name: "OTS Firmware Main
	// (ots-sim-127-0-0-2)", unique wherever host names are, where two
	// processes' "OTS Firmware Main" would rename one of them.
	InstanceWithHost bool
	// OTAPort; 0 = the personality's port (3232, 8266 for ESP8266; the web
	// uploaders' 80, or 8080 where this process may not bind 80).
	OTAPort int
	// WebPort; 0 = 80 when this process may bind it, else 8080; -1 = none.
	WebPort int
	// MDNSInterface is where the devices are advertised (use
	// mdnsd.LoopbackInterface()); nil = no mDNS.
	MDNSInterface *net.Interface
	// MDNSTTL overrides the TTL of every mDNS record (mdnsd.Config.TTL), so
	// discovery tests can watch records expire in seconds; 0 = ESP-IDF's.
	MDNSTTL time.Duration
	// Seed seeds device i with Seed+i.
	Seed int64
	// Configure, if set, adjusts device i's Config (0-based) before it
	// starts: another personality, a password, faults for some devices.
	Configure func(i int, c *Config)
	// OnEvent receives every device's events, one call at a time (nil =
	// Template.OnEvent).
	OnEvent func(Event)
	// Logger; nil = discard.
	Logger *slog.Logger
	// Parallel bounds concurrent device starts; default 16.
	Parallel int
}

// Fleet is a set of running devices.
type Fleet struct {
	devices  []*Device
	byName   map[string]*Device
	mdns     *mdnsd.Responder
	mdnsStop context.CancelFunc
	mdnsDone chan struct{}
	webPort  int
	closeMu  sync.Once
}

// StartFleet starts cfg.N devices and returns when all serve. On error the
// devices already started are stopped again.
func StartFleet(ctx context.Context, cfg FleetConfig) (*Fleet, error) {
	if cfg.N < 1 {
		return nil, fmt.Errorf("sim: fleet: N = %d, want at least 1", cfg.N)
	}
	addrs, err := fleetAddrs(cfg)
	if err != nil {
		return nil, err
	}
	prefix := cfg.NamePrefix
	if prefix == "" {
		prefix = "ots-sim"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{byName: make(map[string]*Device, cfg.N)}
	f.webPort = cfg.WebPort
	if f.webPort == 0 {
		f.webPort = pickWebPort(addrs[0])
		if f.webPort != 80 {
			log.Info("cannot bind port 80; the web servers use 8080", "addr", addrs[0])
		}
	}
	if cfg.MDNSInterface != nil {
		r, err := mdnsd.New(mdnsd.Config{Interface: cfg.MDNSInterface, Logger: log, TTL: cfg.MDNSTTL})
		if err != nil {
			return nil, fmt.Errorf("sim: fleet: %w", err)
		}
		mctx, stop := context.WithCancel(ctx)
		f.mdns, f.mdnsStop, f.mdnsDone = r, stop, make(chan struct{})
		go func() {
			defer close(f.mdnsDone)
			if err := r.Serve(mctx); err != nil {
				log.Warn("mdns responder stopped", "err", err)
			}
		}()
	}
	store := cfg.Template.Store
	if store == nil {
		store = NewStore()
	}
	onEvent := cfg.OnEvent
	if onEvent == nil {
		onEvent = cfg.Template.OnEvent
	}
	// One call at a time across the fleet, as for one device.
	var sink func(Event)
	if onEvent != nil {
		sink = serialised(new(sync.Mutex), onEvent)
	}
	var reqMu sync.Mutex // one OnRequest call at a time across the fleet
	width := max(2, len(strconv.Itoa(cfg.N)))
	otaWeb := 0 // port 80 or 8080, for a personality whose OTA port is 80

	configs := make([]Config, cfg.N)
	used := make(map[string]bool, cfg.N)
	for i := range configs {
		c := cfg.Template
		c.Name = fmt.Sprintf("%s-%0*d", prefix, width, i+1)
		if cfg.NameByAddress {
			c.Name = AddressName(prefix, addrs[i])
		}
		c.IP = addrs[i]
		c.AllowNonLoopback = cfg.AllowNonLoopback || cfg.Template.AllowNonLoopback
		c.Seed = cfg.Seed + int64(i)
		c.OTAPort = cfg.OTAPort
		c.WebPort = f.webPort
		c.MDNS = f.mdns
		c.Store = store
		c.Logger = log
		if cfg.Configure != nil {
			cfg.Configure(i, &c)
		}
		c.OnEvent = sink // the fleet's, whatever Configure set
		if c.OnRequest != nil {
			c.OnRequest = serialised(&reqMu, c.OnRequest)
		}
		if c.Personality == "" {
			c.Personality = Seed
		}
		if c.OTAPort == 0 {
			c.OTAPort = c.Personality.DefaultOTAPort()
			if c.OTAPort == 80 {
				// The web uploaders take uploads on their web server: 8080
				// where this process may not bind 80, as the web apps.
				if otaWeb == 0 {
					otaWeb = pickWebPort(addrs[0])
				}
				c.OTAPort = otaWeb
			}
		}
		if c.Instance == "" {
			c.Instance = core.DefaultInstance(c.Personality, c.Name)
			if cfg.InstanceWithHost && c.Instance != c.Name {
				c.Instance += " (" + c.Name + ")"
			}
		}
		if used[c.Instance] {
			// Like ESP-IDF mDNS renaming a conflicting instance: "<name>-N".
			c.Instance += "-" + strconv.Itoa(i+1)
		}
		used[c.Instance] = true
		configs[i] = c
	}

	par := cfg.Parallel
	if par <= 0 {
		par = 16
	}
	f.devices = make([]*Device, cfg.N)
	errs := make([]error, cfg.N)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range configs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f.devices[i], errs[i] = core.Start(ctx, configs[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		f.Close()
		return nil, fmt.Errorf("sim: fleet: %w", err)
	}
	for _, d := range f.devices {
		f.byName[d.Name()] = d
	}
	return f, nil
}

// serialised makes fn's calls, and those of every function serialised with
// mu, one at a time.
func serialised[T any](mu *sync.Mutex, fn func(T)) func(T) {
	return func(v T) {
		mu.Lock()
		defer mu.Unlock()
		fn(v)
	}
}

// AddressName is the host name of a device named after its address a:
// prefix, "-", and the address with "-" for "." (ots-sim-127-0-0-2); an
// IPv6 address gets "v6-" and "-" for ":" (ots-sim-v6-1 for ::1).
func AddressName(prefix string, a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return prefix + "-" + strings.ReplaceAll(a.String(), ".", "-")
	}
	return prefix + "-v6-" + strings.Trim(strings.ReplaceAll(a.String(), ":", "-"), "-")
}

// fleetAddrs lists the N device addresses.
func fleetAddrs(cfg FleetConfig) ([]netip.Addr, error) {
	var out []netip.Addr
	if len(cfg.Addrs) > 0 {
		if len(cfg.Addrs) < cfg.N {
			return nil, fmt.Errorf("sim: fleet: %d addresses for %d devices", len(cfg.Addrs), cfg.N)
		}
		out = append(out, cfg.Addrs[:cfg.N]...)
	} else {
		first := cfg.BaseIP
		if !first.IsValid() {
			first = netip.AddrFrom4([4]byte{127, 0, 0, 2})
		}
		addrs, err := FleetAddrs(first, cfg.N, cfg.AllowNonLoopback || cfg.Template.AllowNonLoopback)
		if err != nil {
			return nil, fmt.Errorf("sim: fleet: %w", err)
		}
		out = addrs
	}
	allow := cfg.AllowNonLoopback || cfg.Template.AllowNonLoopback
	for _, a := range out {
		if !a.Unmap().IsLoopback() && !allow {
			return nil, fmt.Errorf("sim: fleet: refusing %s: %w (set AllowNonLoopback to override)", a, ErrNotLoopback)
		}
	}
	return out, nil
}

// pickWebPort is 80 when this process may bind it on addr, else 8080.
func pickWebPort(addr netip.Addr) int {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 80).String())
	if err == nil {
		ln.Close()
		return 80
	}
	if errors.Is(err, os.ErrPermission) {
		return 8080
	}
	return 80 // in use or other trouble: let the device start report it
}

// Devices returns the devices in order (ots-sim-01 first).
func (f *Fleet) Devices() []*Device { return f.devices }

// Device returns the device with host name name, or nil.
func (f *Fleet) Device(name string) *Device { return f.byName[name] }

// Len is the number of devices.
func (f *Fleet) Len() int { return len(f.devices) }

// WebPort is the web server port the devices use (-1 = none).
func (f *Fleet) WebPort() int { return f.webPort }

// MDNS is the fleet's responder, nil without mDNS.
func (f *Fleet) MDNS() *mdnsd.Responder { return f.mdns }

// WaitUp waits until every device serves.
func (f *Fleet) WaitUp(ctx context.Context) error {
	for _, d := range f.devices {
		if err := d.WaitUp(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close stops every device and the mDNS responder.
func (f *Fleet) Close() error {
	f.closeMu.Do(func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for _, d := range f.devices {
			if d == nil {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				d.Close()
			}()
		}
		wg.Wait()
		if f.mdns != nil {
			f.mdns.Close()
			f.mdnsStop()
			<-f.mdnsDone
		}
	})
	return nil
}
