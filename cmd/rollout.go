package cmd

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/inventory"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/rollout/tasmota"
	"github.com/ots-ota/ots-ota/upload"
)

type rolloutOptions struct {
	Firmware string
	Names    []string
	ResumeID string

	Family        string
	ExpectVersion string
	All           bool
	Group         string

	Canary      int
	Waves       string
	MaxFailures string
	WavePause   time.Duration
	Retries     int
	MaxFetches  int

	ServeAddr string
	PublicURL string

	Broker           string
	FullTopic        string
	DiscoverWait     time.Duration
	MQTTUser         string
	MQTTPassword     string
	MQTTPasswordFile string
	MQTTCA           string

	Timeout       time.Duration
	VerifyTimeout time.Duration
	Stability     time.Duration

	StateDir string
	Resume   bool

	// ESPHome (rollout_esphome.go).
	CheckWait  time.Duration
	Manifest   string
	ChipFamily string

	// The S3-compatible store (rollout_esphome.go).
	Store        string
	S3Endpoint   string
	S3Region     string
	S3AccessKey  string
	S3SecretKey  string
	S3SecretFile string

	// Resolved by validate.
	plan     rollout.Plan
	password auth.Secret
	inv      *inventory.Inventory
	store    *storeSpec // nil: the built-in file server
}

const rolloutLong = `Rollout updates devices that fetch their image themselves, over the MQTT broker they
already use: past one LAN, behind NAT, on networks this host is not on. It publishes
FIRMWARE with a built-in file server under one unguessable URL (or in an S3-compatible
bucket, --store), tells each device over the broker to fetch it, and watches what the
devices report, in waves: --canary N devices first, then --waves steps counted
cumulatively over the rest. The canary passes when none of its devices failed and at
least one ended updated; a wave starts only when the one before it passed, its failures
(anything but updated or skipped) within --max-failures, counted per wave and for the
whole rollout as verdicts come in, while the wave runs (default: none allowed). A gate
that stops the rollout leaves the devices not yet commanded not-started, and exit 1.

Family tasmota: each device takes its --max-fetches slot, gets one Status 0 read, then
one command, QoS 1 and never retained, on its own topic (cmnd/<topic>/Backlog OtaUrl
<url>; Upgrade 1); then only its reports are read (LWT, stat/<topic>/UPGRADE,
tele/<topic>/INFO1 and INFO3). A command is sent only once the state file records it: if
the file cannot be written, nothing is sent and the rollout stops. In rare cases QoS 1
delivers a command twice (after a broker reconnect): the device restarts its download,
and the verdict is unaffected. A device that reports a failed download gets another
command (--retries); one that restarted never does. It is updated once it boots on
--expect-version (the numeric part of INFO1's Version, as push compares it) and stays
online for --stability-window. Its old OtaUrl is put back afterwards. --expect-version is
required: a .bin does not tell what Tasmota will report. ESP8266 devices fetch
FIRMWARE.gz on their last tries, and a -minimal image first when the image does not fit:
put fw.bin.gz and fw-minimal.bin (Tasmota's name: the file name cut at its last '-',
then -minimal) beside fw.bin.

Family esphome (update: platform: http_request, and mqtt:): when a wave starts, the
rollout writes the manifest its devices poll (--manifest, manifest.json, or the
inventory's manifest: per device; version = --expect-version, ota.path = the image's
URL), served without a token at <public-url or http://<serve-addr>>/<name>, or in the
store: the URL built into the devices (update: source:), so --serve-addr needs a fixed
port. Each device is read (its retained <prefix>/update/<id>/state), then waited for, at
most --check-wait, until its state shows the manifest's version as latest_version (a
device that never does is failed, never commanded: build with a short update_interval);
then it takes its slot and gets INSTALL on <prefix>/update/<id>/command, QoS 1, never
retained. It is updated once it restarted and tells installed_version = --expect-version,
online (<prefix>/status) for --stability-window (default 90s with esphome). --expect-version
must equal the image's esphome: project: version: exactly: devices compare the two as text,
and a difference makes them see "available" for ever. A gate that stops the rollout puts
each manifest back as it was. <id> is the device's one update entity, or the inventory's
entity: for a device with two. ESPHome tells no failure over MQTT: --retries is refused.
The manifest is served without a token and names the image: give it a name nobody guesses.

Devices: NAMEs from the inventory (each with mqtt_topic:, ESPHome's topic prefix; an
address: is not needed), or a device's MQTT topic (prefix) itself; --group NAME, an
inventory group; --all, every device the broker knows (Tasmota: retained tele/+/LWT;
ESPHome: retained +/update/+/state; waited for --discover-wait) and every inventory device
with an mqtt_topic: (but those whose protocol: is the other family's). Nothing is selected
by default.

The devices fetch http://<--serve-addr>/<token>/<file> (--serve-addr default: this host's
address on the way to the broker), or --public-url as the base when they reach this host
through NAT or a reverse proxy. At most --max-fetches devices fetch at once. The image
holds the devices' Wi-Fi credentials: the URL's token is what guards it while the server
runs; the server stops when the rollout ends. With --store s3://BUCKET/PREFIX the image
goes to a content-addressed folder of the bucket (private objects) and devices fetch it
through --public-url (required: your CDN or proxy in front of the bucket); the credentials
come from OTS_OTA_S3_ACCESS_KEY and OTS_OTA_S3_SECRET_KEY (or --s3-secret-file), else
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and never show.

The rollout's state (never a password) is a file under --state-dir, locked while a rollout
runs. After Ctrl-C, 'ots-ota rollout --resume [ID]' goes on where it stopped (the latest
unfinished one without ID): devices that were commanded are only watched again, never
commanded twice, and an OtaUrl left to put back is put back first. 'ots-ota rollout
status [ID]' tells where rollouts stand.

Outcomes, the table, --json and the exit status are push's:
  0    every device updated or skipped
  1    a device failed, was refused, rolled back, stayed unchanged or was unreachable,
       a gate left devices not-started, the broker (or the store) could not be reached
       (nothing was sent), or the image failed its local checks
  2    usage error, before anything was published or sent
  130  interrupted (Ctrl-C); the state is kept for --resume`

