package cmd

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/sim/esphomepull"
	"github.com/ots-ota/ots-ota/sim/tasmotamqtt"
)

// sim --personality esphome-pull: pulling ESPHome nodes on the user's
// broker (sim/esphomepull), each polling a manifest at a URL fixed at
// build.

// esphomeFlags are the flags only esphome-pull uses.
var esphomeFlags = []string{"manifest-url", "cohorts", "node-name", "update-interval", "entity", "chip-family"}

// esphomeUses are sim's other flags esphome-pull uses.
var esphomeUses = []string{"personality", "devices", "chip", "version", "fault", "write-rate", "boot-time", "fast", "seed", "duration", "no-mdns"}

// Defaults of the esphome-pull flags.
const (
	defaultNodeName    = "esphome-%03d"
	fastUpdateInterval = 200 * time.Millisecond
	fastReconnectWait  = 100 * time.Millisecond
	cohortPlaceholder  = "{cohort}"
	restCohort         = "rest"
	// esphomeFileReserve: open files kept for the process itself.
	esphomeFileReserve = 128
	// esphomeMinConns: fewer HTTP connections at once than this is too
	// few for a fleet to fetch as one.
	esphomeMinConns = 16
)

// esphomeConnSlots is how many HTTP connections the nodes may hold open at
// once: each node holds its broker link, and what the open-file limit
// leaves past that is for their GETs (0: no limit known).
func esphomeConnSlots(a *app, n int) (int, error) {
	limit, ok := openFileLimit()
	if !ok {
		return 0, nil
	}
	need := uint64(n) + esphomeFileReserve + esphomeMinConns
	if need > limit {
		return 0, a.flagError("count", "needs about %d open files, but this process may open %d: raise the limit (ulimit -n) or start fewer devices", need, limit)
	}
	return int(min(limit-uint64(n)-esphomeFileReserve, 1<<20)), nil
}

func addESPHomePullFlags(f *pflag.FlagSet, o *pullOptions) {
	f.StringVar(&o.ManifestURL, "manifest-url", "", "esphome-pull: the manifest URL built into the nodes (http://HOST:PORT/PATH); with {cohort} in it, each --cohorts group gets its own")
	f.StringVar(&o.Cohorts, "cohorts", "", "esphome-pull: split the nodes over manifests, NAME:N,...[,NAME:rest] in node order: {cohort} in --manifest-url becomes NAME (e.g. canary:1,manifest:rest)")
	f.StringVar(&o.NodeName, "node-name", defaultNodeName, "esphome-pull: the nodes' names (and MQTT topic prefixes), a pattern with one %d for the node's number from 1")
	f.DurationVar(&o.UpdateInterval, "update-interval", esphomepull.DefaultUpdateInterval, "esphome-pull: how often each node polls its manifest (the first poll comes within half of it after a boot; --fast: 200ms)")
	f.StringVar(&o.Entity, "entity", esphomepull.DefaultEntity, "esphome-pull: the update entity's object id (topics <node>/update/<id>/state and /command)")
	f.StringVar(&o.ChipFamily, "chip-family", "", "esphome-pull: the build's chipFamily the nodes look for in the manifest (default from --chip: esp32s3 is ESP32-S3)")
}

// nodeNamePattern: one %d verb, with an optional zero-padded width.
var nodeNamePattern = regexp.MustCompile(`^[^%]*%0?[0-9]?d[^%]*$`)

// cohort is one --cohorts group: Name on Count nodes (Count -1: the rest).
type cohort struct {
	Name  string
	Count int
}

// parseCohorts reads NAME:N,...[,NAME:rest].
func parseCohorts(s string) ([]cohort, error) {
	var out []cohort
	seen := map[string]bool{}
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		name, n, ok := strings.Cut(item, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("%q: give NAME:N or NAME:rest", item)
		}
		if strings.ContainsAny(name, "/?#% ") {
			return nil, fmt.Errorf("%q: a cohort name goes into the URL's path: no '/', '?', '#', '%%' or space", item)
		}
		if seen[name] {
			return nil, fmt.Errorf("cohort %q is named twice", name)
		}
		seen[name] = true
		c := cohort{Name: name}
		if n == restCohort {
			if i != len(strings.Split(s, ","))-1 {
				return nil, fmt.Errorf("%q: only the last cohort takes the rest", item)
			}
			c.Count = -1
		} else {
			v, err := strconv.Atoi(n)
			if err != nil || v < 1 {
				return nil, fmt.Errorf("%q: N is a count of nodes, 1 or more (or rest)", item)
			}
			c.Count = v
		}
		out = append(out, c)
	}
	return out, nil
}

