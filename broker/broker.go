// Package broker is ots-ota's MQTT client for the user's own broker: a
// persistent session (clean session off, a fixed client ID) with QoS 1
// subscriptions, so that QoS 1 messages published while the link is down
// (a device's will, among others) are kept by the broker and arrive after
// the reconnect. A broker keeps no QoS 0 message for an absent client
// (mosquitto's default), and Tasmota publishes everything but its will at
// QoS 0: after each reconnect every filter is therefore subscribed again,
// which makes the broker send the retained messages (the devices' LWT
// state) once more; what else was said during the gap is lost.
//
// Nothing it publishes is retained: a retained command would be taken
// again by a device on every reconnect.
//
// Secrets: the password is held as an auth.Secret and goes only into the
// CONNECT packet. Errors and log lines name the broker by host:port; a
// URL that holds a password (user:password@host) is refused, so that no
// copy of it is ever stored or shown.
package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/detect"
)

// Config says which broker to use and how.
type Config struct {
	// URL is mqtt://host[:1883] or mqtts://host[:8883]; anything else is
	// an error. It must not hold a password (user:password@ is refused):
	// that goes in Password. A user name alone in it (user@host) is the
	// user name when Username is "".
	URL      string
	Username string
	// Password is never logged and never in an error.
	Password auth.Secret
	// CAFile is a PEM file of the CAs that sign an mqtts broker's
	// certificate ("" = the system's roots).
	CAFile string
	// ClientID is fixed: with the clean session off the broker keeps our
	// subscriptions and QoS 1 messages while we are away. Required; keep
	// it to 23 letters and digits at most, which every broker takes
	// (NewClientID makes one).
	ClientID string
	// Logger gets the link's changes; nil = discard.
	Logger *slog.Logger
	// OnLink is called when the link goes down (up false, err why, one
	// line naming the broker) and comes back (up true, err nil); not for
	// the first connect nor for Close.
	OnLink func(up bool, err error)
}

// Message is one message the broker delivered.
type Message struct {
	Topic   string
	Payload []byte
	// Retained: the broker kept it from before we subscribed (it tells a
	// state, such as a device's LWT, not a new event).
	Retained bool
	At       time.Time // when it arrived here
}

// ErrMaybeSent: Publish handed the message over, but no acknowledgement
// came before the context ended. The message may still reach the broker
// (it is sent again after a reconnect): never treat it as not sent.
var ErrMaybeSent = errors.New("the broker has not acknowledged the message yet (it may still arrive)")

// ErrBadCredentials is the error of a broker that refused the user name
// or password (or refused the client as not authorised).
var ErrBadCredentials = errors.New("the broker refused the user name or password")

// Timeouts of one connection attempt and of the keepalive. The backoff
// between reconnects runs from 1 s to maxReconnect.
const (
	connectTimeout = 10 * time.Second
	keepAlive      = 30 * time.Second
	pingTimeout    = 10 * time.Second
	maxReconnect   = 30 * time.Second
)

// maxPending bounds the messages kept for a filter not yet subscribed to
// here (those a persistent session delivers right after the connect).
const maxPending = 10000

// Client is a connection to the broker that reconnects by itself.
type Client struct {
	addr   string // host:port, the broker's name in every message
	log    *slog.Logger
	onLink func(bool, error)
	pc     mqtt.Client

	conns  atomic.Int32 // connections opened (1 = the first)
	closed atomic.Bool

	mu      sync.Mutex
	subs    []subscription // in the order made
	queue   []Message      // arrived, not yet handed to a handler
	pending []Message      // arrived for no handler yet
	wake    chan struct{}  // a message was queued (capacity 1)
	stop    chan struct{}  // Close
	done    chan struct{}  // the delivery goroutine ended
	linkUp  chan struct{}  // closed while the link is up; replaced when it goes down
	changed chan struct{}  // closed at the link's next change (Link), then replaced

	linkMu sync.Mutex
	told   bool // OnLink's last word was "up" (true from the first connect)

	dialMu  sync.Mutex
	dialCtx context.Context // the first connect's ctx; nil after it
}

type subscription struct {
	filter string
	h      func(Message)
}

