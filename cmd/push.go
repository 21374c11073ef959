package cmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/discover"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/inventory"
	"github.com/ots-ota/ots-ota/upload"
)

type pushOptions struct {
	Firmware string
	Targets  []string

	Protocol     string
	Port         int
	WebPort      int
	Token        string
	User         string
	Password     string
	PasswordFile string

	Parallel       int
	Retries        int
	ConnectTimeout time.Duration
	IdleTimeout    time.Duration
	Timeout        time.Duration
	VerifyTimeout  time.Duration
	Stability      time.Duration
	NoVerify       bool
	NoWaitValid    bool
	RequireVerify  bool

	Canary           int
	CanaryUnverified bool
	ExpectVersion    string
	ExpectConfigHash string
	MaxFailures      string
	DryRun           bool
	Force            bool
	Reinstall        bool

	policyFlags
	Filesystem bool

	HostIP      string
	HostPort    int
	MD5Password bool

	ViaURL    bool
	ServeAddr string

	sel    selectOptions
	mdns   mdnsOptions
	Browse time.Duration

	plan *pushPlan // resolved by validate
}

const pushLong = `Push validates FIRMWARE locally (the inspect rules), then sends it to every
TARGET in parallel and verifies that each device came back running it.

A TARGET is an IP address, a host name, HOST:PORT, a NAME.local name, an inventory
name, or a URL (http://host:3232/update, http://host/ota/upload). --all adds every
device mDNS finds and the inventory lists; --group NAME an inventory group (the
TARGETs "all" and "group:NAME" mean the same, for PlatformIO's upload_port). Targets
whose resolved addresses meet on one port are one device, updated once under the first
one's name. A URL's user:password@ are that device's HTTP Basic credentials. mDNS is
used only for --all, --group, .local and inventory names, and with --protocol esphome
(an ESPHome device tells its platform and build only in its mDNS record), on
--interface (default every multicast interface); otherwise plain addresses send no
multicast.

Before any device is touched the image must pass inspect's checks (--chip,
--max-size, --partitions as in inspect; --force overrides only the chip, project
and size expectations, never corruption). Then, per device, from what it tells
(/ota/status, /api/status, mDNS TXT chip or board): another chip's or project's
image is refused (unless --force; an ESP32-family image to an ESP8266 or the
reverse always), a device already running this image is skipped
(unless --reinstall), and the image is checked against the device's slot.
To WLED (--protocol wled) an image goes only when its WLED release metadata names
the device's release (GET /json/info); --force skips that check and sends
skipValidation=1, so WLED skips its own, with a warning.

The protocol: --protocol, a URL or the inventory's protocol:, else mDNS, else
a TCP connect and, to tell HTTP families apart, a few read-only GETs
(docs/protocols/README.md). A device recognised as a family ots-ota does not
speak yet (ElegantOTA v2, a web uploader it cannot name) is refused before anything is sent.
ESPHome is chosen by auto only from its _esphomelib._tcp mDNS record or the
inventory's protocol: esphome; its OTA port is its platform's default (ESP32
3232, ESP8266 8266) unless HOST:PORT or the inventory says otherwise. An ESPHome
device tells only what its YAML sets: --expect-version is compared with its TXT
project_version, --expect-config-hash with its TXT config_hash; without either
its update ends unverified.

Outcomes: updated (the image was seen running after a restart or a change of
image, and valid where the device tells its state), rolled-back (another image
runs: the old one, factory or a third), unchanged, unreachable, unverified
(what it tells cannot show it; the reason says why), failed (with the device's
words), refused, skipped, accepted (--no-verify), not-started (canary or
--max-failures stopped the rollout), cancelled (interrupted), planned
(--dry-run: would be updated; nothing sent).

Exit status:
  0    every device updated, skipped, accepted (--no-verify) or unverified
  1    a device failed, was refused, rolled back, stayed unchanged or was
       unreachable, or a gate left devices not started; or the image failed
       its local checks (nothing sent)
  2    usage error, before anything was sent
  3    with --require-verified: a device could not show its version (1 wins)
  130  interrupted (Ctrl-C); the summary is still printed`