// manifestURLs is each node's source URL, from --manifest-url and
// --cohorts.
func manifestURLs(a *app, raw, cohorts string, n int) ([]string, error) {
	urls := make([]string, 0, n)
	if !strings.Contains(raw, cohortPlaceholder) {
		if cohorts != "" {
			return nil, a.flagError("cohorts", "--manifest-url holds no %s to name each cohort's manifest", cohortPlaceholder)
		}
		if err := esphomepull.CheckManifestURL(raw); err != nil {
			return nil, a.flagError("manifest-url", "%s", err)
		}
		for range n {
			urls = append(urls, raw)
		}
		return urls, nil
	}
	if cohorts == "" {
		return nil, a.flagError("manifest-url", "%s needs --cohorts NAME:N,...: which nodes poll which manifest", cohortPlaceholder)
	}
	cs, err := parseCohorts(cohorts)
	if err != nil {
		return nil, a.flagError("cohorts", "%s", err)
	}
	for _, c := range cs {
		u := strings.ReplaceAll(raw, cohortPlaceholder, c.Name)
		if err := esphomepull.CheckManifestURL(u); err != nil {
			return nil, a.flagError("manifest-url", "%s", err)
		}
		k := c.Count
		if k < 0 {
			k = n - len(urls)
		}
		if len(urls)+k > n {
			return nil, a.flagError("cohorts", "the cohorts hold more than the %d node(s)", n)
		}
		for range k {
			urls = append(urls, u)
		}
	}
	if len(urls) != n {
		return nil, a.flagError("cohorts", "the cohorts hold %d of the %d nodes: give the counts for all, or end with NAME:rest", len(urls), n)
	}
	return urls, nil
}

// validateESPHomePull checks the flags of an esphome-pull fleet and builds
// its configuration.
func (o *simOptions) validateESPHomePull(a *app) error {
	p := &o.pull
	if err := dropInapplicable(a, sim.ESPHomePull, esphomeFlags, esphomeUses); err != nil {
		return err
	}
	if p.Broker == "" {
		return usageErrorf("--personality esphome-pull needs --broker mqtt://HOST[:PORT]: the broker its nodes connect to")
	}
	if err := esphomepull.CheckBroker(p.Broker); err != nil {
		return a.flagError("broker", "%s", err)
	}
	if p.ManifestURL == "" {
		return usageErrorf("--personality esphome-pull needs --manifest-url http://HOST:PORT/PATH: the manifest its nodes were built to poll")
	}
	n := o.Devices
	if a.isSet("count") {
		if a.typed("count") && a.typed("devices") && p.Count != o.Devices {
			return usageErrorf("--count and --devices say the same thing: give one")
		}
		n = p.Count
	}
	if n < 1 {
		return a.flagError("count", "need at least 1 device")
	}
	maxConns, err := esphomeConnSlots(a, n)
	if err != nil {
		return err
	}
	urls, err := manifestURLs(a, p.ManifestURL, p.Cohorts, n)
	if err != nil {
		return err
	}
	if !nodeNamePattern.MatchString(p.NodeName) {
		return a.flagError("node-name", "give a pattern with one %%d for the node's number, such as esphome-%%03d")
	}
	family := p.ChipFamily
	if family == "" {
		f, ok := esphomepull.ChipFamily(o.Chip)
		if !ok {
			return a.flagError("chip", "no ESPHome chip family for %q: give --chip-family as the manifest names it (ESP32, ESP32-S3, ESP8266 …)", o.Chip)
		}
		family = f
	}
	version := o.Version
	if err := descText(a, "version", version); err != nil {
		return err
	}
	if strings.ContainsAny(p.Entity, "/+# ") || p.Entity == "" {
		return a.flagError("entity", "an object id has no '/', '+', '#' or space, and is not empty")
	}
	var specs []esphomepull.FaultSpec
	for _, s := range o.Faults {
		f, err := esphomepull.ParseFault(s)
		if err != nil {
			return a.itemError("fault", s, "%s", strings.TrimPrefix(err.Error(), "fault "+s+": "))
		}
		specs = append(specs, f)
	}
	interval := p.UpdateInterval
	rebootTime := o.BootTime
	flash := int64(esphomepull.DefaultFlashRate)
	reconnect := time.Duration(0)
	if o.Fast {
		interval, rebootTime, flash, reconnect = fastUpdateInterval, 50*time.Millisecond, -1, fastReconnectWait
		if a.isSet("update-interval") {
			interval = p.UpdateInterval
		}
		if a.isSet("boot-time") {
			rebootTime = o.BootTime
		}
	}
	if a.isSet("write-rate") || !o.Fast {
		r, err := rate(a, "write-rate", o.WriteRate)
		if err != nil {
			return err
		}
		flash = r
		if r == 0 {
			flash = -1
		}
	}
	if interval <= 0 {
		return a.flagError("update-interval", "must be above 0")
	}
	if rebootTime < 0 || o.Duration < 0 {
		return usageErrorf("a duration cannot be negative")
	}
	cfg := &esphomepull.Config{Broker: p.Broker, Username: p.MQTTUser, Seed: o.Seed, ReconnectWait: reconnect, MaxConns: maxConns}
	pw, err := p.brokerPassword(a)
	if err != nil {
		return err
	}
	cfg.Password = pw
	for i := range n {
		name := fmt.Sprintf(p.NodeName, i+1)
		if err := esphomepull.CheckName(name); err != nil {
			return a.flagError("node-name", "%s", err)
		}
		cfg.Devices = append(cfg.Devices, esphomepull.Device{Name: name, ManifestURL: urls[i], Version: version, ChipFamily: family,
			Entity: p.Entity, UpdateInterval: interval, FlashRate: flash, RebootTime: rebootTime})
	}
	if err := esphomepull.AssignFaults(cfg.Devices, specs); err != nil {
		return a.flagError("fault", "%s", err)
	}
	p.esCfg = cfg
	return nil
}