// NewClientID returns a fresh client ID of 20 letters and digits
// ("otsota" and 14 hex digits), which every MQTT 3.1.1 broker must take,
// for a caller that keeps it (in a state file) to resume the same
// session later.
func NewClientID() string {
	var b [7]byte
	_, _ = rand.Read(b[:])
	return "otsota" + hex.EncodeToString(b[:])
}

// Addr checks a broker URL as Connect does and returns host:port, the
// broker's name in messages. The error never repeats a password.
func Addr(rawURL string) (string, error) {
	u, _, err := parseURL(rawURL)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

// parseURL reads mqtt://host[:port] or mqtts://host[:port] into a URL
// with the port filled in and no userinfo, and the user name it named.
func parseURL(raw string) (*url.URL, string, error) {
	shown := auth.StripUserinfo(raw)
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, "", fmt.Errorf("the broker URL %q is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]", shown)
	}
	var user string
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return nil, "", fmt.Errorf("the broker URL %s holds a password: give the password on its own, never in the URL", shown)
		}
		user = u.User.Username()
	}
	port := ""
	switch strings.ToLower(u.Scheme) {
	case "mqtt":
		port = "1883"
	case "mqtts":
		port = "8883"
	default:
		return nil, "", fmt.Errorf("the broker URL %s is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]", shown)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, "", fmt.Errorf("the broker URL %s has a path or query: give only mqtt://HOST[:PORT] or mqtts://HOST[:PORT]", shown)
	}
	host := u.Hostname()
	if host == "" {
		return nil, "", fmt.Errorf("the broker URL %s names no host", shown)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	out := &url.URL{Scheme: strings.ToLower(u.Scheme), Host: net.JoinHostPort(host, port)}
	return out, user, nil
}

// Connect makes one bounded attempt (ctx, and at most 10 s for the
// handshake): an unreachable broker, a refused connection or refused
// credentials give a one-line error naming the broker by host:port
// (never a secret); refused credentials wrap ErrBadCredentials. After
// that the client reconnects by itself, with a backoff from 1 s to 30 s,
// and resumes its session; messages the broker kept for the session are
// delivered to the handler of the first Subscribe whose filter matches
// them.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	return connect(ctx, cfg, false)
}

// Forget ends the session the broker keeps under cfg.ClientID (its
// subscriptions, and the QoS 1 messages it queues for them while no one
// is connected): one connect with the clean session on, then a clean
// disconnect. For the end of a rollout, after the Client with that ID was
// closed (a connect with the same ID takes its place). Errors as
// Connect's.
func Forget(ctx context.Context, cfg Config) error {
	cfg.OnLink = nil
	c, err := connect(ctx, cfg, true)
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

func connect(ctx context.Context, cfg Config, clean bool) (*Client, error) {
	u, user, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Username != "" && user != "" && user != cfg.Username {
		return nil, fmt.Errorf("the broker URL names user %q, but the user name given is %q: give one", user, cfg.Username)
	}
	if cfg.Username == "" {
		cfg.Username = user
	}
	if cfg.ClientID == "" {
		return nil, errors.New("an MQTT client ID is required (the session on the broker is kept under it)")
	}
	var tlsCfg *tls.Config
	if u.Scheme == "mqtts" {
		tlsCfg = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pool, err := loadCAs(cfg.CAFile)
			if err != nil {
				return nil, err
			}
			tlsCfg.RootCAs = pool
		}
	} else if cfg.CAFile != "" {
		return nil, fmt.Errorf("a CA file was given, but the broker URL is mqtt:// (plain): use mqtts://%s", u.Host)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		addr:    u.Host,
		log:     log.With("broker", u.Host),
		onLink:  cfg.OnLink,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		linkUp:  make(chan struct{}),
		changed: make(chan struct{}),
		dialCtx: ctx,
		told:    true,
	}
	o := mqtt.NewClientOptions()
	o.AddBroker(u.String())
	o.SetClientID(cfg.ClientID)
	o.SetCleanSession(clean)
	o.SetProtocolVersion(4) // 3.1.1 only: no second CONNECT (with the credentials) as 3.1
	if cfg.Username != "" {
		o.SetUsername(cfg.Username)
	}
	if !cfg.Password.IsZero() {
		o.SetPassword(cfg.Password.Reveal())
	}
	o.SetAutoReconnect(!clean)
	o.SetConnectRetry(false)
	o.SetMaxReconnectInterval(maxReconnect)
	o.SetConnectTimeout(connectTimeout)
	o.SetKeepAlive(keepAlive)
	o.SetPingTimeout(pingTimeout)
	o.SetResumeSubs(true)
	o.SetStore(newCopyStore())
	// Our own delivery goroutine calls the handlers, so paho's router
	// never blocks on them and a handler may Publish.
	o.SetOrderMatters(true)
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		c.arrive(Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained(), At: time.Now()})
	})
	o.SetCustomOpenConnectionFn(func(_ *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		return c.dial(u, tlsCfg)
	})
	o.SetOnConnectHandler(func(mqtt.Client) { c.up() })
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { c.down(err) })
	c.pc = mqtt.NewClient(o)

	go c.deliver()
	tok := c.pc.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		c.abandon()
		return nil, fmt.Errorf("no answer from the MQTT broker at %s %s", c.addr, ctxWords(ctx))
	}
	c.dialMu.Lock()
	c.dialCtx = nil
	c.dialMu.Unlock()
	if err := tok.Error(); err != nil {
		c.abandon()
		return nil, c.connectError(tok.(*mqtt.ConnectToken).ReturnCode(), err)
	}
	// Up from the start for Link and Publish, whenever paho's own
	// callback runs.
	c.sync(nil)
	c.log.Info("connected to the MQTT broker")
	return c, nil
}

