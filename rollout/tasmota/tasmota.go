// Package tasmota is the Tasmota pull family of a rollout: it tells
// Tasmota devices over the user's MQTT broker to fetch an image
// (Backlog OtaUrl <url>; Upgrade 1) and turns what they publish into
// reports.
package tasmota

import (
	"log/slog"

	"github.com/ots-ota/ots-ota/broker"
)

// DefaultFullTopic is Tasmota's default FullTopic.
const DefaultFullTopic = "%prefix%/%topic%/"

// Options tune the family.
type Options struct {
	// FullTopic is the pattern of devices that name none of their own
	// ("" = DefaultFullTopic). Tokens: %prefix% %topic% %hostname% %id%.
	FullTopic string
	// Prefixes Tasmota puts in %prefix% ("" = "cmnd", "stat", "tele").
	CmndPrefix, StatPrefix, TelePrefix string
	Logger                             *slog.Logger
}

// Family is the Tasmota family over one broker client.
type Family struct {
	c    *broker.Client
	opts Options
}

// New returns the family over client.
func New(client *broker.Client, opts Options) *Family {
	return &Family{c: client, opts: opts}
}

// Name is "tasmota".
func (f *Family) Name() string { return "tasmota" }
