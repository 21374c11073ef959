package cmd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/inventory"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/rollout/esphome"
	"github.com/ots-ota/ots-ota/rollout/tasmota"
	"github.com/ots-ota/ots-ota/store"
	"github.com/ots-ota/ots-ota/store/s3"
	"github.com/ots-ota/ots-ota/upload"
)

// rollout's ESPHome and S3 flags, and their checks: every bad value or
// combination is a usage error (exit 2) before anything is read from the
// broker or the store.

// defaultManifest is the manifest's name when neither --manifest nor the
// inventory's manifest: gives one.
const defaultManifest = "manifest.json"

// esphomeChipFamilies are the chipFamily values ESPHome's http_request
// update compares with the variant it was built for (its manifest's
// builds[].chipFamily), for the chips ots-ota updates.
var esphomeChipFamilies = []string{"ESP32", "ESP32-C2", "ESP32-C3", "ESP32-C5", "ESP32-C6", "ESP32-C61", "ESP32-H2",
	"ESP32-P4", "ESP32-S2", "ESP32-S3", "ESP8266"}

// storeSpec is --store and what goes with it, resolved.
type storeSpec struct {
	URL       string // s3://bucket[/prefix] (never a secret)
	Bucket    string
	Prefix    string // "" or "a/b", no leading or trailing '/'
	Endpoint  string // http(s)://host[:port]; "" = AWS S3
	Region    string
	AccessKey string
	Secret    auth.Secret
}

func (o *rolloutOptions) addESPHomeFlags(c *cobra.Command) {
	f := c.Flags()
	f.DurationVar(&o.CheckWait, "check-wait", 10*time.Minute, "esphome: how long a device may take to see the manifest (its update_interval) before it counts as failed, uncommanded")
	f.StringVar(&o.Manifest, "manifest", defaultManifest, "esphome: the name of the manifest devices poll, below --public-url or the store (the inventory's manifest: wins)")
	f.StringVar(&o.ChipFamily, "chip-family", "", "esphome: the manifest's chipFamily (ESP32, ESP32-S3, ESP8266, …; default: from the image's chip)")
	f.StringVar(&o.Store, "store", "", "publish the image (and manifests) in an S3-compatible bucket, s3://BUCKET[/PREFIX], which devices fetch through --public-url")
	f.StringVar(&o.S3Endpoint, "s3-endpoint", "", "with --store: the S3-compatible service's URL, http(s)://HOST[:PORT] (default: AWS S3)")
	f.StringVar(&o.S3Region, "s3-region", "", "with --store: the bucket's region (default: the service's)")
	f.StringVar(&o.S3AccessKey, "s3-access-key", "", "with --store: the access key ID (default: $AWS_ACCESS_KEY_ID)")
	f.StringVar(&o.S3SecretKey, "s3-secret-key", "", "with --store: the secret key (prefer OTS_OTA_S3_SECRET_KEY or --s3-secret-file: flags show in ps; default: $AWS_SECRET_ACCESS_KEY)")
	f.StringVar(&o.S3SecretFile, "s3-secret-file", "", "with --store: read the secret key from FILE (first line)")
	_ = c.MarkFlagFilename("s3-secret-file")
	_ = c.RegisterFlagCompletionFunc("chip-family", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return esphomeChipFamilies, cobra.ShellCompDirectiveNoFileComp
	})
}

// esphomeStability is --stability-window's default with --family esphome.
const esphomeStability = 90 * time.Second

// esphomeOnly are the flags that mean something only with --family esphome.
var esphomeOnly = []string{"check-wait", "manifest", "chip-family"}

// storeOnly are the flags that mean something only with --store.
var storeOnly = []string{"s3-endpoint", "s3-region", "s3-access-key", "s3-secret-key", "s3-secret-file"}