func newRolloutCmd(a *app) *cobra.Command {
	o := &rolloutOptions{}
	c := &cobra.Command{
		Use:   "rollout FIRMWARE --family tasmota|esphome --expect-version V --broker URL NAME... | --all | --group NAME",
		Short: "Roll firmware out in waves to devices that fetch it over their MQTT broker (Tasmota, ESPHome)",
		Long:  rolloutLong,
		Example: `  ots-ota rollout tasmota32.bin --family tasmota --expect-version 15.1.0 \
      --broker mqtts://broker.example.net --mqtt-user ota --mqtt-password-file ~/.mqtt-pw \
      --public-url http://fw.example.net:8070 --serve-addr 192.168.1.10:8070 \
      --all --canary 1 --waves 10%,50%,100% --max-failures 5%
  ots-ota rollout tasmota.bin --family tasmota --expect-version 15.1.0 --broker mqtt://192.168.1.5 --group plugs
  ots-ota rollout firmware.bin --family esphome --expect-version 2.4.2 --broker mqtt://192.168.1.5 \
      --serve-addr 192.168.1.10:8070 --all --canary 1
  ots-ota rollout firmware.bin --family esphome --expect-version 2.4.2 --broker mqtts://broker.example.net \
      --store s3://fw-bucket/fleet --s3-endpoint https://s3.eu-central-1.amazonaws.com \
      --public-url https://fw.example.net/fleet --all
  ots-ota rollout --resume
  ots-ota rollout status`,
		Args: cobra.ArbitraryArgs,
	}
	c.RunE = run(a, o, runRollout)
	c.ValidArgsFunction = func(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return []string{"bin", "gz"}, cobra.ShellCompDirectiveFilterFileExt
		}
		return targetCandidates(a, args, prefix, false), cobra.ShellCompDirectiveNoFileComp
	}
	f := c.Flags()
	f.StringVar(&o.Family, "family", "", "the devices' firmware: tasmota or esphome")
	f.StringVar(&o.ExpectVersion, "expect-version", "", "the version devices report once they run the image (Tasmota: the digits and dots of INFO1's Version; ESPHome: esphome: project: version:, exactly); required")
	f.BoolVar(&o.All, "all", false, "every device the broker knows and every inventory device with an mqtt_topic")
	f.StringVar(&o.Group, "group", "", "the devices of an inventory group")
	f.IntVar(&o.Canary, "canary", 0, "update N devices first; the waves start only if none of them failed and one at least ended updated")
	f.StringVar(&o.Waves, "waves", "10%,50%,100%", "after the canary, the devices updated by the end of each wave: percentages or counts, cumulative, the last 100%")
	f.StringVar(&o.MaxFailures, "max-failures", "", "failures a wave and the whole rollout may have, N or P% (default none)")
	f.DurationVar(&o.WavePause, "wave-pause", 0, "wait this long after a wave passed before the next starts")
	f.IntVar(&o.Retries, "retries", 1, "further commands to a device that reported a failed download (never to one that restarted; tasmota only)")
	f.IntVar(&o.MaxFetches, "max-fetches", 10, "at most N devices commanded and fetching at once")
	f.StringVar(&o.ServeAddr, "serve-addr", "", "the address the file server binds, IP or IP:PORT (default: this host's address on the way to the broker, any port)")
	f.StringVar(&o.PublicURL, "public-url", "", "the base URL devices fetch from, when they reach this host through NAT or a reverse proxy (http:// or https://; default http://<serve-addr>)")
	f.StringVar(&o.Broker, "broker", "", "the devices' MQTT broker: mqtt://HOST[:1883] or mqtts://HOST[:8883]; required")
	f.StringVar(&o.FullTopic, "full-topic", "", "the devices' FullTopic when not Tasmota's default %prefix%/%topic%/ (the inventory's full_topic: wins)")
	f.DurationVar(&o.DiscoverWait, "discover-wait", 3*time.Second, "with --all: how long to collect the devices the broker knows")
	f.StringVar(&o.MQTTUser, "mqtt-user", "", "the broker's user name")
	f.StringVar(&o.MQTTPassword, "mqtt-password", "", "the broker's password (prefer OTS_OTA_MQTT_PASSWORD or --mqtt-password-file: flags show in ps)")
	f.StringVar(&o.MQTTPasswordFile, "mqtt-password-file", "", "read the broker's password from FILE (first line)")
	f.StringVar(&o.MQTTCA, "mqtt-ca", "", "with mqtts://: PEM file of the CA that signs the broker's certificate (default: the system's)")
	f.DurationVar(&o.Timeout, "timeout", 0, "bound on each device, from its command to its verdict (0 = from the image size at 8 KiB/s, plus --verify-timeout)")
	f.DurationVar(&o.VerifyTimeout, "verify-timeout", 90*time.Second, "how long a device may take to restart before it is read once more (Status 2)")
	f.DurationVar(&o.Stability, "stability-window", 30*time.Second, "how long a device must stay online on the new version to count as updated (with --family esphome, 90s unless given)")
	f.StringVar(&o.StateDir, "state-dir", "", "where rollouts keep their state (default: $OTS_OTA_STATE_DIR, else the user's state directory)")
	f.BoolVar(&o.Resume, "resume", false, "go on with an interrupted rollout: ID, or the latest unfinished one")
	o.addESPHomeFlags(c)
	_ = c.RegisterFlagCompletionFunc("group", completeGroups(a))
	_ = c.RegisterFlagCompletionFunc("family", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"tasmota", "esphome"}, cobra.ShellCompDirectiveNoFileComp
	})
	_ = c.MarkFlagFilename("mqtt-password-file")
	_ = c.MarkFlagFilename("mqtt-ca", "pem", "crt")
	_ = c.MarkFlagDirname("state-dir")
	return c
}

