package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/sim/esphomepull"
	"github.com/ots-ota/ots-ota/sim/tasmotamqtt"
)

// sim --personality tasmota-mqtt: pulling Tasmota devices on the user's
// broker (sim/tasmotamqtt). They have no addresses, ports or mDNS of their
// own, so most of sim's flags do not apply; these are theirs.
type pullOptions struct {
	Broker      string
	Count       int
	TopicPrefix string
	FullTopic   string
	FreeKiB     int
	MQTTUser    string
	MQTTPWFile  string
	// esphome-pull's (sim_esphomepull.go).
	ManifestURL    string
	Cohorts        string
	NodeName       string
	UpdateInterval time.Duration
	Entity         string
	ChipFamily     string

	cfg   *tasmotamqtt.Config // resolved by validatePull
	esCfg *esphomepull.Config // resolved by validateESPHomePull
}

// pullFlags are the flags only the pulling personalities use: both
// (pullShared), tasmota-mqtt (tasmotaFlags), esphome-pull (esphomeFlags).
var (
	pullShared   = []string{"broker", "count", "mqtt-user", "mqtt-password-file"}
	tasmotaFlags = []string{"topic-prefix", "full-topic", "free-kib"}
	pullFlags    = slices.Concat(pullShared, tasmotaFlags, esphomeFlags)
)

// pullFlagOwners says which personalities a pull flag applies to.
func pullFlagOwners(name string) string {
	switch {
	case slices.Contains(tasmotaFlags, name):
		return "tasmota-mqtt"
	case slices.Contains(esphomeFlags, name):
		return "esphome-pull"
	}
	return "tasmota-mqtt or esphome-pull"
}

// pullUses are sim's other flags tasmota-mqtt uses.
var pullUses = []string{"personality", "devices", "chip", "version", "project", "fault", "write-rate", "boot-time", "fast", "seed", "duration", "no-mdns"}

func addPullFlags(f *pflag.FlagSet, o *pullOptions) {
	f.StringVar(&o.Broker, "broker", "", "tasmota-mqtt, esphome-pull: the MQTT broker the devices connect to, mqtt://HOST[:PORT]")
	f.IntVar(&o.Count, "count", 0, "tasmota-mqtt, esphome-pull: number of devices (the same as --devices)")
	f.StringVar(&o.TopicPrefix, "topic-prefix", "", "tasmota-mqtt: topics PREFIX_XXXXXX instead of tasmota_XXXXXX (XXXXXX from each device's MAC)")
	f.StringVar(&o.FullTopic, "full-topic", "", "tasmota-mqtt: the devices' FullTopic pattern (default %prefix%/%topic%/)")
	f.IntVar(&o.FreeKiB, "free-kib", 0, "tasmota-mqtt: free sketch space in KiB (default: ESP8266 408, 64 with --fault two-step; ESP32 2880)")
	f.StringVar(&o.MQTTUser, "mqtt-user", "", "tasmota-mqtt, esphome-pull: the user the devices log in with")
	f.StringVar(&o.MQTTPWFile, "mqtt-password-file", "", "tasmota-mqtt, esphome-pull: read the devices' broker password from FILE (also $OTS_OTA_MQTT_PASSWORD)")
	addESPHomePullFlags(f, o)
}

func isPull(p string) bool {
	p = strings.TrimSpace(p)
	return strings.EqualFold(p, string(sim.TasmotaMQTT)) || strings.EqualFold(p, string(sim.ESPHomePull))
}

// dropInapplicable refuses a typed flag a pulling personality does not use
// (own: its flags besides pullShared and pullUses); the same value from the
// environment or the config file is ignored, and -v says so.
func dropInapplicable(a *app, pers sim.Personality, own, uses []string) error {
	var drop []string
	a.cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if !a.isSet(f.Name) || slices.Contains(pullShared, f.Name) || slices.Contains(own, f.Name) || slices.Contains(uses, f.Name) {
			return
		}
		drop = append(drop, f.Name)
	})
	for _, name := range drop {
		if a.typed(name) {
			if slices.Contains(pullFlags, name) {
				return usageErrorf("--%s does not apply to --personality %s (it applies to --personality %s)", name, pers, pullFlagOwners(name))
			}
			return usageErrorf("--%s does not apply to --personality %s: its devices have no addresses, ports or servers of their own (they connect to --broker)", name, pers)
		}
		a.log.Info("ignoring a value the personality does not use", "from", a.source(name), "personality", string(pers))
	}
	return nil
}

