package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/ifaceguard"
	"github.com/ots-ota/ots-ota/partition"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/sim/esphome"
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
	Username    string
	Core        string
	Extensions  bool
	Omit        []string
	APIUptime   bool
	BuildSeed   int64
	FactoryVer  string
	Behave      []string
	Faults      []string
	// RollbackLater: the arduino sketch overrides verifyRollbackLater().
	RollbackLater bool
	// Async, NoOriginCheck, NoLoop: the web uploaders' builds (sim.Config).
	Async         bool
	NoOriginCheck bool
	NoLoop        bool
	// ESPHome: esphome, esphome-esp8266 settings, KEY=VALUE (esphome.ParseOption).
	ESPHome []string
	// The wled and tasmota knobs (sim.Config fields of the same names).
	Release         string
	SettingsPIN     bool
	OTALock         bool
	OTAAnySubnet    bool
	Subnet          string
	NoBootloaderOTA bool
	Language        string
	Safeboot        bool
	Seed            int64

	ValidAfter time.Duration
	BootTime   time.Duration
	EraseRate  string
	WriteRate  string
	Fast       bool

	ErrorCloseDelay time.Duration

	BaseIP     string
	NamePrefix string
	Listen     string
	OTAPort    int
	WebPort    int
	MDNSIf     string
	NoMDNS     bool
	Duration   time.Duration

	fleet sim.FleetConfig // resolved by validate
	mdns  *net.Interface  // nil: no mDNS
	pull  pullOptions     // --personality tasmota-mqtt, esphome-pull
}

