// Package mqttlink is the MQTT plumbing the pulling sims share: one
// connection to the broker as the firmware's client opens it (loopback only
// unless allowed), the slot a device keeps its current link in, and the
// inbox that holds delivered messages until the device's loop takes them.
package mqttlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Options is one connection's CONNECT.
type Options struct {
	Addr      string // the broker's host:port
	ClientID  string
	KeepAlive time.Duration
	// The will: the broker publishes it when the link breaks without a
	// DISCONNECT.
	WillTopic, WillPayload string
	WillQoS                byte
	Username, Password     string // no auth when Username is ""
	AllowNonLoopback       bool
	// OnLost is called once when the broker's side ends the link (not the
	// device's own Disconnect or Drop), with why.
	OnLost func(why string)
}

// Link is one connection to the broker.
type Link struct {
	client mqtt.Client
	conn   net.Conn
	lost   atomic.Bool
}

// Dial connects with o: a clean session, no automatic reconnection (the
// firmware's loop reconnects).
func Dial(ctx context.Context, o Options) (*Link, error) {
	l := &Link{}
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://"+o.Addr).
		SetClientID(o.ClientID).
		SetCleanSession(true).
		SetKeepAlive(o.KeepAlive).
		SetWill(o.WillTopic, o.WillPayload, o.WillQoS, true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetOrderMatters(false).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			c, err := dial(ctx, u.Host, o.AllowNonLoopback)
			if err == nil {
				l.conn = c
			}
			return c, err
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			if l.lost.Swap(true) {
				return // the device's own doing, told already
			}
			why := "the broker closed the connection"
			if err != nil && !errors.Is(err, net.ErrClosed) {
				why += " (" + err.Error() + ")"
			}
			if o.OnLost != nil {
				o.OnLost(why)
			}
		})
	if o.Username != "" {
		opts.SetUsername(o.Username)
		opts.SetPassword(o.Password)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(6 * time.Second) {
		c.Disconnect(0)
		return nil, fmt.Errorf("cannot reach the broker at %s: no answer", o.Addr)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("cannot connect to the broker at %s: %v", o.Addr, err)
	}
	l.client = c
	return l, nil
}

// Subscribe subscribes to topic at QoS 0, delivering into in; false when the
// broker did not take it.
func (l *Link) Subscribe(topic string, in *Inbox) bool {
	st := l.client.Subscribe(topic, 0, func(_ mqtt.Client, m mqtt.Message) {
		in.Put(Message{Topic: m.Topic(), Payload: string(m.Payload()), Retained: m.Retained()})
	})
	return st.WaitTimeout(5*time.Second) && st.Error() == nil
}

// dial opens the link's socket: loopback only unless allowed.
func dial(ctx context.Context, addr string, allowNonLoopback bool) (net.Conn, error) {
	addr, err := CheckAddr(addr, allowNonLoopback)
	if err != nil {
		return nil, err
	}
	var dl net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return dl.DialContext(dctx, "tcp", addr)
}

// CheckAddr maps localhost to 127.0.0.1 and refuses host names, and hosts
// outside loopback unless allowed.
func CheckAddr(addr string, allowNonLoopback bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if host == "localhost" {
		host, addr = "127.0.0.1", net.JoinHostPort("127.0.0.1", port)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", errors.New("the simulated devices resolve no host names: give an IP address")
	}
	if !ip.IsLoopback() && !allowNonLoopback {
		return "", errors.New("the simulated devices reach loopback only")
	}
	return addr, nil
}

// Slot holds a device's current link (one per connection).
type Slot struct {
	mu sync.Mutex
	l  *Link
}

// Set makes l the current link.
func (s *Slot) Set(l *Link) {
	s.mu.Lock()
	s.l = l
	s.mu.Unlock()
}

func (s *Slot) get() *Link {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.l
}

// Up says whether the current link is up.
func (s *Slot) Up() bool {
	l := s.get()
	return l != nil && !l.lost.Load()
}

// Publish is QoS 0; lost when the link is down (the firmware goes on).
func (s *Slot) Publish(topic, payload string, retained bool) bool {
	l := s.get()
	if l == nil || l.lost.Load() {
		return false
	}
	t := l.client.Publish(topic, 0, retained, payload)
	return t.WaitTimeout(5*time.Second) && t.Error() == nil
}

// Disconnect is a clean DISCONNECT: no will.
func (s *Slot) Disconnect() {
	s.mu.Lock()
	l := s.l
	s.l = nil
	s.mu.Unlock()
	if l != nil && !l.lost.Load() {
		l.lost.Store(true)
		l.client.Disconnect(50)
	}
}

// Drop breaks the link without a DISCONNECT (the broker publishes the will),
// as a power cut or an expired keepalive does. told, when not nil, is called
// before the socket closes, and only when this call broke a live link.
func (s *Slot) Drop(told func()) {
	l := s.get()
	if l == nil || l.lost.Swap(true) {
		return
	}
	if told != nil {
		told()
	}
	if l.conn != nil {
		_ = l.conn.Close()
	}
	go l.client.Disconnect(0) // paho's goroutines end; the socket is already gone
}

// Message is one delivered PUBLISH.
type Message struct {
	Topic, Payload string
	Retained       bool
}

// Inbox holds delivered messages until the device's loop takes them: paho
// never waits for a device busy downloading.
type Inbox struct {
	mu   sync.Mutex
	msgs []Message
	sig  chan struct{}
}

// NewInbox returns an empty inbox.
func NewInbox() *Inbox { return &Inbox{sig: make(chan struct{}, 1)} }

// Put adds m and wakes the loop.
func (b *Inbox) Put(m Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	b.Wake()
}

// Wake makes the loop look again (a lost link, too).
func (b *Inbox) Wake() {
	select {
	case b.sig <- struct{}{}:
	default:
	}
}

// Ready is signalled when there may be messages to take.
func (b *Inbox) Ready() <-chan struct{} { return b.sig }

// Take returns the messages delivered since the last Take.
func (b *Inbox) Take() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.msgs
	b.msgs = nil
	return m
}

// Sleep waits d or until ctx ends; false when ctx ended.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// BrokerAddr checks a broker URL for the simulated devices (plain MQTT,
// no user in it) and returns its host:port (port 1883 by default).
func BrokerAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("broker %q: give mqtt://HOST[:PORT]", raw)
	}
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp":
	case "mqtts", "ssl", "tls":
		return "", errors.New("the simulated devices speak plain MQTT only: give an mqtt:// broker")
	default:
		return "", fmt.Errorf("broker %q: give mqtt://HOST[:PORT]", raw)
	}
	if u.User != nil {
		return "", errors.New("give the devices' broker user and password apart from the broker URL")
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "1883"
	}
	return host + ":" + port, nil
}
