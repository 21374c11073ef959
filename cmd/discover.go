package cmd

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/detect"
	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/discover"
	"github.com/ots-ota/ots-ota/inventory"
)

type discoverOptions struct {
	mdns          mdnsOptions
	Timeout       time.Duration
	Count         int
	Watch         bool
	Save          bool
	InventoryOnly bool
	NoProbe       bool
	NoCache       bool
	WatchFor      time.Duration // --watch with an explicit --timeout: stop after it

	inv *inventory.Inventory
	cfg discover.Config
}

func newDiscoverCmd(a *app) *cobra.Command {
	o := &discoverOptions{}
	c := &cobra.Command{
		Use:   "discover",
		Short: "Find devices by mDNS (_ota._tcp, _arduino._tcp, _wled._tcp) and list the inventory",
		Long: `Discover browses mDNS for _ota._tcp, _arduino._tcp and _wled._tcp (and any --service) on
every interface that is up and multicast-capable, or on the --interface ones, and lists what
it found together with the inventory of the config file. For each device it probes the OTA
port: a TCP connect that succeeds means HTTP; a refused one means espota, unless the
UDP port answers an empty datagram with "port unreachable": then nothing listens. A service
that names its family (_wled._tcp) gives that family's protocol (wled); the probe then only
tells whether the device answers.

--watch streams additions, changes (a new version after a reboot) and removals until
interrupted. A device is removed by a goodbye, or when its SRV or address records expire
(120 s on ESP-IDF) after the refresh queries of RFC 6762.

--save adds the devices found to the inventory, keeping hand-written entries and comments.`,
		Example: `  ots-ota discover
  ots-ota discover --timeout 5s --count 12 --json
  ots-ota discover --interface en0 --watch
  ots-ota discover --save`,
		Args: argsNone,
	}
	c.RunE = run(a, o, runDiscover)
	o.mdns.bind(c, true)
	f := c.Flags()
	f.DurationVar(&o.Timeout, "timeout", 2*time.Second, "how long to listen for answers (with --watch: stop after it)")
	f.IntVar(&o.Count, "count", 0, "return as soon as this many devices are found")
	f.BoolVar(&o.Watch, "watch", false, "stream additions, changes and removals until interrupted")
	f.BoolVar(&o.Save, "save", false, "add the devices found to the inventory in the config file")
	f.BoolVar(&o.InventoryOnly, "inventory-only", false, "no mDNS: list only the inventory")
	f.BoolVar(&o.NoProbe, "no-probe", false, "do not connect to devices to tell their protocol")
	f.BoolVar(&o.NoCache, "no-cache", false, "do not replace the cache file (devices.json) with what this run found")
	return c
}

func (o *discoverOptions) validate(a *app, _ []string) error {
	switch {
	case o.Timeout <= 0:
		return a.flagError("timeout", "must be positive")
	case o.Count < 0:
		return a.flagError("count", "must not be negative")
	case o.Watch && o.Save:
		return usageErrorf("--watch and --save do not go together: save from a discover that ends")
	case o.Watch && a.typed("count"):
		return usageErrorf("--watch and --count do not go together: --count ends a discover early, --watch never ends it")
	case o.Watch && o.InventoryOnly, o.Save && o.InventoryOnly:
		return usageErrorf("--inventory-only lists the inventory: it does not go with --watch or --save")
	}
	o.WatchFor = 0
	if o.Watch && a.typed("timeout") { // a config file's timeout is for browses, not watches
		o.WatchFor = o.Timeout
	}
	var err error
	if o.inv, err = loadInventory(a); err != nil {
		return err
	}
	if !o.InventoryOnly {
		if o.cfg, err = o.mdns.config(a); err != nil {
			return err
		}
	}
	return nil
}

// discoverRow is one device in the table (its --json line is deviceLineOf's).
type discoverRow struct {
	Name      string
	Instance  string
	Host      string
	Addrs     []string
	Port      int
	Service   string
	Protocol  string
	Reachable *bool // nil: not probed
	// Unconfirmed: TCP refused and mDNS did not see it (espota assumed).
	Unconfirmed bool
	Version     string
	Project     string
	Chip        string
	Auth        string
	WebPort     int
	TXT         map[string]string
	Sources     []string
	Note        string
	// ESPHome is an _esphomelib._tcp record's TXT, nil for other devices.
	ESPHome *devinfo.ESPHomeTXT
}