func esphomePullLineOf(e esphomepull.Event) pullLine {
	return pullLine{Type: string(e.Event), Schema: jsonSchemaVersion, Time: e.Time, Device: e.Device,
		Personality: string(sim.ESPHomePull), Version: nullString(e.Version), URL: nullString(e.URL),
		Bytes: nullPositive(e.Bytes), BootCount: nullPositive(e.BootCount), Text: nullString(e.Text)}
}

// esphomePullEventLine prints an event as pullEventLine prints
// tasmota-mqtt's (the same fields; an ESPHome event has no attempt).
func esphomePullEventLine(e esphomepull.Event) string {
	return pullEventLine(tasmotamqtt.Event{Time: e.Time, Event: tasmotamqtt.EventKind(e.Event), Device: e.Device,
		Version: e.Version, URL: e.URL, Bytes: e.Bytes, BootCount: e.BootCount, Text: e.Text})
}

func runESPHomePullSim(ctx context.Context, a *app, o *simOptions) error {
	cfg := *o.pull.esCfg
	cfg.Logger = a.log
	return runPulling(ctx, a, o, len(cfg.Devices), esphomePullLineOf, esphomePullEventLine,
		func(ctx context.Context, onEvent func(esphomepull.Event)) (func(), func(io.Writer, time.Duration), error) {
			cfg.OnEvent = onEvent
			f, err := esphomepull.Start(ctx, cfg)
			if err != nil {
				return nil, nil, err
			}
			return f.Close, func(w io.Writer, took time.Duration) { renderESPHomePullFleet(w, f, cfg.Broker, took, o.Duration) }, nil
		})
}

func renderESPHomePullFleet(w io.Writer, f *esphomepull.Fleet, broker string, took, duration time.Duration) {
	devs := f.Devices()
	fmt.Fprintf(w, "started %d simulated ESPHome node(s) on %s in %v\n", len(devs), broker, took.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCHIP FAMILY\tMANIFEST\tINTERVAL\tRUNNING\tFAULTS")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\n", d.Name, d.ChipFamily, d.ManifestURL, d.UpdateInterval, f.Running(d.Name), faultsCell(d.Faults))
	}
	_ = tw.Flush()
	runningFor(w, duration)
}
