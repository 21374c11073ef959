package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/partition"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

type simOptions struct {
	Devices     int
	Personality string
	Chip        string
	Project     string
	Version     string
	ImageSize   string
	SlotSize    string
	Password    string
	Core        string
	Extensions  bool
	Behave      []string
	// RollbackLater: the arduino sketch overrides verifyRollbackLater().
	RollbackLater bool
	Faults        []string
	Seed          int64

	ValidAfter time.Duration
	BootTime   time.Duration
	EraseRate  string
	WriteRate  string
	Fast       bool

	ErrorCloseDelay time.Duration

	BaseIP   string
	Listen   string
	OTAPort  int
	WebPort  int
	MDNSIf   string
	NoMDNS   bool
	Duration time.Duration
}

func init() { extraCommands = append(extraCommands, newSimCmd) }

func newSimCmd(a *app) *cobra.Command {
	o := &simOptions{}
	c := &cobra.Command{
		Use:   "sim",
		Short: "Run simulated ESP32 devices on loopback that behave like the real firmware",
		Long: `Start simulated ESP32 devices, each on its own loopback address (127.0.0.2, .3, ...)
on the real ports, advertised by mDNS on the loopback interface only. They answer
uploads as the real firmware does (seed: HTTP POST /update with Bearer auth; ots: HTTP
POST /update and the web app's /api/status and /ota/upload; arduino and esp8266: espota),
erase and write at flash speed, reboot, and roll back images that crash or fail their
self-check. Serves until interrupted.

Behaviours (--behave VERSION=B): healthy, crash-on-boot, unstable, no-network, unconfirmed.
Faults (--fault SPEC, every device): drop@40%, stall@50%:10s, error@30%, slow:20KB/s,
no-return, power-loss@60%, refuse:5s, latency:5ms, no-connect-back, lose-ok
(most take "/P%" to act on P % of uploads only).`,
		Example: `  ots-ota sim --devices 5 --personality ots --extensions
  ots-ota sim --devices 3 --personality seed --password secret --behave 1.0.2=crash-on-boot
  ots-ota sim --devices 250 --json --fast
  ots-ota sim image --version 1.0.1 --size 1.2M -o fw.bin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSim(cmd.Context(), a, cmd, o)
		},
	}
	f := c.Flags()
	f.IntVarP(&o.Devices, "devices", "n", 1, "number of devices")
	f.StringVar(&o.Personality, "personality", "seed", "firmware to imitate: seed, ots, arduino or esp8266")
	f.StringVar(&o.Chip, "chip", "esp32s3", "the devices' chip (esp8266 for the esp8266 personality)")
	f.StringVar(&o.Project, "project", "ots-fw-main", "project name of the running image")
	f.StringVar(&o.Version, "version", "1.0.0", "version of the running image")
	f.StringVar(&o.ImageSize, "image-size", "", "size of the running image (default: small)")
	f.StringVar(&o.SlotSize, "slot-size", "", "size of each app slot (default 2M; arduino: 1.25M, its default.csv)")
	f.StringVar(&o.Password, "password", "", "seed: Bearer token; arduino/esp8266: OTA password (test devices only; also $OTS_OTA_PASSWORD)")
	f.StringVar(&o.Core, "core", "", "arduino: arduino-esp32 core version; 3.3.0 and older use MD5 auth, newer PBKDF2")
	f.BoolVar(&o.Extensions, "extensions", false, "add ots-ota's optional extras: _ota._tcp TXT keys and GET /ota/status")
	f.StringArrayVar(&o.Behave, "behave", nil, "what an image version does when booted, VERSION=BEHAVIOUR (repeatable)")
	f.BoolVar(&o.RollbackLater, "rollback-later", false, "arduino: the sketch confirms itself (overrides verifyRollbackLater), so new images can roll back")
	f.StringArrayVar(&o.Faults, "fault", nil, "inject a fault on every device (repeatable; see above)")
	f.Int64Var(&o.Seed, "seed", 1, "random seed for reboot delays and fault points (reproducible runs)")
	f.DurationVar(&o.ValidAfter, "valid-after", 30*time.Second, "stability window before a new image marks itself valid")
	f.DurationVar(&o.BootTime, "boot-time", 3*time.Second, "reset to network-ready time")
	f.StringVar(&o.EraseRate, "erase-rate", "512KiB/s", "slot erase speed, e.g. 512KiB/s or 1MB/s (0 = instant)")
	f.StringVar(&o.WriteRate, "write-rate", "100KiB/s", "flash write speed, e.g. 100KiB/s (0 = unlimited)")
	f.DurationVar(&o.ErrorCloseDelay, "error-close-delay", 0, "keep a connection open this long after an error answer sent mid-upload (0 = lwIP's RST right behind it; 100ms lets clients that stop at a failed write read the answer)")
	f.BoolVar(&o.Fast, "fast", false, "test timing: instant erase and writes, 50 ms boots (explicit flags still win)")
	f.StringVar(&o.BaseIP, "base-ip", "127.0.0.2", "first device's loopback address")
	f.StringVar(&o.Listen, "listen", "", "first device's address outside loopback (explicit opt-in; devices become reachable from the network)")
	f.IntVar(&o.OTAPort, "ota-port", 0, "OTA port (default: the personality's, 3232 or 8266)")
	f.IntVar(&o.WebPort, "web-port", 0, "web app port (default 80 when it may be bound, else 8080; -1 = none)")
	f.StringVar(&o.MDNSIf, "mdns-interface", "", "interface to advertise on (default: loopback; never all interfaces)")
	f.BoolVar(&o.NoMDNS, "no-mdns", false, "do not advertise by mDNS")
	f.DurationVar(&o.Duration, "duration", 0, "stop after this long (default: until interrupted)")
	c.MarkFlagsMutuallyExclusive("base-ip", "listen")
	c.MarkFlagsMutuallyExclusive("mdns-interface", "no-mdns")
	_ = c.RegisterFlagCompletionFunc("personality", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var names []string
		for _, p := range sim.Personalities() {
			names = append(names, string(p))
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	c.AddCommand(newSimImageCmd(a))
	return c
}

// rate reads "512KiB/s" (or "512KiB") as bytes per second; "0" means no limit.
func rate(flag, s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "0" || s == "0/s" {
		return 0, nil
	}
	if !strings.HasSuffix(s, "/s") {
		s += "/s"
	}
	n, err := sim.ParseRate(s)
	if err != nil {
		return 0, usageErrorf("--%s: %v", flag, err)
	}
	return n, nil
}

// simFleetConfig turns the flags into a fleet description.
func simFleetConfig(cmd *cobra.Command, a *app, o *simOptions) (sim.FleetConfig, error) {
	var fc sim.FleetConfig
	if o.Devices < 1 {
		return fc, usageErrorf("--devices must be at least 1")
	}
	pers, err := sim.ParsePersonality(o.Personality)
	if err != nil {
		return fc, usageError{err}
	}
	chip := o.Chip
	if pers == sim.ESP8266 && !cmd.Flags().Changed("chip") {
		chip = "esp8266" // the only chip that personality runs on
	} else if _, err := parseChip(chip); err != nil {
		return fc, err
	}
	var slot int64
	if o.SlotSize != "" {
		if slot, err = partition.ParseSize(o.SlotSize); err != nil {
			return fc, usageErrorf("--slot-size: %v", err)
		}
	}
	var imgSize int64
	if o.ImageSize != "" {
		if imgSize, err = partition.ParseSize(o.ImageSize); err != nil {
			return fc, usageErrorf("--image-size: %v", err)
		}
	}
	behaviours, err := sim.ParseBehaviourSpecs(o.Behave)
	if err != nil {
		return fc, usageError{err}
	}
	if o.RollbackLater && pers != sim.Arduino {
		return fc, usageErrorf("--rollback-later is for --personality arduino")
	}
	if err := sim.CheckBehaviours(pers, o.RollbackLater, behaviours); err != nil {
		return fc, usageErrorf("%v (add --rollback-later for a sketch that does)", err)
	}
	faults, err := sim.ParseFaults(o.Faults)
	if err != nil {
		return fc, usageError{err}
	}

	timing := sim.DefaultTiming()
	if o.Fast {
		timing = sim.FastTiming()
	}
	changed := cmd.Flags().Changed
	if !o.Fast || changed("valid-after") {
		timing.ValidAfter = o.ValidAfter
	}
	if !o.Fast || changed("boot-time") {
		timing.BootTime = o.BootTime
	}
	if !o.Fast || changed("erase-rate") {
		if timing.EraseRate, err = rate("erase-rate", o.EraseRate); err != nil {
			return fc, err
		}
	}
	if o.ErrorCloseDelay < 0 {
		return fc, usageErrorf("--error-close-delay must not be negative")
	}
	timing.ErrorCloseDelay = o.ErrorCloseDelay
	if !o.Fast || changed("write-rate") {
		if timing.WriteRate, err = rate("write-rate", o.WriteRate); err != nil {
			return fc, err
		}
	}

	fc = sim.FleetConfig{
		N:       o.Devices,
		OTAPort: o.OTAPort,
		WebPort: o.WebPort,
		Seed:    o.Seed,
		Logger:  a.log,
		Template: sim.Config{
			Personality:   pers,
			Chip:          chip,
			Project:       o.Project,
			Version:       o.Version,
			ImageSize:     int(imgSize),
			SlotSize:      slot,
			Password:      auth.NewSecret(o.Password),
			Core:          o.Core,
			Extensions:    o.Extensions,
			Behaviours:    behaviours,
			RollbackLater: o.RollbackLater,
			Faults:        faults,
			Timing:        &timing,
		},
	}
	base := o.BaseIP
	if o.Listen != "" {
		base, fc.AllowNonLoopback = o.Listen, true
	}
	if fc.BaseIP, err = netip.ParseAddr(base); err != nil {
		return fc, usageErrorf("bad address %q: %v", base, err)
	}
	if !fc.AllowNonLoopback && !fc.BaseIP.IsLoopback() {
		return fc, usageErrorf("--base-ip %s is not a loopback address; use --listen to bind elsewhere on purpose", base)
	}
	return fc, nil
}

// simMDNSInterface picks where to advertise: loopback unless told otherwise.
func simMDNSInterface(o *simOptions) (*net.Interface, error) {
	if o.NoMDNS {
		return nil, nil
	}
	if o.MDNSIf != "" {
		ifi, err := net.InterfaceByName(o.MDNSIf)
		if err != nil {
			return nil, usageErrorf("--mdns-interface: %v", err)
		}
		return ifi, nil
	}
	return mdnsd.LoopbackInterface()
}

func runSim(ctx context.Context, a *app, cmd *cobra.Command, o *simOptions) error {
	fc, err := simFleetConfig(cmd, a, o)
	if err != nil {
		return err
	}
	ifi, err := simMDNSInterface(o)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return err
		}
		// Devices are still useful without mDNS (static addresses); say why it is off.
		a.log.Warn("mDNS off", "err", err)
		if !a.opts.JSON && !a.opts.Quiet {
			fmt.Fprintf(a.io.ErrOut, "ots-ota: warning: not advertising by mDNS: %v\n", err)
		}
	}
	fc.MDNSInterface = ifi

	// Events go to stdout; one writer at a time keeps lines whole.
	var mu sync.Mutex
	ready := false
	fc.OnEvent = func(e sim.Event) {
		mu.Lock()
		defer mu.Unlock()
		if a.opts.JSON {
			_ = writeJSON(a.io.Out, e)
			return
		}
		if ready && !a.opts.Quiet {
			fmt.Fprintln(a.io.ErrOut, eventLine(e))
		}
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	start := time.Now()
	fleet, err := sim.StartFleet(ctx, fc)
	if err != nil {
		return fmt.Errorf("start simulated devices: %w", err)
	}
	defer fleet.Close()

	mu.Lock()
	if !a.opts.JSON {
		renderFleet(a.io.Out, fleet, ifi, time.Since(start))
	}
	ready = true
	mu.Unlock()

	<-ctx.Done()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil
	}
	// Interrupted: the normal way to stop a simulator.
	return nil
}

func renderFleet(w io.Writer, f *sim.Fleet, ifi *net.Interface, took time.Duration) {
	devs := f.Devices()
	fmt.Fprintf(w, "started %d simulated device(s) in %v", len(devs), took.Round(time.Millisecond))
	if ifi != nil {
		fmt.Fprintf(w, ", advertised by mDNS on %s", ifi.Name)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tOTA\tWEB\tPERSONALITY\tRUNNING")
	for _, d := range devs {
		st := d.State()
		web := d.WebAddr()
		if web == "" {
			web = "-"
		}
		fmt.Fprintf(tw, "%s.local\t%s\t%s\t%s\t%s %s\n", d.Name(), d.OTAAddr(), web, d.Personality(), st.Project, st.Version)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "serving until interrupted (Ctrl-C); events follow on stderr")
}

// eventLine is the human form of an event.
func eventLine(e sim.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-12s %s", e.Time.Format("15:04:05.000"), e.Device, e.Event)
	add := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	add("version", e.Version)
	add("from", e.From)
	add("slot", e.Slot)
	add("state", string(e.State))
	if e.Status != 0 {
		add("status", fmt.Sprint(e.Status))
	}
	if e.Text != "" {
		add("text", fmt.Sprintf("%q", e.Text))
	}
	add("reason", e.Reason)
	add("fault", e.Fault)
	add("remote", e.Remote)
	return b.String()
}
