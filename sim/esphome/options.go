package esphome

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// OptionKeys are the keys ParseOption takes, in documentation order.
var OptionKeys = []string{"version", "extended", "auth", "compression", "mode", "noise", "partition-access",
	"fail", "fail-count", "handshake-timeout", "data-timeout", "release", "project", "friendly-name",
	"api-encryption", "config-hash", "mac", "identity"}

// ParseOption sets one option from "KEY=VALUE" (the CLI's --esphome):
// version=1|2, extended=false, auth=md5|sha256|sha256-md5,
// compression=on|off, mode=2024|current, noise=offered|required,
// partition-access, fail=8B (an error byte, hex), fail-count=N,
// handshake-timeout=20s, data-timeout=90s, release=2026.7.0,
// project=author.name, friendly-name=NAME, api-encryption,
// config-hash=HEX8, mac=HEX12, identity=VERSION:PROJECT_VERSION:CONFIG_HASH.
// Start checks the result against the chip (Firmware Check).
func ParseOption(o *Options, spec string) error {
	k, v, hasV := strings.Cut(strings.TrimSpace(spec), "=")
	k = strings.ToLower(strings.TrimSpace(k))
	v = strings.TrimSpace(v)
	flag := func() (bool, error) {
		if !hasV {
			return true, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("%s takes true or false, not %q", k, v)
		}
		return b, nil
	}
	dur := func() (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("%s takes a duration such as 20s, not %q", k, v)
		}
		return d, nil
	}
	var err error
	switch k {
	case "version":
		switch v {
		case "1", "2":
			o.Version = int(v[0] - '0')
		default:
			return fmt.Errorf("version takes 1 or 2, not %q", v)
		}
	case "extended":
		var b bool
		b, err = flag()
		o.NoExtended = !b
	case "auth":
		o.Auth = strings.ToLower(v)
	case "compression":
		o.Compression = strings.ToLower(v)
	case "mode":
		switch strings.ToLower(v) {
		case "2024":
			o.Mode2024 = true
		case "current", "2026":
			o.Mode2024 = false
		default:
			return fmt.Errorf("mode takes 2024 or current, not %q", v)
		}
	case "noise":
		o.Noise = strings.ToLower(v)
	case "partition-access":
		o.PartitionAccess, err = flag()
	case "fail":
		n, perr := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(v), "0x"), 16, 8)
		if perr != nil || FailStep(byte(n)) == "" {
			return fmt.Errorf("fail takes an ESPHome OTA error byte in hex (80 to 94, FF), not %q", v)
		}
		o.Fail = byte(n)
	case "fail-count":
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 0 {
			return fmt.Errorf("fail-count takes a count, not %q", v)
		}
		o.FailCount = n
	case "handshake-timeout":
		o.HandshakeTimeout, err = dur()
	case "data-timeout":
		o.DataTimeout, err = dur()
	case "release":
		o.Release = v
	case "project":
		o.ProjectName = v
	case "friendly-name":
		o.FriendlyName = v
	case "api-encryption":
		o.APIEncryption, err = flag()
	case "config-hash":
		o.ConfigHash = strings.ToLower(v)
	case "mac":
		o.MAC = strings.ToLower(strings.NewReplacer(":", "", "-", "").Replace(v))
	case "identity":
		parts := strings.Split(v, ":")
		if len(parts) != 3 || parts[0] == "" {
			return fmt.Errorf("identity takes IMAGE_VERSION:PROJECT_VERSION:CONFIG_HASH, not %q", v)
		}
		if o.Identities == nil {
			o.Identities = make(map[string]Identity)
		}
		o.Identities[parts[0]] = Identity{ProjectVersion: parts[1], ConfigHash: strings.ToLower(parts[2])}
	default:
		return fmt.Errorf("unknown key %q (have %s)", k, strings.Join(OptionKeys, ", "))
	}
	if err == nil && !hasV && k != "extended" && k != "partition-access" && k != "api-encryption" {
		return fmt.Errorf("%s needs a value (%s=…)", k, k)
	}
	return err
}