func newPushCmd(a *app) *cobra.Command {
	o := &pushOptions{}
	c := &cobra.Command{
		Use:   "push FIRMWARE TARGET... | --all | --group NAME",
		Short: "Send a firmware image to devices in parallel and verify they run it",
		Long:  pushLong,
		Example: `  ots-ota push --token "$TOKEN" .pio/build/esp32-s3-dev/firmware.bin 192.168.1.40
  ots-ota push --password "$PW" --canary 1 --max-failures 10% firmware.bin host1 host2 host3
  ots-ota push --protocol espota --port 8266 firmware.bin esp8266.local
  ots-ota push --protocol esphome --expect-config-hash 1a2b3c4d --password "$PW" firmware.ota.bin kitchen.local
  ots-ota push --dry-run firmware.bin 192.168.1.40 192.168.1.41`,
		Args: argsMin(1, "a FIRMWARE file, then TARGETs (or --all / --group)"),
	}
	c.RunE = run(a, o, runPush)
	c.ValidArgsFunction = completePush(a)
	o.policyFlags.bind(c)
	f := c.Flags()
	f.StringVar(&o.Protocol, "protocol", "auto", "auto (decide per device: docs/protocols/README.md), http (the image as a raw POST body: seed and OTS firmware), espota (ArduinoOTA), form (a multipart POST /update: HTTPUpdateServer, ESP8266HTTPUpdateServer, ESPEasy), elegantota (ElegantOTA v3), wled (WLED's update page), tasmota (Tasmota's upgrade page, or with --via-url its OtaUrl) or esphome (ESPHome's native OTA); wins over the inventory's protocol:")
	f.IntVar(&o.Port, "port", 0, "OTA port of targets given without one (default 3232; ESP8266 espota devices use 8266)")
	f.IntVar(&o.WebPort, "web-port", 0, "web port for /api/status (default 80)")
	f.StringVar(&o.Token, "token", "", "HTTP Bearer token (also $OTS_OTA_TOKEN or the config file)")
	f.StringVar(&o.User, "user", "", "HTTP Basic user (with --password)")
	f.StringVar(&o.Password, "password", "", "espota password; HTTP Bearer secret when no --token/--user (also $OTS_OTA_PASSWORD)")
	f.StringVar(&o.PasswordFile, "password-file", "", "read the password from FILE (first line)")
	f.IntVar(&o.Parallel, "parallel", 8, "devices updated at once (0 = all)")
	f.IntVar(&o.Retries, "retries", 3, "further tries after a transient failure (never after auth or image rejections)")
	f.DurationVar(&o.ConnectTimeout, "connect-timeout", 5*time.Second, "TCP connect timeout")
	f.DurationVar(&o.IdleTimeout, "idle-timeout", 30*time.Second, "give up when the device takes nothing for this long (must outlast its slot erase)")
	f.DurationVar(&o.Timeout, "timeout", 0, "bound on each device's uploads, all tries (0 = per try: connect + idle timeout + the image at 8 KiB/s)")
	f.DurationVar(&o.VerifyTimeout, "verify-timeout", 90*time.Second, "how long to wait for a device to come back valid on the new image")
	f.DurationVar(&o.Stability, "stability-window", 30*time.Second, "how long devices take to mark a new image valid; a busy device is retried after it")
	f.BoolVar(&o.NoVerify, "no-verify", false, "stop at the device's acceptance (outcome accepted)")
	f.BoolVar(&o.NoWaitValid, "no-wait-valid", false, "stop verifying once the new version runs, before it is marked valid")
	f.BoolVar(&o.RequireVerify, "require-verified", false, "exit 3 when a device could not show its version")
	f.IntVar(&o.Canary, "canary", 0, "update N devices first; the rest only if all of them end updated")
	f.BoolVar(&o.CanaryUnverified, "canary-accept-unverified", false, "let an unverified canary (a device that shows no version) pass the --canary gate")
	f.StringVar(&o.ExpectVersion, "expect-version", "", "the version string devices report once they run the image (default: the image's own; ESPHome: its TXT project_version)")
	f.StringVar(&o.ExpectConfigHash, "expect-config-hash", "", "ESPHome: the config hash devices report once they run the image (8 hex digits, as esphome config-hash prints; TXT config_hash)")
	f.StringVar(&o.MaxFailures, "max-failures", "", "stop starting devices once more than N (or P%) have failed")
	f.BoolVar(&o.DryRun, "dry-run", false, "print the plan (protocol, running version, skips, refusals) and send nothing")
	f.BoolVar(&o.Force, "force", false, "send despite chip, project or slot size mismatches, or WLED's release check (never a corrupt image)")
	f.BoolVar(&o.Reinstall, "reinstall", false, "send even to devices already running this image")
	f.BoolVar(&o.Filesystem, "filesystem", false, "send a filesystem image (SPIFFS/LittleFS) over espota, form or elegantota; skips the app checks")
	f.StringVar(&o.HostIP, "host-ip", "", "espota: local address devices connect back to (default: the one that routes to the device)")
	f.IntVar(&o.HostPort, "host-port", 0, "espota: local port devices connect back to (default: random)")
	f.BoolVar(&o.MD5Password, "md5-password", false, "espota: hash the password with MD5 only (espota.py's -m; devices that store an MD5 hash)")
	f.BoolVar(&o.ViaURL, "via-url", false, "tasmota: devices fetch the image (and a -minimal image beside it) from a file server push runs until it ends; for ESP32 safeboot layouts and the ESP8266 two-step upgrade")
	f.StringVar(&o.ServeAddr, "serve-addr", "", "with --via-url: the address the file server binds, IP or IP:PORT (default: the local address that routes to each device, any port)")
	f.DurationVar(&o.Browse, "browse-timeout", 2*time.Second, "how long mDNS may listen (with --all, --group, .local names)")
	o.sel.bind(c)
	_ = c.RegisterFlagCompletionFunc("group", completeGroups(a))
	o.mdns.bind(c, false)
	_ = c.MarkFlagFilename("password-file")
	_ = c.RegisterFlagCompletionFunc("protocol", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"auto", "http", "espota", "form", "elegantota", "wled", "tasmota", "esphome"}, cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

// protocolValues are the --protocol values push speaks (upload.ParseProtocol).
const protocolValues = "auto, http, espota, form, elegantota, wled, tasmota or esphome"

// pushPlan is everything validated before any work starts.
type pushPlan struct {
	inv     *inventory.Inventory
	mdns    discover.Config
	policy  image.Policy
	targets []upload.Target
	// targetCreds[i] is targets[i]'s own credentials (a URL's user:password@),
	// nil when it has none.
	targetCreds []*upload.Credentials
	opts        upload.Options
	proto       upload.Protocol
}

// validate checks every flag and argument before anything is read or
// sent; each error exits 2.
func (o *pushOptions) validate(a *app, args []string) error {
	o.Firmware = args[0]
	var err error
	if o.Targets, err = selectorTargets(&o.sel, args[1:]); err != nil {
		return err
	}
	if err := o.sel.validate(); err != nil {
		return err
	}
	p, err := o.check(a)
	if err != nil {
		return err
	}
	o.plan = p
	// The inventory and the mDNS set-up are checked before anything is sent.
	if p.inv, err = loadInventory(a); err != nil {
		return err
	}
	if o.sel.Group != "" {
		if _, err := p.inv.Group(o.sel.Group); err != nil {
			return usageError{err}
		}
	}
	// A named inventory device without an address is refused now.
	for _, t := range o.Targets {
		if d, ok := p.inv.Device(t); ok && d.MQTTOnly() {
			return usageError{discover.CheckArgs([]string{t}, p.inv)}
		}
	}
	if !o.sel.InventoryOnly {
		if p.mdns, err = o.mdns.config(a); err != nil {
			return err
		}
	}
	return nil
}

// parseConfigHash reads --expect-config-hash: ESPHome's config hash, 8 hex
// digits (esphome config-hash prints it; 0x and case are tolerated).
func parseConfigHash(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return "", nil
	}
	h := strings.TrimPrefix(s, "0x")
	if len(h) != 8 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%q is not a config hash (8 hex digits, as esphome config-hash prints)", s)
	}
	return h, nil
}