// abandon ends a client whose first connect failed.
func (c *Client) abandon() {
	c.closed.Store(true)
	c.pc.Disconnect(0)
	close(c.stop)
	<-c.done
}

func loadCAs(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the broker's CA file: %v", oneLine(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("the broker's CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// dial opens the TCP (or TLS) connection of one attempt: the first one is
// bounded by Connect's ctx too, later ones by connectTimeout and Close.
func (c *Client) dial(u *url.URL, tlsCfg *tls.Config) (net.Conn, error) {
	c.dialMu.Lock()
	parent := c.dialCtx
	c.dialMu.Unlock()
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, connectTimeout)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var conn net.Conn
	var err error
	if tlsCfg != nil {
		d := tls.Dialer{Config: tlsCfg}
		conn, err = d.DialContext(ctx, "tcp", u.Host)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", u.Host)
	}
	if err != nil {
		return nil, &dialError{err}
	}
	c.conns.Add(1)
	return conn, nil
}

// dialError marks an error of the TCP/TLS connect, as opposed to one of
// the MQTT handshake.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// connectError words a failed first connect.
func (c *Client) connectError(rc byte, err error) error {
	switch rc {
	case packets.ErrRefusedBadUsernameOrPassword, packets.ErrRefusedNotAuthorised:
		return fmt.Errorf("MQTT broker at %s: %w", c.addr, ErrBadCredentials)
	case packets.ErrRefusedIDRejected:
		return fmt.Errorf("the MQTT broker at %s refused the client ID", c.addr)
	case packets.ErrRefusedServerUnavailable:
		return fmt.Errorf("the MQTT broker at %s says it is unavailable", c.addr)
	case packets.ErrRefusedBadProtocolVersion:
		return fmt.Errorf("the MQTT broker at %s does not speak MQTT 3.1.1", c.addr)
	}
	var de *dialError
	if errors.As(err, &de) {
		return fmt.Errorf("cannot reach the MQTT broker at %s: %s", c.addr, netWords(err))
	}
	return fmt.Errorf("no MQTT answer from the broker at %s: %s", c.addr, netWords(err))
}