// validatePull checks the flags of a pulling fleet and builds its
// configuration.
func (o *simOptions) validatePull(a *app) error {
	if strings.EqualFold(strings.TrimSpace(o.Personality), string(sim.ESPHomePull)) {
		return o.validateESPHomePull(a)
	}
	p := &o.pull
	if err := dropInapplicable(a, sim.TasmotaMQTT, tasmotaFlags, pullUses); err != nil {
		return err
	}
	if p.Broker == "" {
		return usageErrorf("--personality tasmota-mqtt needs --broker mqtt://HOST[:PORT]: the broker its devices connect to")
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
	if err := checkOpenFiles(a, n, 2); err != nil { // a broker link, and a download at times
		return err
	}
	chip := strings.ToLower(o.Chip)
	if chip != "esp8266" {
		if _, err := parseChip(a, chip); err != nil {
			return err
		}
	}
	version := tasmotamqtt.DefaultVersion
	if a.isSet("version") {
		if err := descText(a, "version", o.Version); err != nil {
			return err
		}
		version = o.Version
	}
	imageName := ""
	if a.isSet("project") {
		if err := descText(a, "project", o.Project); err != nil {
			return err
		}
		imageName = o.Project
	}
	if p.TopicPrefix != "" && strings.ContainsAny(p.TopicPrefix, "/+# ") {
		return a.flagError("topic-prefix", "a Tasmota topic has no '/', '+', '#' or space")
	}
	if p.FullTopic != "" && !strings.Contains(p.FullTopic, "%topic%") {
		return a.flagError("full-topic", "the pattern must hold %%topic%% (such as %%prefix%%/%%topic%%/)")
	}
	if p.FreeKiB < 0 {
		return a.flagError("free-kib", "cannot be negative")
	}
	var specs []tasmotamqtt.FaultSpec
	for _, s := range o.Faults {
		f, err := tasmotamqtt.ParseFault(s)
		if err != nil {
			return a.itemError("fault", s, "%s", strings.TrimPrefix(err.Error(), "fault "+s+": "))
		}
		switch {
		case f.Kind == tasmotamqtt.FaultTwoStep && chip != "esp8266":
			return a.itemError("fault", s, "only an ESP8266 takes the minimal two-step: add --chip esp8266")
		case f.Kind == tasmotamqtt.FaultCrashOnBoot && chip == "esp8266":
			return a.itemError("fault", s, "an ESP8266 has no rollback (a crashing image boot-loops): use never-comes-back")
		}
		specs = append(specs, f)
	}
	rebootTime := o.BootTime
	flash := int64(tasmotamqtt.DefaultFlashRate)
	tick := time.Second
	if o.Fast {
		// The firmware's own seconds too: an upgrade's countdowns take
		// about seven of them.
		tick, flash, rebootTime = 10*time.Millisecond, -1, 50*time.Millisecond
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
	if rebootTime < 0 || o.Duration < 0 {
		return usageErrorf("a duration cannot be negative")
	}
	cfg := &tasmotamqtt.Config{Broker: p.Broker, Username: p.MQTTUser, Tick: tick, Seed: o.Seed, TopicPrefix: p.TopicPrefix}
	pw, err := p.brokerPassword(a)
	if err != nil {
		return err
	}
	cfg.Password = pw
	if err := tasmotamqtt.CheckBroker(p.Broker); err != nil {
		return a.flagError("broker", "%s", err)
	}
	for range n {
		cfg.Devices = append(cfg.Devices, tasmotamqtt.Device{Chip: chip, Version: version, Image: imageName, FullTopic: p.FullTopic,
			FreeKiB: p.FreeKiB, FlashRate: flash, RebootTime: rebootTime})
	}
	if err := tasmotamqtt.AssignFaults(cfg.Devices, specs); err != nil {
		return a.flagError("fault", "%s", err)
	}
	p.cfg = cfg
	return nil
}

// brokerPassword is the pulling devices' broker password: from
// --mqtt-password-file, else OTS_OTA_MQTT_PASSWORD; it needs --mqtt-user,
// and is redacted from all output from now on.
func (p *pullOptions) brokerPassword(a *app) (auth.Secret, error) {
	var pw auth.Secret
	if p.MQTTPWFile != "" {
		s, err := readSecretFile(p.MQTTPWFile)
		if err != nil {
			return pw, usageErrorf("--mqtt-password-file: %v", err)
		}
		pw = s
	} else if v := os.Getenv("OTS_OTA_MQTT_PASSWORD"); v != "" {
		pw = auth.NewSecret(v)
	}
	if pw.Reveal() != "" && p.MQTTUser == "" {
		return pw, usageErrorf("a broker password needs --mqtt-user")
	}
	a.secrets.Add(pw)
	return pw, nil
}

// pullLine is one tasmota-mqtt event in --json (docs/schema/sim.json,
// pull_event).
type pullLine struct {
	Type        string    `json:"type"`
	Schema      int       `json:"schema"`
	Time        time.Time `json:"time"`
	Device      string    `json:"device"`
	Personality string    `json:"personality"`
	Version     *string   `json:"version"`
	URL         *string   `json:"url"`
	Attempt     *int      `json:"attempt"`
	Bytes       *int64    `json:"bytes"`
	BootCount   *int      `json:"boot_count"`
	Text        *string   `json:"text"`
}

func pullLineOf(e tasmotamqtt.Event) pullLine {
	return pullLine{Type: string(e.Event), Schema: jsonSchemaVersion, Time: e.Time, Device: e.Device,
		Personality: string(sim.TasmotaMQTT), Version: nullString(e.Version), URL: nullString(e.URL),
		Attempt: nullPositive(e.Attempt), Bytes: nullPositive(e.Bytes), BootCount: nullPositive(e.BootCount), Text: nullString(e.Text)}
}

func pullEventLine(e tasmotamqtt.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-14s %s", e.Time.Format("15:04:05.000"), e.Device, e.Event)
	add := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	add("version", e.Version)
	add("url", e.URL)
	if e.Attempt > 0 {
		add("attempt", fmt.Sprint(e.Attempt))
	}
	if e.Bytes > 0 {
		add("bytes", fmt.Sprint(e.Bytes))
	}
	if e.BootCount > 0 {
		add("boot", fmt.Sprint(e.BootCount))
	}
	if e.Text != "" {
		add("text", fmt.Sprintf("%q", e.Text))
	}
	return b.String()
}

func runPullSim(ctx context.Context, a *app, o *simOptions) error {
	cfg := *o.pull.cfg
	cfg.Logger = a.log
	return runPulling(ctx, a, o, len(cfg.Devices), pullLineOf, pullEventLine,
		func(ctx context.Context, onEvent func(tasmotamqtt.Event)) (func(), func(io.Writer, time.Duration), error) {
			cfg.OnEvent = onEvent
			f, err := tasmotamqtt.Start(ctx, cfg)
			if err != nil {
				return nil, nil, err
			}
			return f.Close, func(w io.Writer, took time.Duration) { renderPullFleet(w, f, cfg.Broker, took, o.Duration) }, nil
		})
}

// runPulling runs a pulling family's fleet of n devices: its events on
// stdout (--json, as jsonLine) or stderr (textLine), held until the fleet's
// table is out; then until the duration ends or an interrupt. start starts
// the fleet, and returns its Close and the table's renderer.
func runPulling[E any](ctx context.Context, a *app, o *simOptions, n int, jsonLine func(E) pullLine, textLine func(E) string,
	start func(ctx context.Context, onEvent func(E)) (func(), func(io.Writer, time.Duration), error)) error {
	ev := &heldEvents[E]{}
	ev.emit = func(e E) {
		if a.opts.JSON {
			a.writeLine(jsonLine(e))
		} else if !a.opts.Quiet {
			fmt.Fprintln(a.io.ErrOut, a.secrets.Redact(textLine(e)))
		}
	}
	runCtx, cancel := simRunContext(ctx, o.Duration)
	defer cancel()
	t0 := time.Now()
	closeFleet, render, err := start(runCtx, ev.add)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = withCode("sim_start", errors.New("cannot start the simulated devices: "+err.Error()))
		if a.opts.JSON {
			simStartFailure(a, err, nil, time.Now())
		}
		return err
	}
	a.log.Info("fleet started", "devices", n, "took", time.Since(t0).Round(time.Millisecond))
	if a.opts.JSON {
		summaryAs[*simSummary](a).Count = ptr(n)
	}
	ev.mu.Lock()
	if !a.opts.JSON {
		lr := &lineRedactor{a: a, w: a.io.Out}
		render(lr, time.Since(t0))
		_ = lr.Close()
	}
	for _, e := range ev.held {
		ev.emit(e)
	}
	ev.held, ev.started = nil, true
	ev.mu.Unlock()
	return simWait(ctx, runCtx, a, closeFleet)
}

// faultsCell is a FAULTS column's cell: the faults joined, "-" for none.
func faultsCell[F ~string](fs []F) string {
	if len(fs) == 0 {
		return "-"
	}
	s := make([]string, len(fs))
	for i, x := range fs {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

// runningFor ends a fleet's table: how long it runs.
func runningFor(w io.Writer, duration time.Duration) {
	if duration > 0 {
		fmt.Fprintf(w, "running for %v or until interrupted (Ctrl-C); events follow on stderr\n", duration)
	} else {
		fmt.Fprintln(w, "running until interrupted (Ctrl-C); events follow on stderr")
	}
}

func renderPullFleet(w io.Writer, f *tasmotamqtt.Fleet, broker string, took, duration time.Duration) {
	devs := f.Devices()
	fmt.Fprintf(w, "started %d simulated Tasmota device(s) on %s in %v\n", len(devs), broker, took.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tCHIP\tFULLTOPIC\tRUNNING\tFAULTS")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Topic, d.Chip, d.FullTopic, f.Running(d.Topic), faultsCell(d.Faults))
	}
	_ = tw.Flush()
	runningFor(w, duration)
}