// resumeFixed are the flags that define a rollout: --resume takes them
// from its state file, so a typed one would be silently ignored.
var resumeFixed = []string{"family", "expect-version", "all", "group", "canary", "waves", "max-failures", "wave-pause",
	"serve-addr", "public-url", "broker", "full-topic", "discover-wait",
	"check-wait", "manifest", "chip-family", "store", "s3-endpoint", "s3-region"}

func (o *rolloutOptions) validate(a *app, args []string) error {
	if o.Resume {
		for _, name := range resumeFixed {
			if a.typed(name) {
				return a.flagError(name, "--resume goes on as the rollout was started (its state file holds it): drop --%s", name)
			}
		}
		if len(args) > 1 {
			return usageErrorf("rollout --resume takes one rollout ID at most (got %d arguments)", len(args))
		}
		if len(args) == 1 {
			o.ResumeID = args[0]
		}
		return o.checkCommon(a)
	}
	if len(args) == 0 {
		return usageErrorf("rollout needs a FIRMWARE file, then devices (NAME..., --all or --group); or --resume")
	}
	o.Firmware, o.Names = args[0], args[1:]
	switch o.Family {
	case "":
		return usageErrorf("--family is required: the devices' firmware (tasmota or esphome)")
	case "tasmota", "esphome":
	default:
		if l := strings.ToLower(o.Family); l == "tasmota" || l == "esphome" {
			return a.flagError("family", "family names are lower case: --family %s", l)
		}
		return a.flagError("family", "want tasmota or esphome")
	}
	if err := o.checkExpect(a); err != nil {
		return err
	}
	if err := o.checkFamilyFlags(a); err != nil {
		return err
	}
	if o.Broker == "" {
		return usageErrorf("--broker is required: the MQTT broker the devices use (mqtt://HOST or mqtts://HOST)")
	}
	var err error
	if o.Broker, err = o.checkBroker(a); err != nil {
		return err
	}
	if strings.TrimSpace(o.Waves) == "" {
		// An empty $WAVES in a script must not run the fleet as one wave.
		return usageErrorf("--waves is empty: give the cumulative steps (10%%,50%%,100%%), or 100%% for one wave")
	}
	if o.plan.Waves, err = rollout.ParseWaves(o.Waves); err != nil {
		return a.flagError("waves", "%v", err)
	}
	if o.plan.MaxFailures, err = upload.ParseFailureBudget(o.MaxFailures); err != nil {
		return a.flagError("max-failures", "%v", err)
	}
	if o.Canary < 0 {
		return a.flagError("canary", "must not be negative")
	}
	if o.WavePause < 0 {
		return a.flagError("wave-pause", "must not be negative")
	}
	o.plan.Canary, o.plan.WavePause = o.Canary, o.WavePause
	if o.DiscoverWait <= 0 {
		return a.flagError("discover-wait", "must be positive")
	}
	if o.PublicURL != "" {
		if err := checkPublicURL(o.PublicURL); err != nil {
			// Not flagError: the value may hold a user:password@.
			return usageErrorf("--public-url %s: %v", auth.StripUserinfo(o.PublicURL), err)
		}
		o.PublicURL = strings.TrimSuffix(o.PublicURL, "/")
	}
	if o.ServeAddr != "" {
		if err := checkServeAddr(o.ServeAddr); err != nil {
			return a.flagError("serve-addr", "%v", err)
		}
	}
	if err := o.checkStore(a); err != nil {
		return err
	}
	if err := o.checkURLs(); err != nil {
		return err
	}
	if o.FullTopic != "" {
		if err := inventory.CheckFullTopic(o.FullTopic); err != nil {
			return a.flagError("full-topic", "%v", err)
		}
		if err := tasmota.CheckFullTopic(o.FullTopic); err != nil {
			return a.flagError("full-topic", "%v", err)
		}
	}
	if err := o.checkCommon(a); err != nil {
		return err
	}
	return o.checkSelection(a)
}

