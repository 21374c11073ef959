package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/discover"
	"github.com/ots-ota/ots-ota/inventory"
	"github.com/ots-ota/ots-ota/upload"
)

type infoOptions struct {
	Targets []string
	sel     selectOptions
	mdns    mdnsOptions
	Timeout time.Duration
	Browse  time.Duration

	inv *inventory.Inventory
	cfg discover.Config
}

func (o *infoOptions) validate(a *app, args []string) error {
	o.Targets = args
	if len(args) == 0 && !o.sel.All && o.sel.Group == "" {
		return usageErrorf("name at least one device, or use --all or --group")
	}
	if err := o.sel.validate(); err != nil {
		return err
	}
	if o.Timeout <= 0 {
		return a.flagError("timeout", "must be positive")
	}
	if o.Browse <= 0 {
		return a.flagError("browse-timeout", "must be positive")
	}
	var err error
	if o.inv, err = loadInventory(a); err != nil {
		return err
	}
	if err := discover.CheckArgs(args, o.inv); err != nil {
		return usageError{err}
	}
	if o.sel.Group != "" {
		if _, err := o.inv.Group(o.sel.Group); err != nil {
			return usageError{err}
		}
	}
	if !o.sel.InventoryOnly {
		if o.cfg, err = o.mdns.config(a); err != nil {
			return err
		}
	}
	return nil
}

func newInfoCmd(a *app) *cobra.Command {
	o := &infoOptions{}
	c := &cobra.Command{
		Use:   "info TARGET... | --all | --group NAME",
		Short: "Tell what each device runs, and where each fact came from",
		Long: `Info asks each device what it runs, without changing anything on it: GET /ota/status
on the OTA port (the ots-ota extension), GET /api/status on the web port (the OTS
firmware's web app), and the device's mDNS TXT record, in that order. Each fact is shown
with its source; when nothing tells the version, info says so and why.

TARGET is an inventory name, an IP address, a host name (.local names are resolved by
mDNS first) or HOST:PORT. Devices are queried in parallel.

Exit status: 0 when every device answered, 1 when any could not be resolved or reached.`,
		Example: `  ots-ota info ots-fw-main.local
  ots-ota info 192.168.1.40 kitchen --json
  ots-ota info --all
  ots-ota info --all --cached
  ots-ota info --group downstairs --inventory-only`,
		Args: cobra.ArbitraryArgs, // validate wants targets unless --all or --group
	}
	c.RunE = run(a, o, runInfo)
	c.ValidArgsFunction = completeTargets(a)
	o.sel.bind(c)
	_ = c.RegisterFlagCompletionFunc("group", completeGroups(a))
	o.mdns.bind(c, false)
	f := c.Flags()
	f.DurationVar(&o.Timeout, "timeout", 3*time.Second, "per-device connection and request timeout")
	f.DurationVar(&o.Browse, "browse-timeout", 2*time.Second, "how long mDNS may listen (with --all, and for the TXT records of named devices)")
	return c
}

// infoResult is one device: the facts, or why there are none (its --json
// line is infoLineOf's).
type infoResult struct {
	devinfo.Facts
	Sources []string
	// Given: the arguments merged into this device (same address and port).
	Given []string
	// Error is why there are no facts, as the human output says it.
	Error string
	// errJSON is Error as --json tells it: code unresolved or failed, the
	// hint apart.
	errJSON *errorObject
	// timeout is --timeout, the connect timeout the words of a failed
	// connect name.
	timeout time.Duration
}