func (o *pushOptions) check(a *app) (*pushPlan, error) {
	p := &pushPlan{}
	var err error
	if p.proto, err = upload.ParseProtocol(o.Protocol); err != nil {
		if low := strings.ToLower(o.Protocol); low != o.Protocol {
			if _, e := upload.ParseProtocol(low); e == nil {
				return nil, a.flagError("protocol", "protocol names are lower case: --protocol %s", low)
			}
		}
		return nil, a.flagError("protocol", "want "+protocolValues)
	}
	if len(o.Targets) == 0 && !o.sel.All && o.sel.Group == "" {
		return nil, usageErrorf("no targets: give devices after FIRMWARE (IP, host, host:port, URL or inventory name), or --all or --group")
	}
	if o.Browse <= 0 {
		return nil, a.flagError("browse-timeout", "must be positive")
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"parallel", o.Parallel}, {"retries", o.Retries}, {"canary", o.Canary}, {"host-port", o.HostPort}, {"port", o.Port}, {"web-port", o.WebPort}} {
		if c.v < 0 {
			return nil, a.flagError(c.name, "must not be negative")
		}
	}
	if o.Port > 65535 || o.WebPort > 65535 || o.HostPort > 65535 {
		return nil, usageErrorf("port out of range (1–65535)")
	}
	for _, c := range []struct {
		name string
		v    time.Duration
	}{{"connect-timeout", o.ConnectTimeout}, {"idle-timeout", o.IdleTimeout}, {"timeout", o.Timeout}, {"verify-timeout", o.VerifyTimeout}, {"stability-window", o.Stability}} {
		if c.v < 0 {
			return nil, a.flagError(c.name, "must not be negative")
		}
	}
	// These have no "none" value: 0 would silently mean the default.
	for _, c := range []struct {
		name string
		v    time.Duration
	}{{"connect-timeout", o.ConnectTimeout}, {"idle-timeout", o.IdleTimeout}, {"verify-timeout", o.VerifyTimeout}} {
		if c.v == 0 {
			return nil, a.flagError(c.name, "must be positive")
		}
	}
	if o.CanaryUnverified && o.Canary <= 0 {
		return nil, a.flagError("canary-accept-unverified", "needs --canary N: without canaries there is no gate to pass")
	}
	configHash, err := parseConfigHash(o.ExpectConfigHash)
	if err != nil {
		return nil, a.flagError("expect-config-hash", "%v", err)
	}
	if configHash != "" && p.proto != upload.Auto && p.proto != upload.ESPHome {
		// --protocol wins over the inventory's: no device is ESPHome.
		return nil, a.flagError("expect-config-hash", "ESPHome's config hash (TXT config_hash), but --protocol is %s: drop it, or use --protocol esphome or auto", p.proto)
	}
	budget, err := upload.ParseFailureBudget(o.MaxFailures)
	if err != nil {
		return nil, a.flagError("max-failures", "%v", err)
	}
	if o.NoVerify && (o.RequireVerify || o.NoWaitValid) {
		// Either would be silently ignored: nothing is verified.
		other := "--require-verified"
		if !o.RequireVerify {
			other = "--no-wait-valid"
		}
		return nil, usageErrorf("--no-verify and %s do not go together: --no-verify verifies nothing", other)
	}
	if o.User != "" && o.Password == "" && o.PasswordFile == "" {
		return nil, usageErrorf("--user needs --password or --password-file (HTTP Basic auth)")
	}
	if o.Filesystem && p.proto == upload.HTTP {
		return nil, usageErrorf("--filesystem needs espota, form or elegantota: HTTP devices (seed and OTS firmware) have no filesystem upload")
	}
	if o.Filesystem && p.proto == upload.Tasmota {
		return nil, usageErrorf("--filesystem needs espota, form or elegantota: Tasmota's upgrade takes firmware only")
	}
	if o.HostIP != "" && net.ParseIP(o.HostIP) == nil {
		return nil, a.flagError("host-ip", "not an IP address")
	}
	if err := o.checkViaURL(a, p.proto); err != nil {
		return nil, err
	}
	if !o.Filesystem {
		if err := o.policyFlags.resolve(a); err != nil {
			return nil, err
		}
		p.policy = o.policyFlags.policy
	}
	keepPW, err := exclusive(a, "password", "password-file")
	if err != nil {
		return nil, err
	}
	for _, s := range o.Targets {
		t, c, err := parseTarget(s, o.Port, o.WebPort, p.proto)
		if err != nil {
			return nil, usageErrorf("target %q: %v", auth.StripUserinfo(s), err)
		}
		if c != nil {
			a.secrets.AddBasic(c.User, c.Password)
		}
		p.targets = append(p.targets, t)
		p.targetCreds = append(p.targetCreds, c)
	}
	cred := upload.Credentials{Token: auth.NewSecret(o.Token), User: o.User, Password: auth.NewSecret(o.Password)}
	if o.PasswordFile != "" && keepPW != "password" {
		pw, err := readSecretFile(o.PasswordFile)
		if err != nil {
			// Not flagError: it masks the value of a secret flag, and this
			// value is a path the message already names.
			return nil, usageErrorf("--password-file: %v", err)
		}
		cred.Password = pw
	}
	a.secrets.Add(cred.Token)
	a.secrets.AddBasic(cred.User, cred.Password)
	p.opts = upload.Options{
		Credentials: cred,
		Parallel:    o.Parallel, Retries: o.Retries, Timeout: o.Timeout,
		StabilityWindow: o.Stability, VerifyTimeout: o.VerifyTimeout,
		NoVerify: o.NoVerify, NoWaitValid: o.NoWaitValid,
		Canary: o.Canary, CanaryAcceptUnverified: o.CanaryUnverified, MaxFailures: budget,
		ExpectVersion:  o.ExpectVersion,
		ExpectBuild:    configHash,
		ConnectTimeout: o.ConnectTimeout, IdleTimeout: o.IdleTimeout,
		DryRun: o.DryRun, Force: o.Force, Reinstall: o.Reinstall,
		// Shorter than the 2-6 s a rebooting ESP32 stays silent, so the
		// silence is seen; a device on the LAN answers in milliseconds.
		ProbeTimeout: min(o.ConnectTimeout, time.Second),
	}
	return p, nil
}