// checkCommon checks what a new rollout and --resume share: the broker's
// credentials and the bounds of each device.
func (o *rolloutOptions) checkCommon(a *app) error {
	for _, c := range []struct {
		name string
		v    int
	}{{"retries", o.Retries}, {"canary", o.Canary}} {
		if c.v < 0 {
			return a.flagError(c.name, "must not be negative")
		}
	}
	if o.MaxFetches < 1 {
		return a.flagError("max-fetches", "must be at least 1: a device that is not allowed to fetch is never updated")
	}
	for _, c := range []struct {
		name string
		v    time.Duration
	}{{"timeout", o.Timeout}, {"verify-timeout", o.VerifyTimeout}, {"stability-window", o.Stability}} {
		if c.v < 0 {
			return a.flagError(c.name, "must not be negative")
		}
	}
	if o.VerifyTimeout == 0 {
		return a.flagError("verify-timeout", "must be positive")
	}
	keep, err := exclusive(a, "mqtt-password", "mqtt-password-file")
	if err != nil {
		return err
	}
	o.password = auth.NewSecret(o.MQTTPassword)
	if o.MQTTPasswordFile != "" && keep != "mqtt-password" {
		if o.password, err = readSecretFile(o.MQTTPasswordFile); err != nil {
			return usageErrorf("--mqtt-password-file: %v", err)
		}
	}
	a.secrets.AddBasic(o.MQTTUser, o.password)
	if !o.password.IsZero() && o.MQTTUser == "" {
		return usageErrorf("a broker password needs --mqtt-user: MQTT sends a password only with a user name")
	}
	if o.MQTTCA != "" {
		data, err := readRegular(context.Background(), o.MQTTCA, 1<<20)
		if err != nil {
			return a.flagError("mqtt-ca", "%v", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(data) {
			return a.flagError("mqtt-ca", "no PEM certificate in it (want the CA's certificate, -----BEGIN CERTIFICATE-----)")
		}
	}
	if o.StateDir == "" {
		if o.StateDir, err = rollout.DefaultDir(); err != nil {
			return usageErrorf("no state directory: %v; give --state-dir", err)
		}
	}
	return nil
}

// checkBroker reads --broker: mqtt:// or mqtts://, a host, no path. A user
// name in it is --mqtt-user's; a password in it is refused (it would show
// in ps and shell history), and never repeated in the error.
func (o *rolloutOptions) checkBroker(a *app) (string, error) {
	u, err := url.Parse(o.Broker)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		// url.Parse's error quotes the URL, userinfo and all.
		return "", usageErrorf("--broker %s: not a broker URL like mqtt://HOST[:1883] or mqtts://HOST[:8883]", auth.StripUserinfo(o.Broker))
	}
	shown := auth.StripUserinfo(o.Broker)
	if u.Scheme != "mqtt" && u.Scheme != "mqtts" {
		return "", usageErrorf("--broker %s: scheme %q: want mqtt:// or mqtts:// (TLS)", shown, u.Scheme)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", usageErrorf("--broker %s: a broker URL is mqtt://HOST[:PORT], with no path or query", shown)
	}
	if p := u.Port(); p != "" {
		if n, err := net.LookupPort("tcp", p); err != nil || n < 1 || n > 65535 || strings.Trim(p, "0123456789") != "" {
			return "", usageErrorf("--broker %s: port %q out of range", shown, p)
		}
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return "", usageErrorf("--broker: the URL holds a password; give it with --mqtt-password-file, OTS_OTA_MQTT_PASSWORD or the config file (flags show in ps and shell history)")
		}
		name := u.User.Username()
		if o.MQTTUser != "" && o.MQTTUser != name {
			return "", usageErrorf("--broker names user %q, --mqtt-user %q: give one", name, o.MQTTUser)
		}
		o.MQTTUser = name
	}
	if o.MQTTCA != "" && u.Scheme != "mqtts" {
		return "", usageErrorf("--mqtt-ca goes with an mqtts:// broker: %s is plain MQTT", shown)
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host}).String(), nil
}

// checkPublicURL reads --public-url: the base devices fetch from.
func checkPublicURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.Hostname() == "":
		return errors.New("not a URL like http://HOST[:PORT][/PATH]")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("scheme %q: devices fetch over http:// (ESP32 builds with HTTPS support also https://)", u.Scheme)
	case u.User != nil:
		return errors.New("no user:password@ here: devices would store it in their OtaUrl")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("no query or fragment: the rollout adds /<token>/<file> to it")
	}
	return nil
}

// checkURLs checks, before anything is made, the URLs devices would be
// told under --public-url (or --serve-addr with its port): at most
// fileserve.MaxURLLen characters with the token and each file served
// (the image and the companions beside it).
func (o *rolloutOptions) checkURLs() error {
	base, flag := o.PublicURL, "--public-url"
	if base == "" {
		ap, err := parseServeAddr(o.ServeAddr)
		if o.ServeAddr == "" || err != nil || ap.Port() == 0 {
			return nil // the port is known once bound: the engine checks
		}
		base, flag = "http://"+ap.String(), "--serve-addr"
	}
	if o.Family != "tasmota" {
		return nil // only Tasmota's OtaUrl has a bound (100 characters)
	}
	tok, err := fileserve.NewToken()
	if err != nil {
		return err
	}
	if o.store != nil {
		// <public-url>/<stem>-<20-character hash>/<file>: the hash stands
		// where the token stands with the built-in server.
		tok = storeFolder(filepath.Base(o.Firmware))
	}
	fam := tasmota.New(nil, tasmota.Options{})
	name := filepath.Base(o.Firmware)
	names := []string{name}
	for _, c := range fam.Companions(name) {
		if st, err := os.Stat(filepath.Join(filepath.Dir(o.Firmware), c)); err == nil && st.Mode().IsRegular() {
			names = append(names, c)
		}
	}
	for _, n := range names {
		u := base + "/" + tok + "/" + n
		if len(u) > fileserve.MaxURLLen {
			what := fmt.Sprintf("its %d-character token", len(tok))
			if o.store != nil {
				what = "the store's folder " + tok
			}
			return usageErrorf("%s: the URL devices would be told for %s is %d characters (with %s), devices take at most %d: use a shorter %s or file name",
				flag, n, len(u), what, fileserve.MaxURLLen, flag)
		}
	}
	return nil
}