func runInfo(ctx context.Context, a *app, o *infoOptions) error {
	inv, cfg := o.inv, o.cfg
	mqttOnly := 0
	sel, err := discover.Select(ctx, discover.Selection{
		Args: o.Targets, All: o.sel.All, Group: o.sel.Group, InventoryOnly: o.sel.InventoryOnly, Cached: o.sel.Cached,
		Inventory: inv, Config: cfg, BrowseTimeout: o.Browse,
		MQTTOnly: func(d inventory.Device) {
			mqttOnly++
			leftOutMQTTOnly(a, d, "not queried")
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, discover.ErrNoTargets) || errors.Is(err, discover.ErrBadTarget) {
			return usageError{err}
		}
		return err
	}
	if len(sel) == 0 {
		msg, hint := "no devices found", "try a longer --browse-timeout, --interface, or the inventory"
		if mqttOnly > 0 {
			msg = fmt.Sprintf("no devices to ask: %d inventory device(s) have no address (reached over MQTT only)", mqttOnly)
			hint = "give them address: in the inventory to reach them directly"
		}
		fmt.Fprintln(a.io.ErrOut, msg+"; "+hint)
		return silentError{code: ExitFailed, json: ptr(newErrorObject("no_devices", msg, hint))}
	}
	infoSecrets(a, sel)
	results := make([]infoResult, len(sel))
	parallel(len(sel), 16, func(i int) {
		s, r := sel[i], &results[i]
		r.Sources, r.Given, r.timeout = s.Target.Sources, s.Target.Given, o.Timeout
		if s.Err != nil {
			r.Target, r.Error, r.errJSON = s.Target.Name, s.Err.Error(), unresolved(s.Err)
			return
		}
		f, err := devinfo.Query(ctx, familyInfo(s.Target), devinfo.Options{Timeout: o.Timeout})
		if err != nil {
			r.Target, r.Error, r.errJSON = s.Target.Name, err.Error(), ptr(newErrorObject("failed", err.Error(), ""))
			return
		}
		r.Facts = f
		if f.WLED != nil || f.Tasmota != nil {
			// The family push speaks to it, as push names it.
			r.Protocol = devinfo.Fact{Value: s.Target.Protocol, Source: devinfo.FromTarget}
			if f.WLED != nil && s.Target.Protocol != string(upload.WLED) {
				r.Protocol = devinfo.Fact{Value: string(upload.WLED), Source: devinfo.FromTXT} // its _wled._tcp record
			}
		}
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	if a.opts.JSON {
		return infoJSON(a, results)
	}
	failed := slices.ContainsFunc(results, func(r infoResult) bool { return r.Error != "" || !r.Reachable })
	if err := renderBlocks(a, results, renderInfo); err != nil {
		return err
	}
	if failed {
		return silentError{code: ExitFailed}
	}
	return nil
}

// unresolved is --json's error of a name that did not resolve: what to
// try goes in the hint, not in the message.
func unresolved(err error) *errorObject {
	if re := (*discover.ResolveError)(nil); errors.As(err, &re) {
		return ptr(newErrorObject("unresolved", re.Plain(), re.Hint()))
	}
	return ptr(newErrorObject("unresolved", err.Error(), ""))
}

// reach says how a device that has facts answered, as the human block
// and the --json error say it: "" when it did; else the error code and the
// words, "at ADDRESS" in them when at is (the human block names the
// address before them).
func (r infoResult) reach(at string) (code, words string) {
	switch {
	case r.Reachable:
		return "", ""
	case r.NothingListens:
		return "nothing_listens", "nothing listens" + at + " (TCP refused, UDP port unreachable)"
	case r.Unconfirmed:
		return "unconfirmed", "espota assumed" + at + " (TCP refused), not confirmed"
	}
	return "unreachable", "not reachable" + at
}

func renderInfo(w io.Writer, r infoResult, st style) {
	if r.Error != "" {
		fmt.Fprintf(w, "%s: %s\n", st.bold(r.Target), st.red(r.Error))
		return
	}
	reach := st.green("reachable")
	switch code, words := r.reach(""); code {
	case "unconfirmed":
		reach = st.yellow(words)
	case "nothing_listens", "unreachable":
		reach = st.red(words)
	}
	fmt.Fprintf(w, "%s (%s): %s\n", st.bold(r.Target), r.Address, reach)
	if len(r.Given) > 1 {
		// Several arguments named this one device: say so, once.
		fmt.Fprintf(w, "  %-10s %s (one device: same address and port)\n", "given as", strings.Join(r.Given, ", "))
	}
	row := func(k string, f devinfo.Fact, unknown string) {
		v, src := f.Value, string(f.Source)
		if v == "" {
			if unknown == "" {
				return
			}
			v, src = unknown, ""
		}
		if src != "" {
			src = "  (" + src + ")"
		}
		fmt.Fprintf(w, "  %-10s %s%s\n", k, v, src)
	}
	row("protocol", r.Protocol, "unknown")
	row("auth", r.Auth, "unknown")
	row("project", r.Project, "")
	if r.Version.Known() {
		row("version", r.Version, "")
	} else {
		fmt.Fprintf(w, "  %-10s %s\n", "version", st.yellow(r.VersionNote))
	}
	row("chip", r.Chip, "")
	row("board", r.Board, "")
	row("idf", r.IDF, "")
	row("running", r.Running, "")
	row("boot", r.Boot, "")
	row("app state", r.State, "")
	if r.Uptime.Known() {
		up := r.Uptime
		if n, err := strconv.ParseInt(up.Value, 10, 64); err == nil {
			up.Value = (time.Duration(n) * time.Second).String()
		}
		row("uptime", up, "")
	}
	if e := r.ESPHome; e != nil {
		// The record's own words, each from TXT; version is the ESPHome
		// release, never the firmware's (that is project_version).
		txt := func(k, v string) { row(k, devinfo.Fact{Value: v, Source: devinfo.FromTXT}, "") }
		txt("esphome", e.Release)
		txt("platform", e.Platform)
		txt("board", e.Board)
		txt("mac", e.MAC)
		txt("config", e.ConfigHash)
		txt("name", e.FriendlyName)
		txt("api noise", e.APIEncryption)
		if e.APIEncryption == "" && e.APIEncryptionSupported != "" {
			txt("api noise", "supported, no key yet")
		}
	}
	if w := r.WLED; w != nil {
		js := func(k, v string) { row(k, devinfo.Fact{Value: v, Source: devinfo.FromJSONInfo}, "") }
		js("release", w.Release) // what WLED's release check compares
		js("build", w.VID)
		js("name", w.Name)
		js("mac", w.MAC)
	}
	if ts := r.Tasmota; ts != nil {
		// OtaUrl is left out: it may hold credentials for the update server.
		st := func(k, v string) { row(k, devinfo.Fact{Value: v, Source: devinfo.FromTasmota}, "") }
		st("image", ts.Image())
		st("built", ts.BuildDateTime)
		st("hardware", ts.Hardware)
		st("hostname", ts.Hostname)
		st("mac", ts.Mac)
		if ts.BootCount != nil {
			st("boots", strconv.FormatInt(*ts.BootCount, 10))
		}
	}
	// What failed matters when a fact is missing; otherwise it is noise
	// (a seed with the extensions has no /api/status, and needs none).
	if !r.Reachable || !r.Version.Known() {
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  %-10s %s\n", "note", n)
		}
	}
}

// familyInfo is what to ask a device whose family tells its facts in its
// own place: WLED (the inventory's protocol: wled, or its _wled._tcp
// record) its /json/info, Tasmota (protocol: tasmota) its Status 0, on
// their web port, as push's verification reads them. A Tasmota device
// behind a web password gets the inventory's auth: of that device, the
// secret push would send it, in a Basic header.
func familyInfo(t discover.Target) devinfo.Target {
	it := t.Info()
	switch {
	case it.Protocol == string(upload.WLED) || strings.EqualFold(strings.TrimSuffix(it.Service, ".local"), "_wled._tcp"):
		it.Protocol, it.WLED = devinfo.ProtoHTTP, true
		if it.WebPort <= 0 {
			it.WebPort = it.Port // 0: queryWLED's 80
		}
	case it.Protocol == string(upload.Tasmota):
		it.Protocol, it.Tasmota = devinfo.ProtoHTTP, true
		if it.Port == 0 {
			it.Port = 80
		}
		if !t.Auth.IsZero() {
			if secret, err := inventorySecret(t.Auth); err == nil {
				it.Authorization = upload.TasmotaBasic(upload.Credentials{Password: secret})
			}
		}
	}
	return it
}

// infoSecrets makes the secrets push would send to these devices known to
// the renderer, so a device that echoes one (a version holding its token)
// does not get it printed: $OTS_OTA_TOKEN, $OTS_OTA_PASSWORD and the
// inventory's auth: of each device. One that cannot be read is skipped:
// info sends none of them.
func infoSecrets(a *app, sel []discover.Selected) {
	a.secrets.Add(auth.NewSecret(os.Getenv("OTS_OTA_TOKEN")))
	a.secrets.Add(auth.NewSecret(os.Getenv("OTS_OTA_PASSWORD")))
	for _, s := range sel {
		if !s.Target.Auth.IsZero() {
			if secret, err := inventorySecret(s.Target.Auth); err == nil {
				a.secrets.Add(secret)
			}
		}
	}
}