// selectorTargets takes the TARGETs "all" and "group:NAME" as --all and
// --group NAME, for tools that can pass one upload port only (PlatformIO's
// upload_port); it returns the other targets.
func selectorTargets(sel *selectOptions, targets []string) ([]string, error) {
	var rest []string
	for _, t := range targets {
		name, ok := strings.CutPrefix(t, "group:")
		switch {
		case t == "all":
			sel.All = true
		case ok && name == "":
			return nil, usageErrorf("target %q: name the group (group:NAME)", t)
		case ok && sel.Group != "" && sel.Group != name:
			return nil, usageErrorf("target %q: one group at a time (already %s)", t, sel.Group)
		case ok:
			sel.Group = name
		default:
			rest = append(rest, t)
		}
	}
	return rest, nil
}

// readSecretFile reads the first line of a password file.
func readSecretFile(path string) (auth.Secret, error) {
	data, err := readRegular(context.Background(), path, 64<<10)
	if err != nil {
		return auth.Secret{}, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return auth.Secret{}, fmt.Errorf("%s is empty", path)
	}
	return auth.NewSecret(line), nil
}

// parseTarget reads one TARGET: IP, host, host:port, name.local or URL.
// A URL's user:password@ is the device's own HTTP Basic credentials (with
// an empty user, its Bearer secret), like --user and --password; the
// label (Name) leaves them out, and they are never printed.
func parseTarget(s string, port, webPort int, proto upload.Protocol) (upload.Target, *upload.Credentials, error) {
	t := upload.Target{Name: auth.StripUserinfo(s), Protocol: proto, Port: port, WebPort: webPort}
	s = strings.TrimSpace(s)
	if s == "" {
		return t, nil, errors.New("empty")
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			// url.Parse's error quotes the URL, credentials and all.
			return t, nil, errors.New("not a URL like http://host:3232/update")
		}
		if u.Scheme != "http" {
			return t, nil, fmt.Errorf("scheme %q: devices take plain http:// uploads", u.Scheme)
		}
		if proto == upload.Espota || proto == upload.ESPHome {
			return t, nil, fmt.Errorf("a URL names an HTTP upload, but --protocol is %s", proto)
		}
		var cred *upload.Credentials
		if u.User != nil {
			pw, ok := u.User.Password()
			if !ok || pw == "" {
				return t, nil, errors.New("the URL names a user without a password: give http://USER:PASSWORD@HOST/..., or --token")
			}
			cred = &upload.Credentials{User: u.User.Username(), Password: auth.NewSecret(pw)}
		}
		// A URL names raw HTTP, unless --protocol names a web uploader:
		// then it is that uploader's page (ElegantOTA's and
		// HTTPUpdateServer's users know their device by http://HOST/update).
		t.Protocol = upload.HTTP
		if proto == upload.Form || proto == upload.ElegantOTA || proto == upload.WLED || proto == upload.Tasmota {
			t.Protocol = proto
		}
		t.Host = u.Hostname()
		t.Port = 80
		if p := u.Port(); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return t, nil, fmt.Errorf("port %q out of range", p)
			}
			t.Port = n
		}
		if u.Path != "" && u.Path != "/" {
			t.Path = u.EscapedPath()
		}
		return t, cred, nil
	}
	if strings.Contains(s, "@") {
		return t, nil, errors.New("not an IP address or host name (credentials go in a URL, http://USER:PASSWORD@HOST/update, or --user and --password)")
	}
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return t, nil, fmt.Errorf("port %q out of range", p)
		}
		host, t.Port = h, n
	} else if strings.Count(s, ":") == 1 {
		return t, nil, errors.New("not HOST:PORT")
	}
	if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") {
		return t, nil, errors.New("not an IP address or host name") // "[::1": an unclosed bracket
	}
	host = strings.Trim(host, "[]")
	if host == "" || strings.ContainsAny(host, " /\\@?#") {
		return t, nil, errors.New("not an IP address or host name")
	}
	t.Host = host
	return t, nil, nil
}