// checkSelection checks NAME..., --all and --group against the inventory.
func (o *rolloutOptions) checkSelection(a *app) error {
	if o.All && o.Group != "" {
		return usageErrorf("--all and --group do not go together: --all already takes every device")
	}
	if o.All && len(o.Names) > 0 {
		msg := fmt.Sprintf("--all and device NAMEs (%s) do not go together: --all already takes every device", strings.Join(o.Names, " "))
		if n := firmwareLike(o.Names); n != "" {
			msg += fmt.Sprintf("; %s looks like a firmware file: rollout takes one FIRMWARE, first", n)
		}
		return usageErrorf("%s", msg)
	}
	if !o.All && o.Group == "" && len(o.Names) == 0 {
		return usageErrorf("no devices: give NAMEs (inventory names or MQTT topics) after FIRMWARE, or --group NAME, or --all (every device the broker knows)")
	}
	var err error
	if o.inv, err = loadInventory(a); err != nil {
		return err
	}
	if o.Group != "" {
		devs, err := o.inv.Group(o.Group)
		if err != nil {
			return usageError{err}
		}
		for _, d := range devs {
			if d.MQTTTopic == "" {
				return usageErrorf("group %s: device %s has no mqtt_topic in the inventory: add its %s (mqtt_topic: …)", o.Group, d.Name, o.topicWords())
			}
			if why := o.otherFamily(d); why != "" {
				return usageErrorf("group %s: device %s %s", o.Group, d.Name, why)
			}
		}
	}
	for _, n := range o.Names {
		if d, ok := o.inv.Device(n); ok {
			if d.MQTTTopic == "" {
				return usageErrorf("device %s has no mqtt_topic in the inventory: add its %s (mqtt_topic: …), or give the topic itself", d.Name, o.topicWords())
			}
			if why := o.otherFamily(d); why != "" {
				return usageErrorf("device %s %s", d.Name, why)
			}
			continue
		}
		if firmwareLike([]string{n}) != "" {
			if st, err := os.Stat(n); err == nil && st.Mode().IsRegular() {
				return usageErrorf("%s is a firmware file, not a device: rollout takes one FIRMWARE, first, then devices", n)
			}
		}
		if err := inventory.CheckTopic(n); err != nil {
			return usageErrorf("%q is neither an inventory name nor an MQTT topic: %v", n, err)
		}
	}
	// The inventory's FullTopics of the devices taken, as the family
	// reads them.
	for _, d := range o.devicesOf() {
		if o.Family != "tasmota" || d.FullTopic == "" || d.FullTopic == o.FullTopic {
			continue
		}
		if err := tasmota.CheckFullTopic(d.FullTopic); err != nil {
			return usageErrorf("config file %s: inventory: device %q: full_topic: %v", a.cfg.Path(), d.Name, err)
		}
	}
	return nil
}

// otherFamily says why an inventory device is another family's ("" when
// it may be this one's): its protocol: names the other, or (ESPHome) it has
// a Tasmota full_topic:. --all leaves such devices out; named, they are
// refused.
func (o *rolloutOptions) otherFamily(d inventory.Device) string {
	switch {
	case (d.Protocol == "tasmota" || d.Protocol == "esphome") && d.Protocol != o.Family:
		return fmt.Sprintf("is protocol: %s in the inventory, not --family %s", d.Protocol, o.Family)
	case o.Family == "esphome" && d.FullTopic != "":
		return "has a full_topic: (Tasmota's FullTopic) in the inventory, not an ESPHome device's"
	}
	return ""
}

// topicWords names what mqtt_topic: holds for the family.
func (o *rolloutOptions) topicWords() string {
	if o.Family == "esphome" {
		return "ESPHome MQTT topic prefix"
	}
	return "Tasmota topic"
}

// firmwareLike is the first name that looks like a firmware file, "".
func firmwareLike(names []string) string {
	for _, n := range names {
		l := strings.ToLower(n)
		if strings.HasSuffix(l, ".bin") || strings.HasSuffix(l, ".bin.gz") {
			return n
		}
	}
	return ""
}

// devicesOf is the selection as rollout devices, without the broker's
// (--all adds those): inventory devices by their names, topics as they
// are, in the order given, each once.
func (o *rolloutOptions) devicesOf() []rollout.Device {
	var out []rollout.Device
	add := func(d rollout.Device) {
		if d.FullTopic == "" && o.Family == "tasmota" {
			d.FullTopic = o.FullTopic
		}
		if !slices.ContainsFunc(out, func(e rollout.Device) bool { return e.Topic == d.Topic }) {
			out = append(out, d)
		}
	}
	fromInv := func(d inventory.Device) rollout.Device {
		if o.Family == "esphome" {
			return rollout.Device{Name: d.Name, Topic: d.MQTTTopic, Manifest: cmp.Or(d.Manifest, o.Manifest), Entity: d.Entity}
		}
		return rollout.Device{Name: d.Name, Topic: d.MQTTTopic, FullTopic: d.FullTopic}
	}
	switch {
	case o.All:
		for _, d := range o.inv.Devices {
			if d.MQTTTopic != "" && o.otherFamily(d) == "" {
				add(fromInv(d))
			}
		}
	case o.Group != "":
		devs, _ := o.inv.Group(o.Group)
		for _, d := range devs {
			add(fromInv(d))
		}
	}
	for _, n := range o.Names {
		if d, ok := o.inv.Device(n); ok {
			add(fromInv(d))
			continue
		}
		if o.Family == "esphome" {
			add(rollout.Device{Name: n, Topic: n, Manifest: o.Manifest})
			continue
		}
		add(rollout.Device{Name: n, Topic: n})
	}
	return out
}

// brokerTimeout bounds the first connect: an unreachable broker ends the
// run before anything is published.
const brokerTimeout = 15 * time.Second

func runRollout(ctx context.Context, a *app, o *rolloutOptions) error {
	if a.secrets.HasShort() {
		a.log.Warn(fmt.Sprintf("a password shorter than %d bytes cannot be hidden reliably: output hides it only where it stands exactly as it is", auth.MinHiddenLen))
	}
	err := startRollout(ctx, a, o)
	// --json: a run stopped before its rollout (Ctrl-C while connecting
	// or listing devices) says so in its summary too.
	if s := rolloutSummaryOf(a); s != nil && s.Interrupted != nil && exitCode(err) == ExitCancelled {
		yes := true
		s.Interrupted = &yes
	}
	return err
}