func newSimCmd(a *app) *cobra.Command {
	o := &simOptions{}
	c := &cobra.Command{
		Use:   "sim",
		Short: "Run simulated ESP32 and ESP8266 devices on loopback that behave like the real firmware",
		Long: `Start simulated ESP32 and ESP8266 devices, each on its own loopback address (127.0.0.2, .3, ...)
on the real ports, advertised by mDNS on the loopback interface only. They answer
uploads as the real firmware does (seed: HTTP POST /update with Bearer auth; ots: HTTP
POST /update and the web app's /api/status and /ota/upload; arduino and esp8266: espota;
httpupdateserver and espeasy: the Arduino web form, multipart POST /update on port 80;
elegantota: ElegantOTA v3's /ota/start and /ota/upload, --async for its async build;
wled: WLED 0.15.x or 16.x (--version) with its gates and release check; tasmota: Tasmota's
/up and /u2, /cm and the upgrade by URL (the device fetches the image itself, from loopback);
these five run on ESP32 or, with --chip esp8266, on ESP8266; esphome and esphome-esp8266:
ESPHome's native OTA on TCP 3232 or 8266, _esphomelib._tcp in mDNS, build settings with
--esphome KEY=VALUE), erase and write at flash speed,
reboot, and roll back images that crash or fail their self-check. Serves until interrupted
(Ctrl-C: exit 0) or --duration ends.

Behaviours (--behave KEY=B, KEY a version, elf:HEX or @uploaded): healthy, crash-on-boot,
unstable, no-network, unconfirmed, foreign-elf, crash-to-factory, crash-loop.
Faults (--fault SPEC, every device): drop@40%, stall@50%:10s, error@30%, slow:20KB/s,
trickle:8B/s, no-return, power-loss@60%, refuse:5s, latency:5ms, no-reboot; HTTP:
early-answer@30%[:discard|:close], lose-answer[:reset], status-error[:N]; tasmota:
status-during-upgrade; espota:
no-connect-back, lose-ok, early-ok@30%[:close], chatter@50%[:250ms].
All but slow, trickle, latency, refuse, no-return, status-error and status-during-upgrade
take "/P%" to act on P % of uploads only (error@30%/50%); those seven take no "/P%". In the environment,
separate several with ";" (OTS_OTA_FAULT='latency:5ms;error@30%'); in the config file,
use a list.
--omit FIELD leaves a fact out: ota-status, ota-status.uptime_s (any key), api-status,
api-status.firmwareVersion, txt.version ...

tasmota-mqtt: Tasmota devices that pull their updates, N of them (--count) in this process
with no addresses of their own, each connected to --broker as the firmware connects (will
tele/<topic>/LWT Offline, LWT Online, INFO1-3 after a boot; topics tasmota_XXXXXX from a
fake MAC, --topic-prefix, --full-topic). They answer Status over MQTT, take OtaUrl, Upgrade
and Backlog on cmnd/<topic>/ (and the group topic cmnd/tasmotas/), fetch the image over HTTP
themselves at --write-rate (loopback only), check x-MD5, publish UPGRADE, restart (a clean
DISCONNECT: no will) and come back after --boot-time telling their new Version. Its faults
(--fault KIND[:N], on N devices or all): download-cut, md5-mismatch, crash-on-boot (ESP32:
back on the old version), never-comes-back, two-step (ESP8266 with little room: the
-minimal image first), broker-drop (the link breaks mid-download, UPGRADE is lost), silent
(no Status answers), no-info (INFO1 without Version).

esphome-pull: ESPHome nodes built with update: platform: http_request and MQTT, N of them
(--count) in this process, named --node-name (esphome-001 …, also their topic prefix),
each connected to --broker (will <node>/status offline, then online, both retained). Each
polls --manifest-url every --update-interval (the first poll soon after a boot), takes the
build whose chipFamily is --chip-family (default from --chip: ESP32-S3), and publishes
<node>/update/<--entity>/state {"installed_version","latest_version","title"} retained
(versions "" until the boot's first poll). INSTALL on <node>/update/<entity>/command acts
only when the manifest's version differs from --version: the node downloads ota.path at
--write-rate, checks ota.md5, reboots (offline, online after --boot-time) and tells the
manifest's version. --cohorts canary:1,manifest:rest splits the fleet over the manifests
that {cohort} in --manifest-url names. Its faults (--fault KIND[:N|:P%]): download-cut,
md5-mismatch, crash-on-boot (back on the old version), never-comes-back, broker-drop (the
link breaks mid-download), silent (no state), manifest-unreachable (a wrong source URL),
wrong-version (the image tells another version), auto-install (installs when available).`,
		Example: `  ots-ota sim --devices 5 --personality ots --extensions
  ots-ota sim --devices 3 --personality seed --password secret --behave 1.0.2=crash-on-boot
  ots-ota sim --devices 3 --personality espeasy --chip esp8266
  ots-ota sim --personality elegantota --async --username admin --password secret
  ots-ota sim --devices 250 --json --fast
  ots-ota sim --personality tasmota-mqtt --broker mqtt://127.0.0.1:1883 --count 200 --fault download-cut:5
  ots-ota sim --personality esphome-pull --broker mqtt://127.0.0.1:1883 --count 500 \
      --manifest-url http://127.0.0.1:8070/{cohort}.json --cohorts canary:1,manifest:rest
  ots-ota sim image --version 1.0.1 --size 1.2M -o fw.bin`,
		Args: argsNone,
	}
	c.RunE = run(a, o, runSim)
	f := c.Flags()
	addPullFlags(f, &o.pull)
	f.IntVarP(&o.Devices, "devices", "n", 1, "number of devices")
	f.StringVar(&o.Personality, "personality", "seed", "firmware to imitate: "+personalityList("or"))
	f.StringVar(&o.Chip, "chip", "esp32s3", "the devices' chip (esp8266 for the esp8266 personality; httpupdateserver, espeasy, elegantota, wled and tasmota run on either)")
	f.StringVar(&o.Project, "project", "ots-fw-main", "project name of the running image (tasmota: its image name, default tasmota; wled: WLED)")
	f.StringVar(&o.Version, "version", "1.0.0", "version of the running image (wled: 16.0.1, or 0.15.2 and later of 0.15.x; tasmota: 15.4.0)")
	f.StringVar(&o.ImageSize, "image-size", "", "size of the running image (default: small)")
	f.StringVar(&o.SlotSize, "slot-size", "2M", "size of each app slot (4K to 16M; arduino: 1.25M, its default.csv, unless set)")
	f.StringVar(&o.Password, "password", "", "seed: Bearer token; arduino/esp8266: OTA password; httpupdateserver/elegantota: HTTP password (with --username); espeasy: admin password; tasmota: WebPassword, user admin; esphome: its OTA password (test devices only; also $OTS_OTA_PASSWORD)")
	f.StringVar(&o.Username, "username", "", "httpupdateserver, elegantota: HTTP user; the libraries ask for credentials only when user and password are both set")
	f.BoolVar(&o.Async, "async", false, "elegantota: its async build (ESPAsyncWebServer: Digest challenges, concurrent requests)")
	f.BoolVar(&o.NoOriginCheck, "no-origin-check", false, "httpupdateserver on ESP32: a build from before arduino-esp32's CSRF fix, which takes any Origin (which releases have the check is unconfirmed)")
	f.BoolVar(&o.NoLoop, "no-loop", false, "elegantota: a sketch that never calls ElegantOTA.loop(), so it never restarts after an upload")
	f.StringArrayVar(&o.ESPHome, "esphome", nil, "esphome, esphome-esp8266: a build setting KEY=VALUE (repeatable): version=1|2, extended=false, auth=md5|sha256|sha256-md5, compression=on|off, mode=2024, noise=offered|required, partition-access, fail=8B, fail-count=N, handshake-timeout=20s, data-timeout=90s, release=2026.7.0, project=author.name, friendly-name=NAME, api-encryption, config-hash=HEX8, mac=HEX12, identity=IMAGE_VERSION:PROJECT_VERSION:CONFIG_HASH")
	f.StringVar(&o.Release, "release", "", "wled: the release name of the running build (default per chip: ESP32, ESP8266 …)")
	f.BoolVar(&o.SettingsPIN, "settings-pin", false, "wled: a settings PIN nobody entered: every upload is refused")
	f.BoolVar(&o.OTALock, "ota-lock", false, "wled: the OTA lock is on: /update refuses")
	f.BoolVar(&o.OTAAnySubnet, "ota-any-subnet", false, "wled 16.x: \"only allow update from same network\" off (clients from the private ranges pass)")
	f.StringVar(&o.Subnet, "subnet", "", "wled 16.x: the devices' network for its subnet gate, e.g. 127.0.0.0/16 (default: each device's /24)")
	f.BoolVar(&o.NoBootloaderOTA, "no-bootloader-ota", false, "wled 16.x on ESP32: a build without /updatebootloader")
	f.StringVar(&o.Language, "language", "", "tasmota: the build language of its pages, en or de")
	f.BoolVar(&o.Safeboot, "safeboot", false, "tasmota on ESP32: the safeboot partition layout (upgrades restart into safeboot first)")
	f.StringVar(&o.Core, "core", "", "arduino: arduino-esp32 core version; 3.3.0 and older use MD5 auth, newer PBKDF2")
	f.BoolVar(&o.Extensions, "extensions", false, "add ots-ota's optional extras: _ota._tcp TXT keys and GET /ota/status")
	f.StringArrayVar(&o.Behave, "behave", nil, "what an image does when booted, KEY=BEHAVIOUR; KEY is a version, elf:HEX or @uploaded (repeatable)")
	f.StringArrayVar(&o.Omit, "omit", nil, "a fact the devices do not tell, e.g. ota-status.uptime_s, ota-status, api-status.firmwareVersion, txt.version (repeatable)")
	f.BoolVar(&o.APIUptime, "api-uptime", false, "ots: /api/status also tells uptime (the firmware as shipped does not)")
	f.Int64Var(&o.BuildSeed, "build-seed", 0, "another build of the running image: same version, other bytes and ELF SHA-256 (0: the build sim image makes)")
	f.StringVar(&o.FactoryVer, "factory-version", "", "seed, ots: a factory app of this version, the running image in ota_0 (a device updated before)")
	f.BoolVar(&o.RollbackLater, "rollback-later", false, "arduino (and httpupdateserver, elegantota on ESP32): the sketch confirms itself (overrides verifyRollbackLater), so new images can roll back")
	f.StringArrayVar(&o.Faults, "fault", nil, "inject a fault on every device (repeatable; see above)")
	f.Int64Var(&o.Seed, "seed", 1, "random seed for reboot delays and fault points (reproducible runs)")
	f.DurationVar(&o.ValidAfter, "valid-after", 30*time.Second, "stability window before a new image marks itself valid")
	f.DurationVar(&o.BootTime, "boot-time", 3*time.Second, "reset to network-ready time")
	f.StringVar(&o.EraseRate, "erase-rate", "512KiB/s", "slot erase speed, e.g. 512KiB/s or 1MB/s (0 = instant)")
	f.StringVar(&o.WriteRate, "write-rate", "100KiB/s", "flash write speed, e.g. 100KiB/s (0 = unlimited)")
	f.DurationVar(&o.ErrorCloseDelay, "error-close-delay", 0, "keep a connection open this long after an error answer sent mid-upload (0 = lwIP's RST right behind it; 100ms lets clients that stop at a failed write read the answer)")
	f.BoolVar(&o.Fast, "fast", false, "test timing: instant erase and writes, 50 ms boots (values set by flag, environment or config still win)")
	f.StringVar(&o.BaseIP, "base-ip", "127.0.0.2", "first device's loopback address; the fleet stays in its /24 (at most 253 devices per sim, .2 to .254)")
	f.StringVar(&o.NamePrefix, "name-prefix", "", "host names PREFIX-01, PREFIX-02 … (default: each device named after its address, ots-sim-127-0-0-2 …, which no other sim process claims)")
	f.StringVar(&o.Listen, "listen", "", "first device's address outside loopback (typed on the command line only; devices become reachable from the network)")
	f.IntVar(&o.OTAPort, "ota-port", 0, "OTA port (default: the personality's, 3232 or 8266; the web uploaders' 80, or 8080 when 80 may not be bound)")
	f.IntVar(&o.WebPort, "web-port", 0, "seed, ots: web app port (default 80 when it may be bound, else 8080; -1 = none)")
	f.StringVar(&o.MDNSIf, "mdns-interface", "", "interface to advertise on (default: loopback; never all interfaces)")
	f.BoolVar(&o.NoMDNS, "no-mdns", false, "do not advertise by mDNS")
	f.DurationVar(&o.Duration, "duration", 0, "stop after this long (default: until interrupted)")
	_ = c.RegisterFlagCompletionFunc("personality", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var names []string
		for _, p := range append(sim.Personalities(), sim.PullPersonalities()...) {
			names = append(names, string(p))
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	return c // its subcommand, sim image, is wired in newRootCmd
}

// personalityList names every personality, joined with conj before the last.
func personalityList(conj string) string {
	var names []string
	for _, p := range append(sim.Personalities(), sim.PullPersonalities()...) {
		names = append(names, string(p))
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " " + conj + " " + names[len(names)-1]
}

// rate reads "512KiB/s" (or "512KiB") as bytes per second; "0" means no limit.
func rate(a *app, flag, s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "0" || s == "0/s" {
		return 0, nil
	}
	if !strings.HasSuffix(s, "/s") {
		s += "/s"
	}
	n, err := sim.ParseRate(s)
	if err != nil {
		return 0, a.flagError(flag, "not a rate (use 512KiB/s, 1MB/s or 0)")
	}
	return n, nil
}

// simFlagUse says which personalities use a flag; others ignore it.
func simFlagUse() []simFlag {
	return []simFlag{
		{"password", []sim.Personality{sim.Seed, sim.Arduino, sim.ESP8266, sim.HTTPUpdateServer, sim.ESPEasy, sim.ElegantOTA, sim.Tasmota, sim.WLED, sim.ESPHome, sim.ESPHome8266}, "the ots firmware has no OTA password"},
		{"password", []sim.Personality{sim.Seed, sim.Arduino, sim.ESP8266, sim.HTTPUpdateServer, sim.ESPEasy, sim.ElegantOTA, sim.Tasmota, sim.ESPHome, sim.ESPHome8266}, "WLED's web update asks for none (its gates are a PIN and the OTA lock)"},
		{"esphome", []sim.Personality{sim.ESPHome, sim.ESPHome8266}, "only ESPHome nodes have these build settings"},
		{"username", []sim.Personality{sim.HTTPUpdateServer, sim.ElegantOTA}, "only HTTPUpdateServer and ElegantOTA sketches ask for a user"},
		{"async", []sim.Personality{sim.ElegantOTA}, "only ElegantOTA has an async build"},
		{"no-origin-check", []sim.Personality{sim.HTTPUpdateServer}, "only arduino-esp32's HTTPUpdateServer checks Origin"},
		{"no-loop", []sim.Personality{sim.ElegantOTA}, "only ElegantOTA restarts from the sketch's loop()"},
		{"core", []sim.Personality{sim.Arduino}, "only the arduino personality has an arduino-esp32 core"},
		{"web-port", []sim.Personality{sim.Seed, sim.OTS}, "only seed and ots devices run a web server"},
		{"rollback-later", []sim.Personality{sim.Arduino, sim.HTTPUpdateServer, sim.ElegantOTA}, "only an arduino-esp32 sketch can defer confirming its image"},
		{"api-uptime", []sim.Personality{sim.OTS}, "only the ots web app serves /api/status"},
		{"factory-version", []sim.Personality{sim.Seed, sim.OTS}, "only the seed and ots partition tables have a factory app"},
		{"release", []sim.Personality{sim.WLED}, "only WLED builds carry a release name"},
		{"settings-pin", []sim.Personality{sim.WLED}, "only WLED has a settings PIN"},
		{"ota-lock", []sim.Personality{sim.WLED}, "only WLED has an OTA lock"},
		{"ota-any-subnet", []sim.Personality{sim.WLED}, "only WLED 16.x gates uploads by subnet"},
		{"subnet", []sim.Personality{sim.WLED}, "only WLED 16.x gates uploads by subnet"},
		{"no-bootloader-ota", []sim.Personality{sim.WLED}, "only WLED 16.x updates its bootloader"},
		{"language", []sim.Personality{sim.Tasmota}, "only Tasmota's pages are translated"},
		{"safeboot", []sim.Personality{sim.Tasmota}, "only Tasmota has a safeboot layout"},
	}
}

// simFlag is a flag only some personalities use.
type simFlag struct {
	flag  string
	only  []sim.Personality
	means string
}

// inapplicable refuses a typed flag the personality ignores; the same value
// from the environment or the config file (OTS_OTA_PASSWORD set for push) is
// dropped, and -v says so.
func (o *simOptions) inapplicable(a *app, pers sim.Personality) error {
	for _, u := range simFlagUse() {
		if !a.isSet(u.flag) || slices.Contains(u.only, pers) {
			continue
		}
		if a.typed(u.flag) {
			return usageErrorf("--%s does not apply to --personality %s: %s", u.flag, pers, u.means)
		}
		a.log.Info("ignoring a value the personality does not use", "from", a.source(u.flag), "personality", string(pers))
		f := a.cmd.Flags().Lookup(u.flag)
		_ = f.Value.Set(f.DefValue)
	}
	return nil
}

func (o *simOptions) validate(a *app, _ []string) error {
	if o.Devices < 1 {
		return a.flagError("devices", "need at least 1 device")
	}
	if isPull(o.Personality) {
		return o.validatePull(a)
	}
	for _, name := range pullFlags {
		if a.typed(name) {
			return usageErrorf("--%s applies to --personality %s only", name, pullFlagOwners(name))
		}
	}
	if o.NamePrefix != "" && !hostPrefix.MatchString(o.NamePrefix) {
		return a.flagError("name-prefix", "give 1 to 40 letters, digits and hyphens, starting with a letter or digit and not ending with a hyphen (a host name label)")
	}
	pers, err := sim.ParsePersonality(o.Personality)
	if err != nil {
		return a.flagError("personality", "unknown personality (have: %s)", personalityList("and"))
	}
	if err := o.inapplicable(a, pers); err != nil {
		return err
	}
	chip := o.Chip
	switch {
	case pers.BothCores() && strings.EqualFold(chip, "esp8266"):
		chip = "esp8266"
		for _, fl := range []struct{ flag, why string }{
			{"rollback-later", "an ESP8266 has no rollback"},
			{"no-origin-check", "the ESP8266 HTTPUpdateServer checks no Origin"},
		} {
			if a.typed(fl.flag) {
				return usageErrorf("--%s does not apply to --personality %s on an ESP8266 (--chip esp8266): %s", fl.flag, pers, fl.why)
			}
		}
		o.RollbackLater, o.NoOriginCheck = false, false
	case (pers == sim.ESP8266 || pers == sim.ESPHome8266) && !strings.EqualFold(chip, "esp8266") && a.typed("chip"):
		return usageErrorf("--personality %s runs on an ESP8266: --chip %s does not apply (leave --chip out)", pers, chip)
	case pers == sim.ESP8266 || pers == sim.ESPHome8266:
		if a.isSet("chip") && !strings.EqualFold(chip, "esp8266") {
			a.log.Info("ignoring a chip the "+string(pers)+" personality cannot run on", "from", a.source("chip"))
		}
		chip = "esp8266"
	case strings.EqualFold(chip, "esp8266"):
		return a.flagError("chip", "an ESP8266 runs the esp8266, httpupdateserver, espeasy, elegantota, wled, tasmota or esphome-esp8266 personality (use --personality esp8266 for ArduinoOTA)")
	default:
		if _, err := parseChip(a, chip); err != nil {
			return err
		}
	}
	for _, t := range []struct{ flag, v string }{{"project", o.Project}, {"version", o.Version}} {
		if err := descText(a, t.flag, t.v); err != nil {
			return err
		}
	}
	if pers == sim.Arduino && o.Core != "" && !coreVersion.MatchString(o.Core) {
		return a.flagError("core", "not a core version (such as 3.3.0 or 2.0.17)")
	}
	slot, err := partition.ParseSize(o.SlotSize)
	if err != nil {
		return a.flagError("slot-size", "not a size (use 2M, 1536K or 0x200000)")
	}
	if sim.PlatformOf(pers, chip) == sim.PlatformArduinoESP32 && !a.isSet("slot-size") {
		slot = sim.ArduinoAppSlotSize // arduino-esp32's default.csv
	}
	if slot < 4<<10 || slot > 16<<20 {
		return a.flagError("slot-size", "an app slot holds 4K to 16M")
	}
	var imgSize int64
	if o.ImageSize == "" {
		// The running image is the default one: it must fit the slot too.
		if n := defaultImageSize(pers, chip); n > slot {
			return a.flagError("slot-size", "smaller than the running image (%s): give a larger slot, or --image-size", humanBytes(n))
		}
	}
	if o.ImageSize != "" {
		if imgSize, err = approxSize(o.ImageSize); err != nil {
			return a.flagError("image-size", "not a size (use 1.2M or 300K)")
		}
		if imgSize == 0 {
			return a.flagError("image-size", "an image cannot be empty (leave --image-size out for a small one)")
		}
		if imgSize > slot {
			return a.flagError("image-size", "larger than the %s slot (--slot-size)", humanBytes(slot))
		}
		if c, ok := image.ChipByName(chip); ok && !strings.EqualFold(chip, "esp8266") {
			if _, err := image.Build(image.BuildOptions{Chip: c, Size: int(imgSize)}); err != nil {
				return a.flagError("image-size", "%s", buildSizeReason(err))
			}
		}
	}
	// One spec at a time, so the message names the one that is wrong.
	for _, spec := range o.Behave {
		if _, _, err := sim.ParseBehaviourSpec(spec); err != nil {
			return a.itemError("behave", spec, "%s", rootCause(err))
		}
	}
	keep := o.Faults[:0:0]
	for _, spec := range o.Faults {
		f, err := sim.ParseFault(spec)
		if err != nil {
			return a.itemError("fault", spec, "%s", rootCause(err))
		}
		// A fault of the other protocol would do nothing: refused when
		// typed, dropped (and -v says so) from the environment or the file.
		esphomeNode := pers == sim.ESPHome || pers == sim.ESPHome8266
		if proto := f.Kind.Protocol(); proto != "" && (esphomeNode || (proto == "espota") == pers.HTTP()) {
			if a.typed("fault") {
				if esphomeNode {
					return a.itemError("fault", spec, "acts on %s uploads only, not on ESPHome's native OTA: use --esphome fail=BYTE for its error bytes, or another fault", proto)
				}
				if proto == "espota" {
					return a.itemError("fault", spec, "acts on espota sessions only: use --personality arduino or esp8266, or another fault")
				}
				return a.itemError("fault", spec, "acts on HTTP uploads only: use --personality seed, ots, httpupdateserver, espeasy, elegantota, wled or tasmota, or another fault")
			}
			which := "an espota"
			if proto == "http" {
				which = "an HTTP"
			}
			a.log.Info("ignoring "+which+" fault the personality does not use", "fault", spec, "from", a.source("fault"), "personality", string(pers))
			continue
		}
		keep = append(keep, spec)
	}
	o.Faults = keep
	behaviours, err := sim.ParseBehaviourSpecs(o.Behave)
	if err != nil {
		return a.flagError("behave", "%s", rootCause(err))
	}
	if err := sim.CheckBehavioursOn(pers, chip, o.RollbackLater, behaviours); err != nil {
		if sim.PlatformOf(pers, chip) == sim.PlatformArduinoESP32 && !o.RollbackLater && strings.Contains(err.Error(), "rollback later") {
			return a.flagError("behave", "%s (add --rollback-later for a sketch that does)", rootCause(err))
		}
		return a.flagError("behave", "%s", rootCause(err))
	}
	for _, f := range o.Omit {
		if err := sim.CheckOmit(pers, o.Extensions, o.APIUptime, []string{f}); err != nil {
			return a.itemError("omit", f, "%s", strings.TrimPrefix(rootCause(err).Error(), fmt.Sprintf("omit %q: ", f)))
		}
	}
	if o.FactoryVer != "" {
		if err := descText(a, "factory-version", o.FactoryVer); err != nil {
			return err
		}
	}
	var esphomeOpts any
	if len(o.ESPHome) > 0 {
		var eo esphome.Options
		for _, spec := range o.ESPHome {
			if err := esphome.ParseOption(&eo, spec); err != nil {
				return a.itemError("esphome", spec, "%s", err)
			}
		}
		esphomeOpts = eo
		// What no ESPHome build has (an ESP8266 error byte on an ESP32, say)
		// is refused now, not when the devices start.
		if _, err := sim.Resolve(sim.Config{Personality: pers, Chip: chip, Options: eo, Password: auth.NewSecret(o.Password)}); err != nil {
			return a.flagError("esphome", "%s", strings.TrimPrefix(rootCause(err).Error(), "esphome: "))
		}
	}
	faults, err := sim.ParseFaults(o.Faults)
	if err != nil {
		return a.flagError("fault", "%s", rootCause(err))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"valid-after", o.ValidAfter}, {"boot-time", o.BootTime}, {"duration", o.Duration}, {"error-close-delay", o.ErrorCloseDelay}} {
		if d.v < 0 {
			return a.flagError(d.name, "a duration cannot be negative")
		}
	}
	if o.OTAPort < 0 || o.OTAPort > 65535 {
		return a.flagError("ota-port", "a port is 1 to 65535 (0: the personality's)")
	}
	if o.WebPort < -1 || o.WebPort > 65535 {
		return a.flagError("web-port", "a port is 1 to 65535 (0: 80 or 8080, -1: none)")
	}
	if err := o.checkPorts(a, pers); err != nil {
		return err
	}

	// --fast changes the defaults; a value from any source still wins.
	timing := sim.DefaultTiming()
	if o.Fast {
		timing = sim.FastTiming()
	}
	if !o.Fast || a.isSet("valid-after") {
		timing.ValidAfter = o.ValidAfter
	}
	if !o.Fast || a.isSet("boot-time") {
		timing.BootTime = o.BootTime
	}
	if !o.Fast || a.isSet("erase-rate") {
		if timing.EraseRate, err = rate(a, "erase-rate", o.EraseRate); err != nil {
			return err
		}
	}
	timing.ErrorCloseDelay = o.ErrorCloseDelay
	if !o.Fast || a.isSet("write-rate") {
		if timing.WriteRate, err = rate(a, "write-rate", o.WriteRate); err != nil {
			return err
		}
	}

	// The open-file limit first: it bounds the count cheaply, before any
	// address is listed.
	perDevice := 1
	if pers == sim.Seed || pers == sim.OTS {
		if o.WebPort != -1 {
			perDevice = 2
		}
	}
	if err := checkOpenFiles(a, o.Devices, perDevice); err != nil {
		return err
	}
	addrs, outside, err := o.addresses(a)
	if err != nil {
		return err
	}
	if o.mdns, err = o.mdnsInterface(a); err != nil {
		return err
	}
	// espota listens on UDP: on 5353 it meets the fleet's own mDNS socket
	// (the port's wildcard), and the fleet would fail with "address in use".
	if o.mdns != nil && (pers == sim.Arduino || pers == sim.ESP8266) && o.OTAPort == mdnsPort {
		return a.flagError("ota-port", "the simulator's mDNS responder takes UDP port %d, and espota listens on UDP: give another --ota-port, or --no-mdns", mdnsPort)
	}
	if outside {
		a.log.Warn(fmt.Sprintf("the devices listen on %s, outside loopback: anyone on that network can reach them", addrRange(addrs)))
	}

	var subnet netip.Prefix
	if o.Subnet != "" {
		if subnet, err = netip.ParsePrefix(o.Subnet); err != nil {
			return a.flagError("subnet", "not a network (such as 127.0.0.0/16)")
		}
		subnet = subnet.Masked()
	}
	// The devices' secret is a secret in what the run prints too.
	password := auth.NewSecret(o.Password)
	a.secrets.Add(password)
	o.fleet = sim.FleetConfig{
		N:                o.Devices,
		Addrs:            addrs,
		NamePrefix:       o.NamePrefix,
		NameByAddress:    o.NamePrefix == "",
		InstanceWithHost: true,
		AllowNonLoopback: outside,
		OTAPort:          o.OTAPort,
		WebPort:          o.WebPort,
		Seed:             o.Seed,
		Logger:           a.log,
		MDNSInterface:    o.mdns,
		Template: sim.Config{
			Personality:     pers,
			Chip:            chip,
			Project:         o.project(a, pers),
			Version:         o.version(a, pers),
			ImageSize:       int(imgSize),
			SlotSize:        slot,
			Password:        password,
			Username:        o.Username,
			Async:           o.Async,
			NoOriginCheck:   o.NoOriginCheck,
			NoLoop:          o.NoLoop,
			Release:         o.Release,
			SettingsPIN:     o.SettingsPIN,
			OTALock:         o.OTALock,
			OTAAnySubnet:    o.OTAAnySubnet,
			Subnet:          subnet,
			NoBootloaderOTA: o.NoBootloaderOTA,
			Language:        o.Language,
			Safeboot:        o.Safeboot,
			Core:            o.Core,
			Extensions:      o.Extensions,
			Omit:            o.Omit,
			APIUptime:       o.APIUptime,
			BuildSeed:       o.BuildSeed,
			FactoryVersion:  o.FactoryVer,
			Behaviours:      behaviours,
			Faults:          faults,
			RollbackLater:   o.RollbackLater,
			Options:         esphomeOpts,
			Timing:          &timing,
		},
	}
	return nil
}

// project and version are --project and --version, or, when neither was
// given, what the personality's own firmware is (WLED 16.0.1, Tasmota
// 15.4.0): "" lets it choose.
func (o *simOptions) project(a *app, pers sim.Personality) string {
	if a.isSet("project") || (pers != sim.WLED && pers != sim.Tasmota) {
		return o.Project
	}
	return ""
}

func (o *simOptions) version(a *app, pers sim.Personality) string {
	if a.isSet("version") || (pers != sim.WLED && pers != sim.Tasmota) {
		return o.Version
	}
	return ""
}

// defaultImageSize is the size of the image a device runs when --image-size
// is not given (0 when unknown).
func defaultImageSize(pers sim.Personality, chip string) int64 {
	if strings.EqualFold(chip, "esp8266") {
		return 0 // a 4 KiB stand-in, smaller than any slot allowed
	}
	c, ok := image.ChipByName(chip)
	if !ok {
		return 0
	}
	data, err := image.Build(image.BuildOptions{Chip: c})
	if err != nil {
		return 0
	}
	return int64(len(data))
}

// checkPorts refuses an OTA port the device's own web app would take: the
// second listener would fail at start with "address in use".
func (o *simOptions) checkPorts(a *app, pers sim.Personality) error {
	if o.WebPort == -1 || (pers != sim.Seed && pers != sim.OTS) {
		return nil
	}
	ota := o.OTAPort
	if ota == 0 {
		ota = pers.DefaultOTAPort()
	}
	switch {
	case o.WebPort == ota && o.OTAPort == 0:
		return a.flagError("web-port", "the personality's OTA port: each device needs two ports (give another, or -1 for no web app)")
	case o.WebPort == ota:
		return a.flagError("ota-port", "the same port as --web-port: each device needs two ports (give another, or --web-port -1 for no web app)")
	case o.WebPort == 0 && (ota == 80 || ota == 8080):
		return a.flagError("ota-port", "the web app takes port 80 (or 8080) unless --web-port says otherwise: give --web-port too, or another --ota-port")
	}
	return nil
}

// mdnsPort is mDNS's UDP port (RFC 6762), which the fleet's responder binds.
const mdnsPort = 5353

// hostPrefix is a --name-prefix that leaves room in a 63-byte host label
// for "-" and the device's number.
var hostPrefix = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,38}[A-Za-z0-9])?$`)

var coreVersion = regexp.MustCompile(`^v?[0-9]{1,3}(\.[0-9]{1,3}){0,2}$`)

// addresses lists the devices' addresses (sim.FleetAddrs: loopback fleets
// stay inside 127.0.0.0/8 skipping .0 and .255, or are the one device on
// ::1; a --listen fleet stays inside its first address's /24) and whether
// they are outside loopback.
func (o *simOptions) addresses(a *app) ([]netip.Addr, bool, error) {
	flag, outside := "base-ip", false
	if keep, err := exclusive(a, "base-ip", "listen"); err != nil {
		return nil, false, err
	} else if o.Listen != "" && keep != "base-ip" {
		flag, outside = "listen", true
		// A loopback --listen from the environment or the file is just a
		// loopback fleet; only binding outside loopback must be typed.
		if ip, err := netip.ParseAddr(o.Listen); !a.typed("listen") && err == nil && !ip.IsLoopback() {
			return nil, false, a.flagError("listen", "binding outside loopback must be typed on the command line, not set in the environment or the config file")
		}
	}
	text := o.BaseIP
	if outside {
		text = o.Listen
	}
	first, err := netip.ParseAddr(text)
	if err != nil {
		return nil, false, a.flagError(flag, "not an IP address (such as 127.0.0.2; names are not looked up)")
	}
	// A loopback fleet from the command line stays inside one /24 too, as
	// issue 7 asks: the Go API (sim.FleetAddrs) skips .0 and .255 and may
	// span several, but a user who typed .250 with 10 devices, or .0, gets a
	// reason rather than addresses they did not ask for.
	loop4 := first.Unmap().Is4() && first.IsLoopback()
	if loop4 && (first.Unmap().As4()[3] == 0 || first.Unmap().As4()[3] == 255) {
		return nil, false, a.flagError(flag, "a network (.0) or broadcast (.255) address: the first device needs .1 to .254 (such as 127.0.0.2)")
	}
	// sim counts the addresses; this names the flag and says what to do.
	addrs, err := sim.FleetAddrs(first, o.Devices, outside)
	var cross *sim.CrossError
	switch {
	case err == nil && loop4 && addrs[len(addrs)-1].As4()[2] != addrs[0].As4()[2]:
		return nil, false, a.flagError(flag, "%s", crossReason(flag, addrs, o.Devices))
	case err == nil:
		return addrs, !addrs[0].IsLoopback(), nil // --listen 127.0.0.5 is just a loopback fleet
	case errors.Is(err, sim.ErrAnyAddress):
		return nil, false, a.flagError(flag, "every device needs an address of its own: give the first device's address (such as 192.168.1.50), not the any-address")
	case errors.Is(err, sim.ErrNotLoopback):
		return nil, false, a.flagError(flag, "not a loopback address; to bind elsewhere on purpose, type --listen ADDR")
	case errors.Is(err, sim.ErrOneIPv6Loopback):
		return nil, false, a.flagError(flag, "::1 is the only IPv6 loopback address: use -n 1, or an IPv4 --base-ip for more devices")
	case errors.Is(err, sim.ErrPastLoopback):
		return nil, false, a.flagError(flag, "%d devices would run past 127.255.255.254, the last loopback address: use a lower address or fewer devices", o.Devices)
	case errors.As(err, &cross):
		return nil, false, a.flagError(flag, "%d devices would cross %s into the next network: use a lower address or fewer devices", o.Devices, cross.At)
	}
	return nil, false, a.flagError(flag, "%s", err) // ErrNotUnicast, ErrNetworkAddress: the reason says it all
}

// maxPerNet is how many devices one sim holds in a /24: .2 to .254 (.1 is
// the host's usual loopback address, .0 and .255 are no host's).
const maxPerNet = 253

// crossReason says why a loopback fleet that leaves its first /24 is
// refused, and what fits instead.
func crossReason(flag string, addrs []netip.Addr, n int) string {
	first, last := addrs[0], addrs[len(addrs)-1]
	b := first.As4()
	msg := fmt.Sprintf("%d devices would run from %s to %s, across %d.%d.%d.255: ", n, first, last, b[0], b[1], b[2])
	if n > maxPerNet {
		next := netip.AddrFrom4([4]byte{b[0], b[1], b[2], 255}).Next().Next().Next() // the next /24's .2
		return msg + fmt.Sprintf("one sim process holds at most %d devices per /24 (.2 to .254): give --devices %d or fewer, and start another sim with --%s %s for the rest",
			maxPerNet, maxPerNet, flag, next)
	}
	low := b
	low[3] = byte(255 - n)
	return msg + fmt.Sprintf("give a lower --%s (%s at most) or fewer --devices (%d at most from %s); one sim process holds at most %d devices per /24",
		flag, netip.AddrFrom4(low), 255-int(b[3]), first, maxPerNet)
}

func addrRange(addrs []netip.Addr) string {
	if len(addrs) == 1 {
		return addrs[0].String()
	}
	return addrs[0].String() + " … " + addrs[len(addrs)-1].String()
}

// mdnsInterface picks where to advertise: loopback unless told otherwise.
func (o *simOptions) mdnsInterface(a *app) (*net.Interface, error) {
	if keep, err := exclusive(a, "mdns-interface", "no-mdns"); err != nil {
		return nil, err
	} else if keep == "mdns-interface" {
		o.NoMDNS = false
	} else if keep == "no-mdns" {
		o.MDNSIf = ""
	}
	if o.NoMDNS {
		return nil, nil
	}
	if o.MDNSIf == "" {
		ifi, err := mdnsd.LoopbackInterface()
		if err != nil {
			// Devices are still useful without mDNS (static addresses); say why it is off.
			a.log.Warn("not advertising by mDNS: " + err.Error())
			return nil, nil
		}
		if err := ifaceguard.Check(ifi.Name); err != nil {
			a.log.Warn("not advertising by mDNS: " + err.Error())
			return nil, nil
		}
		return ifi, nil
	}
	ifi, err := net.InterfaceByName(o.MDNSIf)
	if err != nil {
		var names []string
		if ifs, err := net.Interfaces(); err == nil {
			for _, i := range ifs {
				names = append(names, i.Name)
			}
		}
		return nil, a.flagError("mdns-interface", "no such network interface (have: %s)", strings.Join(names, ", "))
	}
	// The responder refuses it too (mdnsd.New); this says which flag.
	if err := ifaceguard.Check(ifi.Name); err != nil {
		return nil, a.flagError("mdns-interface", "%v", err)
	}
	if ifi.Flags&net.FlagMulticast == 0 {
		return nil, a.flagError("mdns-interface", "the interface has no MULTICAST flag, so mDNS cannot run on it (turn it on: ip link set %s multicast on; or give --no-mdns)", ifi.Name)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, a.flagError("mdns-interface", "the interface is down (bring it up, or give --no-mdns)")
	}
	if ifi.Flags&net.FlagLoopback == 0 {
		if !a.typed("mdns-interface") {
			return nil, a.flagError("mdns-interface", "advertising outside loopback must be typed on the command line, not set in the environment or the config file")
		}
		a.log.Warn(fmt.Sprintf("advertising by mDNS on %s: every host on that network sees the devices", ifi.Name))
	}
	return ifi, nil
}

// checkOpenFiles refuses a fleet larger than the open-file limit allows:
// every device holds perDevice sockets, plus room for clients and mDNS.
func checkOpenFiles(a *app, devices, perDevice int) error {
	limit, ok := openFileLimit()
	if !ok {
		return nil
	}
	const reserve = 64
	need := uint64(devices)*uint64(perDevice) + reserve
	if need > limit {
		return a.flagError("devices", "needs about %d open files, but this process may open %d: raise the limit (ulimit -n) or start fewer devices",
			need, limit)
	}
	return nil
}

func runSim(ctx context.Context, a *app, o *simOptions) error {
	if o.pull.cfg != nil {
		return runPullSim(ctx, a, o)
	}
	if o.pull.esCfg != nil {
		return runESPHomePullSim(ctx, a, o)
	}
	fc := o.fleet
	ev := &heldEvents[sim.Event]{}
	ev.emit = func(e sim.Event) {
		if a.opts.JSON {
			a.writeLine(simLineOf(e))
		} else if ev.started && !a.opts.Quiet {
			fmt.Fprintln(a.io.ErrOut, a.secrets.Redact(eventLine(e)))
		}
	}
	fc.OnEvent = ev.add
	runCtx, cancel := simRunContext(ctx, o.Duration)
	defer cancel()
	start := time.Now()
	fleet, err := sim.StartFleet(runCtx, fc)
	if err != nil {
		startErr := err
		if ctx.Err() != nil {
			err = ctx.Err() // interrupted while starting: exit 130
		} else {
			err = startError(err)
		}
		ev.mu.Lock()
		defer ev.mu.Unlock()
		var stopped []sim.Event
		for _, e := range ev.held {
			if e.Event == sim.EventStopped {
				stopped = append(stopped, e)
				continue
			}
			ev.emit(e)
		}
		if a.opts.JSON && ctx.Err() == nil {
			// The device that failed and when, so the line reads in order
			// before the stopped events of the devices closed after it.
			simStartFailure(a, err, startErr, time.Now())
		}
		for _, e := range stopped {
			ev.emit(e)
		}
		return err
	}
	a.log.Info("fleet started", "devices", fleet.Len(), "took", time.Since(start).Round(time.Millisecond))

	if a.opts.JSON {
		summaryAs[*simSummary](a).Count = ptr(fleet.Len())
	}
	ev.mu.Lock()
	for _, e := range ev.held {
		ev.emit(e)
	}
	ev.held, ev.started = nil, true
	if !a.opts.JSON {
		lr := &lineRedactor{a: a, w: a.io.Out}
		renderFleet(lr, fleet, o.mdns, time.Since(start), o.Duration)
		_ = lr.Close()
	}
	ev.mu.Unlock()
	return simWait(ctx, runCtx, a, func() { _ = fleet.Close() })
}

// heldEvents passes a fleet's events to emit, one at a time (one writer at
// a time keeps lines whole). Until the fleet is up (started) they are held
// back, so that a fleet that fails to start reports its error before the
// stopped events; the caller empties held, under mu, as it starts.
type heldEvents[E any] struct {
	mu      sync.Mutex
	held    []E
	started bool
	emit    func(E) // called with mu held
}

// add is the fleet's OnEvent.
func (h *heldEvents[E]) add(e E) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.started {
		h.held = append(h.held, e)
		return
	}
	h.emit(e)
}

// simRunContext is ctx, ended after --duration when one is given.
func simRunContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return ctx, func() {}
}

// simWait runs the fleet until runCtx ends, then closes it. Ctrl-C is the
// normal way to stop a simulator: exit 0, as after --duration.
func simWait(ctx, runCtx context.Context, a *app, closeFleet func()) error {
	<-runCtx.Done()
	a.log.Info("stopping", "why", stopReason(ctx))
	closeFleet()
	return nil
}

func stopReason(ctx context.Context) string {
	if interrupted(ctx) {
		return "interrupted"
	}
	return "--duration reached"
}

// startError says in one line why the fleet did not start, from sim's typed
// errors (never by editing its text).
func startError(err error) error {
	const what = "cannot start the simulated devices: "
	var se *sim.StartError
	dev := ""
	if errors.As(err, &se) {
		dev = se.Device + ": "
	}
	if msg, ok := netError(err); ok {
		return withCode("sim_start", errors.New(what+dev+msg))
	}
	if errors.Is(err, sim.ErrNotLoopback) {
		return withCode("sim_start", errors.New(what+dev+"an address outside loopback (type --listen ADDR to bind there on purpose)"))
	}
	return withCode("sim_start", errors.New(what+dev+rootCause(err).Error()))
}

func renderFleet(w io.Writer, f *sim.Fleet, ifi *net.Interface, took, duration time.Duration) {
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
	if duration > 0 {
		fmt.Fprintf(w, "serving for %v or until interrupted (Ctrl-C); events follow on stderr\n", duration)
	} else {
		fmt.Fprintln(w, "serving until interrupted (Ctrl-C); events follow on stderr")
	}
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