// netWords is the last, user-facing part of a network error.
func netWords(err error) string {
	var de *dialError
	var cve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var dnsErr *net.DNSError
	switch {
	case detect.IsRefused(err): // Windows: WSAECONNREFUSED, not syscall.ECONNREFUSED
		return "connection refused"
	case errors.As(err, &ua), errors.As(err, &cve) && errors.As(cve.Err, &ua):
		return "its certificate is signed by an authority not trusted here (give its CA file)"
	case errors.As(err, &hn):
		return "its certificate is not for this host name"
	case errors.As(err, &cve):
		return "its certificate is not valid: " + oneLine(cve.Err)
	case errors.As(err, &dnsErr):
		return "cannot resolve the host name"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "no answer in time"
	case errors.Is(err, io.EOF), detect.IsReset(err):
		return "it closed the connection (is it an MQTT listener, TLS or plain as the URL says?)"
	case errors.As(err, &de):
		return lastPart(de.err)
	}
	return lastPart(err)
}

// lostWords are netWords for a link that worked: a broker that closes it
// is no wrong listener, so no hint about the URL (a restart, most often).
func lostWords(err error) string {
	if errors.Is(err, io.EOF) || detect.IsReset(err) {
		return "the broker closed the connection"
	}
	return netWords(err)
}

// lastPart drops Go's "dial tcp a:b: connect:" prefixes.
func lastPart(err error) string {
	s := oneLine(err)
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// ctxWords says why a wait ended early: "in time" for a deadline, else
// "(cancelled)".
func ctxWords(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.Canceled) {
		return "(cancelled)"
	}
	return "in time"
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// up runs on every (re)connect, down when the link is lost (never for
// Close). Paho calls both on goroutines of their own, so they may run out
// of order: each reads the link's actual state, and told (under linkMu)
// is what OnLink last said, so that the last word is always the truth.
//
// After a reconnect the link counts as up (Link, Publish, OnLink) only
// once every filter is subscribed again: a read sent before that could
// have its answer dropped by a broker that lost the session.
func (c *Client) up() {
	if c.conns.Load() > 1 {
		go func() {
			c.resubscribe()
			c.sync(nil)
		}()
		return
	}
	c.sync(nil)
}

func (c *Client) down(err error) {
	if err == nil {
		err = errors.New("connection lost")
	}
	c.sync(err)
}

// sync brings linkUp and OnLink in line with the link's state; lost is
// the error of a loss just seen (nil from up).
func (c *Client) sync(lost error) {
	c.linkMu.Lock()
	defer c.linkMu.Unlock()
	open := c.pc.IsConnectionOpen()
	c.mu.Lock()
	select {
	case <-c.linkUp:
		if !open {
			c.linkUp = make(chan struct{})
			c.changeLocked()
		}
	default:
		if open {
			close(c.linkUp)
			c.changeLocked()
		}
	}
	c.mu.Unlock()
	if c.closed.Load() {
		return
	}
	// With OnLink the caller tells the user (once, in its words); the
	// client's own lines are then details.
	warn, info := c.log.Warn, c.log.Info
	if c.onLink != nil {
		warn, info = c.log.Debug, c.log.Debug
	}
	if lost != nil && c.told {
		e := fmt.Errorf("lost the link to the MQTT broker at %s: %s (reconnecting)", c.addr, lostWords(lost))
		warn("link to the MQTT broker lost", "err", e)
		c.told = false
		if c.onLink != nil {
			c.onLink(false, e)
		}
	}
	if open && !c.told {
		info("link to the MQTT broker is back")
		c.told = true
		if c.onLink != nil {
			c.onLink(true, nil)
		}
	}
}

// changeLocked tells Link's callers that the link changed. c.mu is held.
func (c *Client) changeLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Link tells whether the link is up now (after a reconnect: once every
// filter is subscribed again), and gives a channel closed at its next
// change, down or back up; both read at one moment. A closed client is
// down for good.
func (c *Client) Link() (up bool, changed <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.linkUp:
		up = !c.closed.Load()
	default:
	}
	return up, c.changed
}

// resubscribe makes every subscription again after a reconnect. The
// broker may have lost the session (a restart without persistence), and
// even a kept session holds only QoS 1 messages: what a device publishes
// at QoS 0 (Tasmota publishes everything so, but its will) while the link
// was down is lost. Subscribing again makes the broker send the retained
// messages, the current state (Tasmota's LWT), once more.
func (c *Client) resubscribe() {
	c.mu.Lock()
	filters := make([]string, 0, len(c.subs))
	for _, s := range c.subs {
		filters = append(filters, s.filter)
	}
	c.mu.Unlock()
	for _, f := range filters {
		tok := c.pc.Subscribe(f, 1, nil)
		t := time.NewTimer(connectTimeout)
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				c.log.Warn("subscribing again failed", "filter", f, "err", oneLine(err))
			}
		case <-t.C:
			// The link dropped again, or the broker is stuck: the next
			// reconnect subscribes again.
			c.log.Warn("no confirmation of a subscription made again", "filter", f)
		case <-c.stop:
			t.Stop()
			return
		}
		t.Stop()
	}
}