func startRollout(ctx context.Context, a *app, o *rolloutOptions) error {
	if o.Resume {
		return resumeRollout(ctx, a, o)
	}
	rolloutSummaryOf(a) // --json: the summary knows nothing yet
	fw, err := rolloutImage(ctx, a, o.Firmware)
	if err != nil {
		return err
	}
	jsonRolloutImage(a, fw)
	abs, err := filepath.Abs(o.Firmware)
	if err != nil {
		return withCode("unreadable", fmt.Errorf("firmware: %v; nothing was sent", err))
	}
	store, err := o.openStore(ctx, a, o.store)
	if err != nil {
		return err
	}
	clientID := newClientID()
	client, err := connectBroker(ctx, a, o, o.Broker, clientID)
	if err != nil {
		return err
	}
	// Until a state file names the session, nothing will come back for it.
	var st *rollout.State
	defer func() { client.end(st == nil || st.Record().Finished) }()
	family := o.family(a, client.Client)
	devs := o.devicesOf()
	if o.All {
		found, err := family.Discover(ctx, o.DiscoverWait)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return withCode("broker", fmt.Errorf("cannot list the broker's devices: %v; nothing was sent", rootCause(err)))
		}
		devs = o.mergeDiscovered(devs, found)
		if lo, ok := family.(interface{ LeftOut() []string }); ok {
			if off := lo.LeftOut(); len(off) > 0 {
				// Their retained LWT says Offline: a device long gone, or
				// one down now. Either way --all does not wait for it.
				what := "LWT on the broker says Offline"
				if o.Family == "esphome" {
					what = "status on the broker says offline"
				}
				a.log.Warn(fmt.Sprintf("left out %d device(s) whose %s: %s (name them to include them)", len(off), what, listSome(off, 5)))
			}
		}
	}
	if len(devs) == 0 {
		msg, hint := "no devices found", "the broker holds no retained tele/+/LWT: check --broker and --full-topic, give a longer --discover-wait, or name the devices"
		if o.Family == "esphome" {
			hint = "the broker holds no retained <prefix>/update/+/state: check --broker (the devices' mqtt: broker), give a longer --discover-wait, or name the devices (their MQTT topic prefix)"
		}
		fmt.Fprintln(a.io.ErrOut, "ots-ota: "+msg+"; "+hint)
		return silentError{code: ExitFailed, json: ptr(newErrorObject("no_devices", msg, hint))}
	}
	serve := ""
	if o.store == nil {
		if serve, err = o.serveAddr(ctx); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(fw.Data)
	st, err = rollout.CreateState(o.StateDir, rollout.Meta{
		Family: o.Family, Firmware: abs, SHA256: hex.EncodeToString(sum[:]), Size: fw.Size(), Expect: o.ExpectVersion,
		Plan: o.plan, ServeAddr: serve, PublicURL: o.PublicURL, Broker: o.Broker, ClientID: clientID, Devices: devs,
		Settings: ptr(o.settings()), Store: o.storeMeta(store), FamilyOptions: o.familyOptions(),
	})
	if err != nil {
		return withCode("state", fmt.Errorf("%v; nothing was sent", err))
	}
	defer st.Close()
	cfg := o.engineConfig(family, st, devs, abs)
	cfg.Plan, cfg.Expect, cfg.PublicURL, cfg.Serve.Addr = o.plan, o.ExpectVersion, o.PublicURL, serve
	if store != nil {
		cfg.Store = store
	}
	o.sayManifests(a, devs, serve)
	return rolloutRun(ctx, a, cfg, fw, st, false)
}

// settings are the run's bounds the state file keeps for --resume.
func (o *rolloutOptions) settings() rollout.Settings {
	return rollout.Settings{MaxFetches: o.MaxFetches, Retries: o.Retries, Timeout: o.Timeout,
		VerifyTimeout: o.VerifyTimeout, Stability: o.Stability}
}

// resumeSettings takes the saved settings of a resumed rollout (nil: a
// file from before they were kept, the flags' values stand) for every
// flag not typed again. A typed one wins: a rollout resumed because it
// fetched too much at once, or judged too slow devices, can be given a
// better bound without starting again (refusing it would leave only
// that); the change is said in one line and kept for the next --resume.
func (o *rolloutOptions) resumeSettings(a *app, st *rollout.State, saved *rollout.Settings) error {
	if saved == nil {
		return st.SetSettings(o.settings())
	}
	var changed []string
	num := func(name string, v *int, was int) {
		switch {
		case !a.typed(name):
			*v = was
		case *v != was:
			changed = append(changed, fmt.Sprintf("--%s %d (was %d)", name, *v, was))
		}
	}
	dur := func(name string, v *time.Duration, was time.Duration) {
		switch {
		case !a.typed(name):
			*v = was
		case *v != was:
			changed = append(changed, fmt.Sprintf("--%s %s (was %s)", name, *v, was))
		}
	}
	num("max-fetches", &o.MaxFetches, saved.MaxFetches)
	num("retries", &o.Retries, saved.Retries)
	dur("timeout", &o.Timeout, saved.Timeout)
	dur("verify-timeout", &o.VerifyTimeout, saved.VerifyTimeout)
	dur("stability-window", &o.Stability, saved.Stability)
	if len(changed) == 0 {
		return nil
	}
	if !a.opts.Quiet {
		fmt.Fprintf(a.io.ErrOut, "ots-ota: rollout %s goes on with %s, given again; kept for its next --resume\n", st.ID(), strings.Join(changed, ", "))
	}
	return st.SetSettings(o.settings())
}

// engineConfig is what a new and a resumed rollout configure alike.
func (o *rolloutOptions) engineConfig(family rollout.Family, st *rollout.State, devs []rollout.Device, path string) rollout.Config {
	return rollout.Config{Family: family, Devices: devs, ImagePath: path, MaxFetches: o.MaxFetches, Retries: o.Retries,
		Timeout: o.Timeout, RebootWindow: o.VerifyTimeout, Stability: o.Stability, State: st, Protocol: protocolOf(o.Family)}
}