// preflightImage reads FIRMWARE once and applies the inspect rules. It
// returns nil and prints the findings when the image must not be sent.
func preflightImage(ctx context.Context, a *app, o *pushOptions, p *pushPlan) (*upload.Firmware, error) {
	data, err := readRegular(ctx, o.Firmware, maxFileRead)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, withCode("unreadable", fmt.Errorf("firmware: %v; nothing was sent", err))
	case len(data) == 0:
		return nil, withCode(image.CodeNotApp, fmt.Errorf("%s is empty; nothing was sent", o.Firmware))
	}
	if o.Filesystem {
		return upload.NewFirmware(o.Firmware, data, true), nil
	}
	// ESP8266 images are checked too: only an esp8266/Arduino sketch (plain
	// or gzip) goes, and never to another chip family, whatever --force says.
	rep := image.Validate(data, p.policy)
	st := style{on: a.io.ErrTTY && !a.opts.NoColor && !a.io.NoColorEnv}
	var blocking []image.Finding
	for _, f := range rep.Errors {
		if o.Force && expectationCode(f.Code) {
			fmt.Fprintf(a.io.ErrOut, "%s %s: %s (sent anyway: --force)\n", st.yellow("warning:"), o.Firmware, f.Message)
			continue
		}
		blocking = append(blocking, f)
	}
	if len(blocking) > 0 {
		for _, f := range blocking {
			fmt.Fprintf(a.io.ErrOut, "%s %s: %s\n", st.red("error:"), o.Firmware, f.Message)
			if f.Hint != "" {
				fmt.Fprintf(a.io.ErrOut, "       %s\n", f.Hint)
			}
		}
		fmt.Fprintf(a.io.ErrOut, "ots-ota: %s is not uploadable; nothing was sent (see 'ots-ota inspect %s')\n", o.Firmware, o.Firmware)
		jsonNotUploadable(a, o, blocking, upload.NewFirmware(o.Firmware, data, false))
		return nil, silentError{code: ExitFailed}
	}
	if !a.opts.Quiet {
		for _, f := range rep.Warnings {
			fmt.Fprintf(a.io.ErrOut, "%s %s: %s\n", st.yellow("warning:"), o.Firmware, f.Message)
		}
	}
	return upload.NewFirmware(o.Firmware, data, false), nil
}