// checkExpect reads --expect-version as the family compares it.
func (o *rolloutOptions) checkExpect(a *app) error {
	v := o.ExpectVersion
	if o.Family == "esphome" {
		switch {
		case v == "":
			return usageErrorf("--expect-version is required with --family esphome: it is the manifest's version, and must equal the image's esphome: project: version: (devices compare the two as text)")
		case strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
			return a.flagError("expect-version", "no spaces or control characters: give the image's esphome: project: version: exactly")
		case len(v) > 64:
			return a.flagError("expect-version", "longer than 64 characters: give the image's esphome: project: version: exactly")
		}
		return nil
	}
	switch {
	case v == "":
		return usageErrorf("--expect-version is required with --family tasmota: a .bin does not tell what Tasmota will report, so no device could be seen updated and no wave could pass")
	case strings.Trim(v, "0123456789.") != "" || strings.Trim(v, ".") == "":
		return a.flagError("expect-version", "Tasmota reports its release as digits and dots (14.3.0 of \"14.3.0(tasmota)\"): give that")
	}
	return nil
}

// esphomeNoRetries is why --retries is refused with --family esphome.
const esphomeNoRetries = "does not go with --family esphome: ESPHome tells no failed download over MQTT, so a further INSTALL is never due"

// checkFamilyFlags refuses a flag of the other family, and reads the
// ESPHome ones.
func (o *rolloutOptions) checkFamilyFlags(a *app) error {
	if o.Family != "esphome" {
		for _, name := range esphomeOnly {
			if a.typed(name) {
				return a.flagError(name, "goes with --family esphome (ESPHome's update manifests)")
			}
		}
		return nil
	}
	if a.typed("full-topic") {
		return a.flagError("full-topic", "is Tasmota's FullTopic: ESPHome devices are named by their MQTT topic prefix (mqtt_topic: in the inventory)")
	}
	if a.typed("retries") {
		return a.flagError("retries", "%s", esphomeNoRetries)
	}
	if !a.isSet("stability-window") {
		// ESP32 ESPHome marks a new image good after a minute up
		// (safe_mode's boot_is_good_after): a crash before that boots the
		// old one again, which a shorter window would not wait for.
		o.Stability = esphomeStability
	}
	if o.CheckWait <= 0 {
		return a.flagError("check-wait", "must be positive: devices see the manifest only at their next check (update_interval)")
	}
	if err := inventory.CheckManifest(o.Manifest); err != nil {
		return a.flagError("manifest", "%v", err)
	}
	if o.ChipFamily != "" && !slices.Contains(esphomeChipFamilies, o.ChipFamily) {
		if c := chipFamilyOf(o.ChipFamily); c != "" {
			return a.flagError("chip-family", "ESPHome spells it %s", c)
		}
		return a.flagError("chip-family", "want one of %s", strings.Join(esphomeChipFamilies, ", "))
	}
	return nil
}

// chipFamilyOf is ESPHome's spelling of a chip name given another way
// ("esp32s3", "esp32-s3"), "" when it names none.
func chipFamilyOf(s string) string {
	norm := func(x string) string { return strings.ReplaceAll(strings.ToUpper(x), "-", "") }
	for _, c := range esphomeChipFamilies {
		if norm(c) == norm(s) {
			return c
		}
	}
	return ""
}