func runDiscover(ctx context.Context, a *app, o *discoverOptions) error {
	inv, cfg := o.inv, o.cfg
	// A device may echo a secret (a version holding its token): the ones
	// push would send are hidden here too.
	var sel []discover.Selected
	if inv != nil {
		for _, d := range inv.Devices {
			sel = append(sel, discover.Selected{Target: discover.Target{Auth: d.Auth}})
		}
	}
	infoSecrets(a, sel)
	out := &lineRedactor{a: a, w: a.io.Out}
	defer out.Close()
	if o.Watch {
		return runWatch(ctx, a, out, cfg, o.WatchFor)
	}
	var found []discover.Device
	if !o.InventoryOnly {
		var err error
		found, err = discover.Browse(ctx, cfg, discover.BrowseOptions{Timeout: o.Timeout, Count: o.Count})
		if err != nil {
			return mdnsError(ctx, err)
		}
		if o.NoCache {
			// The cache is what --cached and completion read: kept as it was.
		} else if err := discover.SaveCache(found); err != nil {
			a.log.Warn("could not save the device cache", "err", err)
		}
	}
	for _, d := range inv.Devices {
		if d.MQTTOnly() {
			leftOutMQTTOnly(a, d, "not listed")
		}
	}
	targets := discover.Merge(found, inv.Devices) // leaves those out
	rows := make([]discoverRow, len(targets))
	for i, t := range targets {
		rows[i] = rowOf(t)
	}
	if !o.NoProbe {
		parallel(len(targets), 32, func(i int) { probeRow(ctx, &rows[i], targets[i]) })
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if o.Save {
		if err := saveFound(a, found, rows); err != nil {
			return err
		}
	}
	if a.opts.JSON {
		for _, r := range rows {
			a.writeLine(deviceLineOf(r))
		}
		summaryAs[*discoverSummary](a).Count = ptr(len(rows))
		return nil
	}
	if len(rows) == 0 {
		fmt.Fprintln(a.io.ErrOut, "no devices found; try a longer --timeout, --interface, or list devices under inventory: in the config file")
		return nil
	}
	renderDiscover(out, rows)
	return nil
}

func rowOf(t discover.Target) discoverRow {
	r := discoverRow{Name: t.Name, Host: t.Host, Port: t.Port, Service: t.Service, Protocol: t.Protocol,
		WebPort: t.WebPort, TXT: t.TXT, Sources: t.Sources}
	if r.Addrs = []string{}; len(t.Addrs) > 0 {
		for _, a := range t.Addrs {
			r.Addrs = append(r.Addrs, a.String())
		}
	}
	if t.Service != "" {
		r.Instance = t.Name
	}
	r.Version, r.Project, r.Chip = t.TXT["version"], t.TXT["project"], t.TXT["chip"]
	r.Auth = devinfo.AuthFromTXT(t.TXT)
	if t.Service == devinfo.ESPHomeService {
		// TXT version is the ESPHome release, never the firmware's: the
		// firmware's is project_version, when the YAML sets a project.
		e := devinfo.ParseESPHomeTXT(t.TXT)
		r.Protocol, r.ESPHome = devinfo.ProtoESPHome, e
		r.Version, r.Project, r.Chip, r.Auth = e.ProjectVersion, e.ProjectName, devinfo.ESPHomeChip(e.Platform), ""
	}
	if r.Protocol == "" {
		r.Protocol = serviceProtocol(t.Service)
	}
	return r
}

// serviceProtocol is the protocol of a spoken family that an mDNS service
// type names by itself (_wled._tcp: wled), from the detection table; ""
// for any other service (_ota._tcp and _arduino._tcp are told apart by
// the probe and the TXT).
func serviceProtocol(svc string) string {
	for _, r := range detect.Table() {
		if r.Spoken && r.Protocol != detect.HTTP && r.Protocol != detect.Espota && slices.Contains(r.Services, detect.ServiceName(svc)) {
			return string(r.Protocol)
		}
	}
	return ""
}

// probeRow tells the protocol per device-contract §1 (TCP connect). A
// refusal shows an espota device only when mDNS saw it: otherwise nothing
// confirms a device there, and when the UDP port is unreachable too,
// nothing listens there (as info and push read it).
func probeRow(ctx context.Context, r *discoverRow, t discover.Target) {
	addr := t.OTAAddr()
	if addr == "" {
		return
	}
	// The detection table's port step; the empty datagram only when mDNS
	// did not see the device (a fresh sighting needs no proof).
	p := detect.ProbePort(ctx, addr, detect.PortOptions{Timeout: time.Second, NoUDP: t.SeenByMDNS()})
	var proto, reason string
	ok := true
	switch p.Kind {
	case detect.Accepted:
		proto = devinfo.ProtoHTTP
	case detect.Refused:
		proto = devinfo.ProtoEspota
		if !t.SeenByMDNS() {
			ok, r.Unconfirmed = false, true
			reason = "TCP refused: espota assumed, not confirmed (no mDNS record of a device there)"
		}
	case detect.Closed:
		ok = false
		reason = "nothing listens at " + addr + ": TCP refused and the UDP port is unreachable"
	default:
		ok = false
		reason = "TCP connect to " + addr + ": " + p.Words()
	}
	r.Reachable = &ok
	if proto != "" && r.Protocol == "" {
		r.Protocol = proto
	}
	if !ok {
		r.Note = reason
	}
}

func saveFound(a *app, found []discover.Device, rows []discoverRow) error {
	proto := make(map[string]string)
	for _, r := range rows {
		if len(r.Addrs) > 0 {
			proto[r.Addrs[0]] = r.Protocol
		}
	}
	devs := discover.InventoryEntries(found, func(ad netip.Addr) string { return proto[ad.String()] })
	path := inventoryPath(a)
	added, err := inventory.Add(path, devs)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.io.ErrOut, "saved %d new device(s) to the inventory in %s\n", len(added), path)
	return nil
}