// jsonNotUploadable says with --json why the image was not sent: an error
// line per blocking finding, with inspect's code, and what the summary
// knows of the image.
func jsonNotUploadable(a *app, o *pushOptions, blocking []image.Finding, fw *upload.Firmware) {
	if !a.opts.JSON {
		return
	}
	for _, f := range blocking {
		hint := f.Hint
		if hint == "" {
			hint = "see 'ots-ota inspect " + o.Firmware + "'"
		}
		a.jsonFailure(newErrorObject(f.Code, o.Firmware+": "+f.Message+"; nothing was sent", hint))
	}
	jsonImageRead(a, o, fw, false)
}

// jsonImageRead says in the summary, with --json, what is known once the
// image was read: the image, --dry-run, whether the run was interrupted,
// and no devices yet. A run that ends before its rollout (no devices found,
// Ctrl-C while browsing) keeps it; the rollout's own summary replaces it.
func jsonImageRead(a *app, o *pushOptions, fw *upload.Firmware, interrupted bool) {
	if !a.opts.JSON {
		return
	}
	s := summaryAs[*pushSummary](a)
	s.Interrupted, s.DryRun, s.Counts, s.Devices = &interrupted, &o.DryRun, map[string]int{}, []resultLine{}
	fillFirmware(s, fw)
}

// expectationCode: findings about what the image is expected to match (the
// chip, the slot), which --force may override; never corruption.
func expectationCode(code string) bool {
	switch code {
	case image.CodeChipMismatch, image.CodeTooLarge:
		return true
	}
	return false
}