// serveAddr is --serve-addr, else this host's address on the way to the
// broker (the devices reach the broker; on its network they likely reach
// this host too), any port.
func (o *rolloutOptions) serveAddr(ctx context.Context) (string, error) {
	if o.ServeAddr != "" {
		ap, _ := parseServeAddr(o.ServeAddr)
		return ap.String(), nil
	}
	u, _ := url.Parse(o.Broker)
	host := u.Hostname()
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil || len(ips) == 0 {
			return "", withCode("serve", fmt.Errorf("cannot tell which address devices fetch from: %s does not resolve; give --serve-addr", host))
		}
		ip = ips[0]
	}
	local, err := fileserve.RouteAddr(ip.Unmap())
	if err != nil {
		return "", withCode("serve", fmt.Errorf("cannot tell which address devices fetch from (no route to the broker %s): give --serve-addr", host))
	}
	return netip.AddrPortFrom(local, 0).String(), nil
}

// mergeDiscovered adds the devices the broker knows to the inventory's
// (which keep their names), each topic once.
func (o *rolloutOptions) mergeDiscovered(devs, found []rollout.Device) []rollout.Device {
	for _, d := range found {
		if slices.ContainsFunc(devs, func(e rollout.Device) bool { return e.Topic == d.Topic }) {
			continue
		}
		if d.Name == "" {
			d.Name = d.Topic
		}
		if d.FullTopic == "" && o.Family == "tasmota" {
			d.FullTopic = o.FullTopic
		}
		if d.Manifest == "" && o.Family == "esphome" {
			d.Manifest = o.Manifest
		}
		devs = append(devs, d)
	}
	return devs
}

func newClientID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "ots-ota-" + hex.EncodeToString(b)
}

// brokerSession is the rollout's client and the config it connected
// with: the broker keeps its session (subscriptions, queued reports) under
// the client ID until it is forgotten.
type brokerSession struct {
	*broker.Client
	cfg broker.Config
	log interface{ Warn(string, ...any) }
}

// end closes the client; with forget, it also ends the session the
// broker keeps (a rollout that finished, or one that never started, will
// not come back for it: the broker would queue the fleet's reports for it
// for ever).
func (b *brokerSession) end(forget bool) {
	b.Close()
	if !forget {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), brokerTimeout)
	defer cancel()
	if err := broker.Forget(ctx, b.cfg); err != nil {
		b.log.Warn("the broker keeps this rollout's MQTT session (client "+b.cfg.ClientID+"): "+err.Error(), "broker", b.cfg.URL)
	}
}

// connectBroker makes the one bounded first connect: an unreachable
// broker, refused credentials or a bad certificate end the run (exit 1)
// before anything is published.
func connectBroker(ctx context.Context, a *app, o *rolloutOptions, brokerURL, clientID string) (*brokerSession, error) {
	cfg := broker.Config{URL: brokerURL, Username: o.MQTTUser, Password: o.password, CAFile: o.MQTTCA,
		ClientID: clientID, Logger: a.log, OnLink: func(up bool, err error) {
			if up {
				a.log.Warn("the broker is back: the rollout goes on", "broker", brokerURL)
				return
			}
			a.log.Warn("lost the broker: the rollout waits and reconnects", "broker", brokerURL, "err", err)
		}}
	cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	c, err := broker.Connect(cctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := a.secrets.Redact(err.Error()) + "; nothing was published or sent"
		if errors.Is(err, broker.ErrBadCredentials) && (o.MQTTUser == "" || o.password.IsZero()) {
			// It refused what was not given: say what to give.
			hint := "give --mqtt-user and --mqtt-password-file (or OTS_OTA_MQTT_PASSWORD)"
			if o.MQTTUser != "" {
				hint = "give the password for --mqtt-user " + o.MQTTUser + ": --mqtt-password-file (or OTS_OTA_MQTT_PASSWORD)"
			}
			fmt.Fprintln(a.io.ErrOut, "ots-ota: "+msg)
			fmt.Fprintln(a.io.ErrOut, "ots-ota: hint: "+hint)
			return nil, silentError{code: ExitFailed, json: ptr(newErrorObject("broker", msg, hint))}
		}
		return nil, withCode("broker", errors.New(msg))
	}
	return &brokerSession{Client: c, cfg: cfg, log: a.log}, nil
}

// rolloutImage reads FIRMWARE once and applies the inspect rules, as push
// does: a wrong file is one line per finding, exit 1, nothing sent.
func rolloutImage(ctx context.Context, a *app, path string) (*upload.Firmware, error) {
	data, err := readRegular(ctx, path, maxFileRead)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, withCode("unreadable", fmt.Errorf("firmware: %v; nothing was sent", err))
	case len(data) == 0:
		return nil, withCode(image.CodeNotApp, fmt.Errorf("%s is empty; nothing was sent", path))
	}
	rep := image.Validate(data, image.Policy{})
	st := style{on: a.io.ErrTTY && !a.opts.NoColor && !a.io.NoColorEnv}
	if len(rep.Errors) > 0 {
		for _, f := range rep.Errors {
			fmt.Fprintf(a.io.ErrOut, "%s %s: %s\n", st.red("error:"), path, f.Message)
			if f.Hint != "" {
				fmt.Fprintf(a.io.ErrOut, "       %s\n", f.Hint)
			}
			hint := f.Hint
			if hint == "" {
				hint = "see 'ots-ota inspect " + path + "'"
			}
			a.jsonFailure(newErrorObject(f.Code, path+": "+f.Message+"; nothing was sent", hint))
		}
		fmt.Fprintf(a.io.ErrOut, "ots-ota: %s is not uploadable; nothing was sent (see 'ots-ota inspect %s')\n", path, path)
		jsonRolloutImage(a, upload.NewFirmware(path, data, false))
		return nil, silentError{code: ExitFailed}
	}
	if !a.opts.Quiet {
		for _, f := range rep.Warnings {
			fmt.Fprintf(a.io.ErrOut, "%s %s: %s\n", st.yellow("warning:"), path, f.Message)
		}
	}
	return upload.NewFirmware(path, data, false), nil
}