func renderDiscover(w io.Writer, rows []discoverRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tHOST\tADDRESSES\tPORT\tSERVICE\tPROTOCOL\tVERSION\tPROJECT\tCHIP\tAUTH")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, r := range rows {
		svc := r.Service
		if svc == "" {
			svc = "inventory"
		}
		proto := r.Protocol
		switch {
		case r.Unconfirmed:
			proto += "?" // refused, not seen: espota assumed
		case r.Reachable != nil && !*r.Reachable:
			proto = "unreachable"
		}
		port := "-"
		if r.Port > 0 {
			port = strconv.Itoa(r.Port)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(r.Name), dash(r.Host), dash(strings.Join(r.Addrs, ",")),
			port, svc, dash(proto), dash(r.Version), dash(r.Project), dash(r.Chip), dash(r.Auth))
	}
	tw.Flush()
	for _, r := range rows {
		if e := r.ESPHome; e != nil {
			fmt.Fprintf(w, "%s: %s\n", dash(r.Name), esphomeLine(e))
		}
	}
}

// esphomeLine is an ESPHome record's TXT in one line, keys as the device
// names them; keys it does not carry are left out.
func esphomeLine(e *devinfo.ESPHomeTXT) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("version", e.Release)
	add("platform", e.Platform)
	add("board", e.Board)
	add("mac", e.MAC)
	add("config_hash", e.ConfigHash)
	add("project_name", e.ProjectName)
	add("project_version", e.ProjectVersion)
	add("api_encryption", e.APIEncryption)
	add("api_encryption_supported", e.APIEncryptionSupported)
	add("friendly_name", e.FriendlyName)
	return "ESPHome " + strings.Join(parts, " ")
}

// runWatch streams events until interrupted.
func runWatch(parent context.Context, a *app, out io.Writer, cfg discover.Config, stopAfter time.Duration) error {
	ctx := parent
	if stopAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(parent, stopAfter)
		defer cancel()
	}
	events := 0
	if a.opts.JSON {
		summaryAs[*discoverSummary](a).Events = &events
	}
	err := discover.Watch(ctx, cfg, func(e discover.Event) {
		if a.opts.JSON {
			events++
			a.writeLine(watchLineOf(e))
			return
		}
		d := e.Device
		var addrs []string
		for _, ad := range d.Addrs {
			addrs = append(addrs, ad.String())
		}
		line := fmt.Sprintf("%s %-7s %s (%s) %s port %d %s", e.Time.Format("15:04:05"), e.Kind, d.Instance, d.Service,
			strings.Join(addrs, ","), d.Port, d.Host)
		if d.Service == devinfo.ESPHomeService {
			line += " " + esphomeLine(devinfo.ParseESPHomeTXT(d.TXT))
		} else if v := d.TXT["version"]; v != "" {
			line += " version " + v
		}
		if e.Reason != "" {
			line += " (" + e.Reason + ")"
		}
		fmt.Fprintln(out, line)
	})
	if err != nil {
		return mdnsError(parent, err)
	}
	// Ctrl-C is how a watch ends: exit 0, as after --timeout.
	a.log.Info("watch stopped", "interrupted", interrupted(parent))
	return nil
}

// mdnsError says in one line why mDNS could not run.
func mdnsError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if msg, ok := netError(err); ok {
		return withCode("mdns", fmt.Errorf("mDNS: %s", msg))
	}
	return withCode("mdns", fmt.Errorf("mDNS: %v (try --interface NAME, or --inventory-only)", rootCause(err)))
}