// checkStore reads --store and its credentials, and what the devices
// fetch from: the store through --public-url, or the built-in server.
func (o *rolloutOptions) checkStore(a *app) error {
	if o.Store == "" {
		for _, name := range storeOnly {
			if a.typed(name) {
				return a.flagError(name, "goes with --store")
			}
		}
		if o.Family == "esphome" {
			ap, err := parseServeAddr(o.ServeAddr)
			if o.ServeAddr == "" || err != nil || ap.Port() == 0 {
				return usageErrorf("--family esphome needs --serve-addr IP:PORT (or --store): the manifest's URL is built into the devices, so its port must stay the same")
			}
		}
		return nil
	}
	bucket, prefix, err := s3.ParseURL(o.Store)
	if err != nil {
		return usageErrorf("--%v", err) // "store "s3://…": bucket …"
	}
	if a.typed("serve-addr") {
		return usageErrorf("--serve-addr goes without --store: with --store devices fetch from the store, through --public-url")
	}
	if o.PublicURL == "" {
		return usageErrorf("--store needs --public-url: the base URL devices fetch the store's objects from (a CDN or proxy you run in front of the bucket: the objects are private)")
	}
	endpoint := ""
	if o.S3Endpoint != "" {
		if endpoint, err = checkEndpoint(o.S3Endpoint); err != nil {
			return usageErrorf("--s3-endpoint %s: %v", auth.StripUserinfo(o.S3Endpoint), err)
		}
	}
	if strings.IndexFunc(o.S3Region, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '/' }) >= 0 {
		return a.flagError("s3-region", "a region name has no spaces or '/' (us-east-1, eu-central-1)")
	}
	spec := &storeSpec{URL: "s3://" + bucket, Bucket: bucket, Prefix: prefix, Endpoint: endpoint, Region: o.S3Region}
	if prefix != "" {
		spec.URL += "/" + prefix
	}
	if err := o.storeCredentials(a, spec); err != nil {
		return err
	}
	o.store = spec
	return nil
}

// storeCredentials takes the store's access key and secret: --s3-access-key
// (OTS_OTA_S3_ACCESS_KEY) else AWS_ACCESS_KEY_ID; --s3-secret-key
// (OTS_OTA_S3_SECRET_KEY) or --s3-secret-file, else AWS_SECRET_ACCESS_KEY.
// The secret joins the run's secrets: never printed.
func (o *rolloutOptions) storeCredentials(a *app, spec *storeSpec) error {
	keep, err := exclusive(a, "s3-secret-key", "s3-secret-file")
	if err != nil {
		return err
	}
	spec.Secret = auth.NewSecret(o.S3SecretKey)
	if o.S3SecretFile != "" && keep != "s3-secret-key" {
		if spec.Secret, err = readSecretFile(o.S3SecretFile); err != nil {
			return usageErrorf("--s3-secret-file: %v", err)
		}
	}
	if spec.Secret.IsZero() {
		spec.Secret = auth.NewSecret(os.Getenv("AWS_SECRET_ACCESS_KEY"))
	}
	spec.AccessKey = o.S3AccessKey
	if spec.AccessKey == "" {
		spec.AccessKey = os.Getenv("AWS_ACCESS_KEY_ID")
	}
	a.secrets.Add(spec.Secret)
	if spec.AccessKey == "" || spec.Secret.IsZero() {
		return usageErrorf("%s needs its credentials: OTS_OTA_S3_ACCESS_KEY and OTS_OTA_S3_SECRET_KEY (or --s3-secret-file FILE), else AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", spec.URL)
	}
	if strings.IndexFunc(spec.AccessKey, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return usageErrorf("the S3 access key ID has a space or control character: check --s3-access-key (OTS_OTA_S3_ACCESS_KEY, AWS_ACCESS_KEY_ID)")
	}
	return nil
}

// checkEndpoint reads --s3-endpoint: http(s)://HOST[:PORT], nothing more.
func checkEndpoint(s string) (string, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.Hostname() == "":
		return "", errors.New("not a URL like https://HOST[:PORT]")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("scheme %q: want https:// (or http:// for a store on this host or a LAN)", u.Scheme)
	case u.User != nil:
		return "", errors.New("no user:password@ here: give the credentials with OTS_OTA_S3_ACCESS_KEY and OTS_OTA_S3_SECRET_KEY")
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return "", errors.New("no path or query: the bucket is --store's")
	}
	return u.Scheme + "://" + u.Host, nil
}

// storeFolder stands for the store's content-addressed folder of an image
// when the URLs' length is checked: <stem>-<20 base32 characters>.
func storeFolder(name string) string {
	stem, _, _ := strings.Cut(name, ".")
	if len(stem) > 24 { // store/s3 keeps the folder's stem short
		stem = strings.TrimRight(stem[:24], "-_")
	}
	return stem + "-" + strings.Repeat("a", 20)
}

// protocolOf labels a family's results.
func protocolOf(family string) upload.Protocol {
	if family == "esphome" {
		return "esphome-mqtt"
	}
	return "tasmota-mqtt"
}