// arrive queues a message from paho's router, never blocking it.
func (c *Client) arrive(m Message) {
	c.mu.Lock()
	c.queue = append(c.queue, m)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// deliver hands queued messages to the handlers whose filter matches,
// one at a time, in arrival order; a message no filter matches waits in
// pending for a later Subscribe.
func (c *Client) deliver() {
	defer close(c.done)
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.mu.Unlock()
			select {
			case <-c.wake:
				continue
			case <-c.stop:
				return
			}
		}
		m := c.queue[0]
		c.queue[0] = Message{}
		c.queue = c.queue[1:]
		var hs []func(Message)
		for _, s := range c.subs {
			if Match(s.filter, m.Topic) {
				hs = append(hs, s.h)
			}
		}
		if len(hs) == 0 {
			if len(c.pending) >= maxPending {
				c.pending = c.pending[1:]
			}
			c.pending = append(c.pending, m)
		}
		c.mu.Unlock()
		for _, h := range hs {
			h(m)
		}
	}
}

// Subscribe subscribes at QoS 1 and calls h for every message whose topic
// matches filter (from now, and those that arrived for no handler since
// the connect, first). Handlers run one at a time, in arrival order, on
// one goroutine of the client: h may Publish, but a slow h delays every
// other. While the link is down it waits for it (or ctx).
//
// Every filter is subscribed again after each reconnect, so the broker
// sends its retained messages (Retained true) once more: they tell the
// state after the gap. Subscribing twice to one filter gives h and the
// first handler each message (and the retained ones again).
func (c *Client) Subscribe(ctx context.Context, filter string, h func(Message)) error {
	if err := validFilter(filter); err != nil {
		return err
	}
	if err := c.waitLink(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	c.subs = append(c.subs, subscription{filter, h})
	var early, rest []Message
	for _, m := range c.pending {
		if Match(filter, m.Topic) {
			early = append(early, m)
		} else {
			rest = append(rest, m)
		}
	}
	if len(early) > 0 {
		c.pending = rest
		c.queue = append(early, c.queue...)
	}
	c.mu.Unlock()
	if len(early) > 0 {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	tok := c.pc.Subscribe(filter, 1, nil)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("the MQTT broker at %s did not confirm the subscription to %s %s", c.addr, filter, ctxWords(ctx))
	}
	if err := tok.Error(); err != nil {
		c.removeSub(filter)
		return fmt.Errorf("the MQTT broker at %s refused the subscription to %s: %s", c.addr, filter, oneLine(err))
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		if q, ok := st.Result()[filter]; ok && q == 0x80 {
			c.removeSub(filter)
			return fmt.Errorf("the MQTT broker at %s refused the subscription to %s (not allowed for this user?)", c.addr, filter)
		}
	}
	c.log.Debug("subscribed", "filter", filter)
	return nil
}

// Unsubscribe ends every subscription to filter made here: its handlers
// get no further message (one already queued may still arrive), and it
// is not made again after a reconnect. Another filter that matches the
// same topics keeps its own. For a subscription made only to have the
// broker send a retained message again. An error: the broker did not
// confirm it before ctx ended (the handlers are removed anyway).
func (c *Client) Unsubscribe(ctx context.Context, filter string) error {
	c.mu.Lock()
	c.subs = slices.DeleteFunc(c.subs, func(s subscription) bool { return s.filter == filter })
	c.mu.Unlock()
	if !c.pc.IsConnectionOpen() {
		// The broker drops the session's subscription at the next clean
		// connect or keeps it: a message for it with no handler only waits
		// in pending, bounded.
		return nil
	}
	tok := c.pc.Unsubscribe(filter)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("the MQTT broker at %s did not confirm the end of the subscription to %s %s", c.addr, filter, ctxWords(ctx))
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("the MQTT broker at %s: ending the subscription to %s: %s", c.addr, filter, oneLine(err))
	}
	return nil
}

