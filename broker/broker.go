// Package broker is ots-ota's MQTT client for the user's own broker: a
// persistent session (clean session off, a fixed client ID) with QoS 1
// subscriptions, so that what devices report while the link is down is
// kept by the broker and arrives after the reconnect.
package broker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ots-ota/ots-ota/auth"
)

// Config says which broker to use and how.
type Config struct {
	// URL is mqtt://host[:1883] or mqtts://host[:8883]; anything else is
	// an error. It must not hold a password (user:password@): that goes
	// in Password.
	URL      string
	Username string
	// Password is never logged and never in an error.
	Password auth.Secret
	// CAFile is a PEM file of the CAs that sign an mqtts broker's
	// certificate ("" = the system's roots).
	CAFile string
	// ClientID is fixed: with the clean session off the broker keeps our
	// subscriptions and QoS 1 messages while we are away.
	ClientID string
	// Logger gets the link's changes; nil = discard.
	Logger *slog.Logger
	// OnLink is called when the link goes down (up false, err why) and
	// comes back (up true, err nil); not for the first connect.
	OnLink func(up bool, err error)
}

// Message is one message the broker delivered.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool      // the broker kept it from before we subscribed
	At       time.Time // when it arrived here
}

// ErrMaybeSent: Publish handed the message over, but no acknowledgement
// came before the context ended. The message may still reach the broker
// (it is sent again after a reconnect): never treat it as not sent.
var ErrMaybeSent = errors.New("the broker has not acknowledged the message yet (it may still arrive)")

// Client is a connection to the broker that reconnects by itself.
type Client struct {
	cfg Config
}

// Connect makes one bounded attempt (ctx): an unreachable broker, a
// refused connection or refused credentials give an error naming the
// broker (never a secret). After that the client reconnects by itself,
// with a backoff from 1 s to 30 s, and resumes its session.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	return nil, errors.New("not implemented")
}

// Subscribe subscribes at QoS 1 and calls h for every message whose topic
// matches filter, one at a time, in order.
func (c *Client) Subscribe(ctx context.Context, filter string, h func(Message)) error {
	return errors.New("not implemented")
}

// Publish sends payload at QoS 1, never retained, and waits for the
// broker's PUBACK or the end of ctx.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte) error {
	return errors.New("not implemented")
}

// Connected reports whether the link is up now.
func (c *Client) Connected() bool { return false }

// Close disconnects cleanly; the session stays on the broker.
func (c *Client) Close() {}