// family is the rollout's device family over the broker client.
func (o *rolloutOptions) family(a *app, c *broker.Client) rollout.Family {
	if o.Family == "esphome" {
		return esphome.New(esphome.Config{Client: c, Expect: o.ExpectVersion, CheckWait: o.CheckWait, ChipFamily: o.ChipFamily,
			Logger: a.log})
	}
	return tasmota.New(c, tasmota.Options{FullTopic: o.FullTopic, Logger: a.log})
}

// familyOptions are the family's flags the state file keeps for
// --resume (Meta.FamilyOptions).
func (o *rolloutOptions) familyOptions() map[string]string {
	if o.Family != "esphome" {
		return nil
	}
	m := map[string]string{"check_wait": o.CheckWait.String()}
	if o.ChipFamily != "" {
		m["chip_family"] = o.ChipFamily
	}
	return m
}

// storeMeta is where the opened store st is, for the state file: never a
// credential.
func (o *rolloutOptions) storeMeta(st store.Store) *rollout.StoreMeta {
	if o.store == nil || st == nil {
		return nil
	}
	return &rollout.StoreMeta{URL: st.String(), Endpoint: o.store.Endpoint, Region: o.store.Region, PublicURL: o.PublicURL}
}

// resumeOptions takes back what the state file kept of the family's
// flags and the store, and the store's credentials (given again: the
// state file never holds them).
func (o *rolloutOptions) resumeOptions(a *app, m rollout.Meta) (*storeSpec, error) {
	if v, ok := m.FamilyOptions["check_wait"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, withCode("state", fmt.Errorf("the state file's check_wait %q is not a duration", v))
		}
		o.CheckWait = d
	}
	o.ChipFamily = m.FamilyOptions["chip_family"]
	sm := m.Store
	if sm == nil {
		for _, name := range storeOnly {
			if a.typed(name) {
				return nil, a.flagError(name, "goes with a rollout published to a --store: this one was not")
			}
		}
		return nil, nil
	}
	bucket, prefix, err := s3.ParseURL(sm.URL)
	if err != nil {
		return nil, withCode("state", fmt.Errorf("the state file's store: %v", err))
	}
	spec := &storeSpec{URL: sm.URL, Bucket: bucket, Prefix: prefix, Endpoint: sm.Endpoint, Region: sm.Region}
	if sm.PublicURL != "" {
		o.PublicURL = sm.PublicURL
	}
	if err := o.storeCredentials(a, spec); err != nil {
		return nil, err
	}
	return spec, nil
}

// openStore opens the bucket (nil spec: none), checking that it exists and
// takes the credentials, before anything is published: exit 1 otherwise.
func (o *rolloutOptions) openStore(ctx context.Context, a *app, spec *storeSpec) (store.Store, error) {
	if spec == nil {
		return nil, nil
	}
	cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	s, err := s3.Open(cctx, s3.Config{Bucket: spec.Bucket, Prefix: spec.Prefix, Endpoint: spec.Endpoint, Region: spec.Region,
		AccessKey: spec.AccessKey, SecretKey: spec.Secret, PublicURL: o.PublicURL})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, withCode("store", errors.New(a.secrets.Redact(oneLine(rootCause(err).Error()))+"; nothing was published or sent"))
	}
	return s, nil
}

// sayManifests tells, once, the URL of each manifest the devices poll:
// the one built into them (update: source:).
func (o *rolloutOptions) sayManifests(a *app, devs []rollout.Device, serve string) {
	if o.Family != "esphome" || a.opts.Quiet {
		return
	}
	count := map[string]int{}
	for _, d := range devs {
		count[cmp.Or(d.Manifest, defaultManifest)]++
	}
	base := o.PublicURL
	if base == "" {
		base = "http://" + serve
	}
	for _, n := range slices.Sorted(maps.Keys(count)) {
		fmt.Fprintf(a.io.ErrOut, "ots-ota: %d device(s) poll %s/%s (their update: source:)\n", count[n], base, n)
	}
}