func runPush(ctx context.Context, a *app, o *pushOptions) error {
	p := o.plan
	fw, err := preflightImage(ctx, a, o, p)
	if err != nil {
		return err
	}
	jsonImageRead(a, o, fw, false)
	pt, err := o.resolveTargets(ctx, a, p)
	if err != nil {
		// As Execute reads it: exit 130.
		jsonImageRead(a, o, fw, ctx.Err() != nil && errors.Is(err, ctx.Err()) || exitCode(err) == ExitCancelled)
		return err
	}
	if a.secrets.HasShort() {
		a.log.Warn(fmt.Sprintf("a password or token shorter than %d bytes cannot be hidden reliably: output hides it only where it stands exactly as it is", auth.MinHiddenLen))
	}
	opts := p.opts
	opts.Logger = a.log
	opts.CredentialsFor = pt.credentialsFor
	opts.Observer = &upload.DeviceObserver{Timeout: opts.ProbeTimeout, TXT: pt.txt, ExpectVersion: opts.ExpectVersion,
		// Tasmota's Status 0 behind a web password needs the device's.
		Credentials: func(t upload.Target) upload.Credentials {
			if c, ok := pt.credentialsFor(t); ok {
				return c
			}
			return opts.Credentials
		}}
	transports, closeTransports, err := pushTransports(o, a.log)
	if err != nil {
		return err
	}
	defer closeTransports()
	opts.Transports = transports
	// The detection table decides every device's protocol, the user's
	// word included (docs/protocols/README.md).
	// What it learned (family, chip, a web uploader's web port) goes into
	// the target.
	opts.Detect = func(ctx context.Context, t upload.Target) (upload.Decision, error) {
		d, err := upload.ChooseProtocol(ctx, t, pt.hints[t.Addr()], o.ConnectTimeout)
		a.log.Debug("protocol decided", "device", t.Name, "protocol", d.Protocol, "family", d.Family, "chip", d.Chip, "port", d.Port, "why", d.Why, "err", err)
		return d, err
	}
	if len(pt.targets)+len(pt.failed) == 0 {
		msg, hint := "no devices found", "try a longer --browse-timeout, --interface, or the inventory"
		if pt.leftOut > 0 {
			// Found, but ESPHome devices take only an image built from
			// their own YAML: --all takes them only when asked.
			msg = fmt.Sprintf("no devices to update: %d ESPHome device(s) found were left out (each takes only an image built from its own YAML)", pt.leftOut)
			hint = "include them with --protocol esphome or --service _esphomelib._tcp"
		} else if pt.mqttOnly > 0 {
			msg = fmt.Sprintf("no devices to update: %d inventory device(s) have no address (reached over MQTT only)", pt.mqttOnly)
			hint = "update them with ots-ota rollout, or give them address: in the inventory"
		}
		fmt.Fprintln(a.io.ErrOut, "ots-ota: "+msg+"; "+hint)
		return silentError{code: ExitFailed, json: ptr(newErrorObject("no_devices", msg, hint))}
	}
	r := newPushRenderer(a, fw, upload.Merge(pt.targets), opts.Retries)
	r.failedBefore(pt.failed)
	opts.OnEvent = r.event
	start := time.Now()
	var results []upload.Result
	if len(pt.targets) > 0 {
		results = upload.Run(ctx, fw, pt.targets, opts)
	}
	results = append(results, pt.failed...)
	r.close()
	code := pushExitCode(results, interrupted(ctx), o.RequireVerify)
	r.summary(results, time.Since(start), code, o.DryRun)
	if code == ExitOK {
		return nil
	}
	return silentError{code: code, json: pushFailure(results, code)}
}

// pushExitCode applies the exit code rules: 130 after an interrupt, then 1
// for any bad outcome or a device a gate left not started (a failed canary,
// --max-failures), then 3 for unverified devices with --require-verified.
func pushExitCode(results []upload.Result, interrupted, requireVerified bool) int {
	if interrupted {
		return ExitCancelled
	}
	bad, unverified := false, false
	for _, r := range results {
		bad = bad || r.Outcome.Bad() || r.Outcome == upload.OutcomeNotStarted
		unverified = unverified || r.Outcome == upload.OutcomeUnverified
	}
	switch {
	case bad:
		return ExitFailed
	case unverified && requireVerified:
		return ExitUnverified
	}
	return ExitOK
}
