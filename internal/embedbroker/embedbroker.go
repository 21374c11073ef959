// Package embedbroker runs an MQTT broker inside this process, for the
// demo's simulated devices only (real devices keep their own broker): the
// MQTT side of nats-server v2, listening on 127.0.0.1 and a port the
// system picks, anonymous, with its JetStream store (where the MQTT
// sessions, QoS 1 messages and retained messages live) in a folder the
// caller gives and removes. There is no NATS client port (the server does
// not listen for NATS clients at all), no cluster, no monitoring port.
//
// What it does as the broker package and the simulators need it (the
// package's tests prove each): QoS 0 and 1 publish and subscribe,
// retained messages delivered to a new subscriber (flagged retained),
// wills published when a client's link ends without a DISCONNECT, and
// persistent sessions (clean session off) that get the QoS 1 messages
// published while they were away.
//
// Restrictions of nats-server's MQTT, unlike mosquitto (TestRestrictions
// pins them):
//   - A client ID must not hold '.', '*', '>' nor whitespace: the CONNECT
//     is refused (identifier rejected). Tasmota's DVES_XXXXXX, ESPHome's
//     node names and broker.NewClientID's IDs pass.
//   - Topics and filters must not hold whitespace. '.' is allowed (mapped
//     to "//" in the NATS subject, unseen by MQTT clients). A level that
//     is just '*' or '>' is a NATS wildcard: a filter "a/>/b" is refused,
//     and a filter "a/*/b" matches any level, as "a/+/b".
//   - An empty client ID needs the clean session on.
//   - A retained message just cleared (an empty retained publish) may
//     still reach a new subscriber for a moment, as an empty retained
//     message: subscribers take an empty payload for nothing.
//   - Every QoS 1 subscription of a persistent session is a JetStream
//     consumer holding up to MaxAckPending unacknowledged messages; the
//     sum over a session's subscriptions cannot pass 65535 ('#' filters
//     count twice). This broker sets 256 per subscription, so one client
//     holds at most 255 QoS 1 subscriptions (the default, 1024, allows
//     63): a rollout of many devices must subscribe with wildcards, not
//     one filter per device. Each subscription costs a consumer, which
//     makes subscribing slower than mosquitto's (milliseconds each).
//   - The first connect after Start creates the JetStream streams; Start
//     makes that connect itself, so clients do not wait for it.
package embedbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says where the broker keeps its store and where it logs.
type Config struct {
	// Dir is the folder for the JetStream store (sessions, QoS 1 and
	// retained messages). Required; the caller removes it after Close.
	Dir string
	// Logger gets the server's notices and errors at debug level (warnings
	// and errors at warn); nil = discard.
	Logger *slog.Logger
}

// maxAckPending per QoS 1 subscription: the server's default (1024) allows
// only 63 subscriptions per session; 256 allows 255 and still lets a
// subscriber have 256 messages in flight.
const maxAckPending = 256

// Broker is a running embedded broker.
type Broker struct {
	srv  *server.Server
	addr string // 127.0.0.1:port of the MQTT listener
	once sync.Once
}

// Start starts the broker and returns when it takes MQTT connections (its
// JetStream streams made). ctx bounds the start only; Close stops it.
// Errors are one line.
func Start(ctx context.Context, cfg Config) (*Broker, error) {
	if cfg.Dir == "" {
		return nil, errors.New("the embedded broker needs a folder for its store")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := &server.Options{
		ServerName: "ots-ota-embedded",
		Host:       "127.0.0.1",
		// No listener for NATS clients: only MQTT is served.
		DontListen: true,
		NoSigs:     true,
		NoLog:      false, // logs go to our logger, never to stderr
		JetStream:  true,
		StoreDir:   cfg.Dir,
		// Bounds rather than the defaults (a share of the machine's memory
		// and disk): the demo keeps a few sessions and retained messages.
		JetStreamMaxMemory:     64 << 20,
		JetStreamMaxStore:      1 << 30,
		DisableJetStreamBanner: true,
		MQTT: server.MQTTOpts{
			Host:          "127.0.0.1",
			Port:          -1, // the system picks
			MaxAckPending: maxAckPending,
		},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("the embedded broker does not start: %v", err)
	}
	// Our logger also keeps the server's Fatalf from ending the process.
	srv.SetLogger(natsLogger{log}, false, false)
	srv.Start()
	b := &Broker{srv: srv}
	wait := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	if !srv.ReadyForConnections(wait) {
		b.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("the embedded broker did not start within %s (its store in %s)", wait.Round(time.Second), cfg.Dir)
	}
	// Written by the server under its lock before it was ready (a port
	// of -1 is replaced by the one the system gave).
	b.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.MQTT.Port))
	if err := warmUp(ctx, b.addr); err != nil {
		b.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("the embedded broker on %s does not take MQTT connections: %v", b.addr, err)
	}
	return b, nil
}

// URL is the broker's address for MQTT clients: mqtt://127.0.0.1:PORT.
func (b *Broker) URL() string { return "mqtt://" + b.addr }

// Addr is the MQTT listener's 127.0.0.1:PORT.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker and waits until it has (its listener is closed
// and its store files are released). Clients see their link end.
func (b *Broker) Close() {
	b.once.Do(func() {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	})
}

// warmUp makes one clean-session MQTT connect and waits for its CONNACK:
// the server creates the account's MQTT streams at the first connect.
func warmUp(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	// CONNECT, MQTT 3.1.1, clean session, keepalive 10 s, client ID "w".
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 10, 0, 1, 'w'}
	if _, err := c.Write(connect); err != nil {
		return err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fmt.Errorf("no answer to a connect: %v", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		return fmt.Errorf("a connect was refused (code %d)", ack[3])
	}
	_, _ = c.Write([]byte{0xe0, 0}) // DISCONNECT
	return nil
}

// natsLogger hands the server's lines to slog: notices at debug (they are
// the server's business), warnings and errors at warn.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) say(lv slog.Level, f string, v []any) {
	n.l.Log(context.Background(), lv, "embedded broker: "+fmt.Sprintf(f, v...))
}

func (n natsLogger) Noticef(f string, v ...any) { n.say(slog.LevelDebug, f, v) }
func (n natsLogger) Warnf(f string, v ...any)   { n.say(slog.LevelWarn, f, v) }
func (n natsLogger) Fatalf(f string, v ...any)  { n.say(slog.LevelWarn, f, v) }
func (n natsLogger) Errorf(f string, v ...any)  { n.say(slog.LevelWarn, f, v) }
func (n natsLogger) Debugf(string, ...any)      {}
func (n natsLogger) Tracef(string, ...any)      {}