// rolloutRun runs the engine and renders it as push renders its runs.
func rolloutRun(ctx context.Context, a *app, cfg rollout.Config, fw *upload.Firmware, st *rollout.State, resumed bool) error {
	id := st.ID()
	s := rolloutSummaryOf(a)
	if s != nil {
		s.ID, s.Resumed = &id, &resumed
	}
	if !a.opts.Quiet {
		what := "started"
		if resumed {
			what = "resumed"
		}
		fmt.Fprintf(a.io.ErrOut, "ots-ota: rollout %s %s: %d device(s); state in %s\n", id, what, len(cfg.Devices), st.Path())
	}
	targets := make([]upload.Target, len(cfg.Devices))
	for i, d := range cfg.Devices {
		targets[i] = rolloutTarget(d, cfg.Protocol)
	}
	r := newRolloutRenderer(a, fw, targets, cfg.Retries)
	cfg.OnEvent, cfg.OnWave, cfg.Logger = r.event, r.wave, a.log
	// The built-in file server's line per image request is Info (-v), a
	// manifest poll Debug (-vv): the default output stays quiet however
	// many devices fetch.
	cfg.Serve.Logger = a.log
	start := time.Now()
	results, err := rollout.Run(ctx, cfg)
	r.close()
	jsonRolloutRan(a, st)
	if err != nil && len(results) == 0 {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return ctx.Err()
		}
		msg := a.secrets.Redact(rootCause(err).Error())
		// A new rollout that failed before any device was commanded has
		// nothing to go on with: a file left "interrupted" would be what
		// every bare --resume picks, and fails on, again.
		if !resumed && st.Untouched() {
			if derr := st.Discard(); derr != nil {
				a.log.Warn(derr.Error())
			} else {
				msg += "; no device was commanded, and the rollout's state is dropped"
			}
		}
		return withCode("rollout", errors.New(msg))
	}
	code := pushExitCode(results, interrupted(ctx), false)
	r.summary(results, time.Since(start), code)
	if code == ExitCancelled && !a.opts.Quiet {
		fmt.Fprintf(a.io.ErrOut, "ots-ota: rollout %s interrupted; devices already commanded will be watched, never commanded again: ots-ota rollout --resume %s\n", id, id)
	}
	if code == ExitOK {
		return nil
	}
	e := pushFailure(results, code)
	if code == ExitCancelled {
		e = ptr(newErrorObject("interrupted", "interrupted: the rollout stopped; its state is kept", "go on with: ots-ota rollout --resume "+id))
	}
	return silentError{code: code, json: e}
}

// rolloutTarget is a device as the fleet view keys it: its topic.
func rolloutTarget(d rollout.Device, p upload.Protocol) upload.Target {
	name := d.Name
	if name == "" {
		name = d.Topic
	}
	return upload.Target{Name: name, Host: d.Topic, Protocol: p}
}

// resumeRollout goes on with a rollout from its state file.
func resumeRollout(ctx context.Context, a *app, o *rolloutOptions) error {
	rolloutSummaryOf(a)
	st, err := rollout.OpenState(o.StateDir, o.ResumeID)
	if err != nil {
		return withCode("state", err)
	}
	defer st.Close()
	rec := st.Record()
	if rec.Finished {
		return withCode("state", fmt.Errorf("rollout %s has finished: nothing to resume (ots-ota rollout status %s)", rec.ID, rec.ID))
	}
	fw, err := rolloutImage(ctx, a, rec.Firmware.Path)
	if err != nil {
		return err
	}
	jsonRolloutImage(a, fw)
	if sum := sha256.Sum256(fw.Data); hex.EncodeToString(sum[:]) != rec.Firmware.SHA256 {
		return withCode("state", fmt.Errorf("%s changed since rollout %s started: devices may already run the old one; start a new rollout for the new file", rec.Firmware.Path, rec.ID))
	}
	meta, err := rec.Meta()
	if err != nil {
		return withCode("state", fmt.Errorf("rollout %s: %v", rec.ID, err))
	}
	if meta.Family == "esphome" && a.typed("retries") {
		return a.flagError("retries", "%s", esphomeNoRetries)
	}
	if err := o.resumeSettings(a, st, meta.Settings); err != nil {
		return withCode("state", fmt.Errorf("%v; nothing was sent", err))
	}
	o.Broker, o.Family, o.ExpectVersion, o.PublicURL = meta.Broker, meta.Family, meta.Expect, meta.PublicURL
	spec, err := o.resumeOptions(a, meta)
	if err != nil {
		return err
	}
	store, err := o.openStore(ctx, a, spec)
	if err != nil {
		return err
	}
	client, err := connectBroker(ctx, a, o, meta.Broker, meta.ClientID)
	if err != nil {
		return err
	}
	defer func() { client.end(st.Record().Finished) }()
	family := o.family(a, client.Client)
	cfg := o.engineConfig(family, st, meta.Devices, meta.Firmware)
	cfg.Plan, cfg.Expect, cfg.PublicURL = meta.Plan, meta.Expect, meta.PublicURL
	if store != nil {
		cfg.Store = store
	} else {
		// The same address and port as before: devices in flight may
		// still fetch the URL they were told.
		cfg.Serve.Addr = rec.Serve.Bound
		if cfg.Serve.Addr == "" {
			cfg.Serve.Addr = meta.ServeAddr
		}
	}
	return rolloutRun(ctx, a, cfg, fw, st, true)
}

// listSome is up to n of names, then "+k more".
func listSome(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + fmt.Sprintf(" +%d more", len(names)-n)
}