func (c *Client) removeSub(filter string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.subs) - 1; i >= 0; i-- {
		if c.subs[i].filter == filter {
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			return
		}
	}
}

// waitLink waits until the link is up, ctx ends or the client is closed.
func (c *Client) waitLink(ctx context.Context) error {
	for {
		if c.closed.Load() {
			return errors.New("the MQTT client is closed")
		}
		c.mu.Lock()
		ch := c.linkUp
		c.mu.Unlock()
		// linkUp follows paho's callbacks, which run a moment after
		// paho's own state changes: a link paho already knows lost is
		// waited for too, polling until the callback catches up.
		wake, tick := (<-chan struct{})(ch), (<-chan time.Time)(nil)
		select {
		case <-ch:
			if c.pc.IsConnectionOpen() {
				return nil
			}
			wake, tick = nil, time.After(50*time.Millisecond)
		default:
		}
		select {
		case <-wake:
		case <-tick:
		case <-c.stop:
			return errors.New("the MQTT client is closed")
		case <-ctx.Done():
			return fmt.Errorf("the link to the MQTT broker at %s is down and did not come back %s", c.addr, ctxWords(ctx))
		}
	}
}

// Publish sends payload at QoS 1, never retained, and waits for the
// broker's PUBACK or the end of ctx. While the link is down it waits for
// it first (an error then means the message was not sent). Once handed
// over, a ctx that ends first gives an error wrapping ErrMaybeSent.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := validTopic(topic); err != nil {
		return err
	}
	if err := c.waitLink(ctx); err != nil {
		return fmt.Errorf("not sent to %s: %w", topic, err)
	}
	tok := c.pc.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("sent to %s via %s: %w", topic, c.addr, ErrMaybeSent)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("not sent to %s via %s: %s", topic, c.addr, oneLine(err))
	}
	c.log.Debug("published", "topic", topic, "bytes", len(payload))
	return nil
}

// Connected reports whether the link is up now.
func (c *Client) Connected() bool { return !c.closed.Load() && c.pc.IsConnectionOpen() }

// Close disconnects cleanly; the session (subscriptions, and QoS 1
// messages for them) stays on the broker for the next Connect with the
// same ClientID. Handlers are not called after Close returns.
func (c *Client) Close() {
	if c.closed.Swap(true) {
		return
	}
	c.mu.Lock()
	c.changeLocked() // down for good
	c.mu.Unlock()
	c.pc.Disconnect(250)
	close(c.stop)
	<-c.done
	c.log.Info("disconnected from the MQTT broker")
}

// Match reports whether topic matches the MQTT filter (+ one level, # the
// rest; topics starting with $ match no wildcard at the first level).
func Match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fs := strings.Split(filter, "/")
	ts := strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) {
			return false
		}
		if f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}

// validTopic refuses what no broker takes as a topic to publish to.
func validTopic(t string) error {
	switch {
	case t == "":
		return errors.New("an empty MQTT topic")
	case strings.ContainsAny(t, "+#\x00"):
		return fmt.Errorf("the MQTT topic %q holds a wildcard or NUL: a command goes to one device's topic", t)
	case len(t) > 65535:
		return errors.New("the MQTT topic is too long")
	}
	return nil
}

func validFilter(f string) error {
	if f == "" || strings.Contains(f, "\x00") || len(f) > 65535 {
		return fmt.Errorf("the MQTT filter %q is not valid", f)
	}
	parts := strings.Split(f, "/")
	for i, p := range parts {
		if p == "#" && i != len(parts)-1 || p != "#" && p != "+" && strings.ContainsAny(p, "+#") {
			return fmt.Errorf("the MQTT filter %q is not valid", f)
		}
	}
	return nil
}
