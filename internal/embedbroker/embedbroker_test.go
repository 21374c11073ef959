package embedbroker

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ots-ota/ots-ota/broker"
)

// wait bounds every wait on an event (the CI machine is loaded).
const wait = 30 * time.Second

func start(t *testing.T) *Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b, err := Start(ctx, Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// client is ots-ota's own MQTT client (persistent session, QoS 1).
func client(t *testing.T, b *Broker, id string) *broker.Client {
	t.Helper()
	c, err := broker.Connect(ctxT(t), broker.Config{URL: b.URL(), ClientID: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// device is a paho client as the simulated devices are; conn is its TCP
// connection, for an abrupt close.
type device struct {
	mqtt.Client
	mu   sync.Mutex
	conn net.Conn
}

func dev(t *testing.T, b *Broker, id string, will func(*mqtt.ClientOptions)) *device {
	t.Helper()
	d := &device{}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			c, err := net.Dial("tcp", u.Host)
			d.mu.Lock()
			d.conn = c
			d.mu.Unlock()
			return c, err
		})
	if will != nil {
		will(o)
	}
	d.Client = mqtt.NewClient(o)
	if tok := d.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device %s: connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { d.Disconnect(0) })
	return d
}

func (d *device) pub(t *testing.T, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	if tok := d.Publish(topic, qos, retained, payload); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// inbox collects what a broker.Client's handler gets.
type inbox chan broker.Message

func (in inbox) h(m broker.Message) { in <- m }

func (in inbox) next(t *testing.T, what string) broker.Message {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(wait):
		t.Fatalf("no message: %s", what)
		return broker.Message{}
	}
}

// TestQoS1BothWays: ots-ota's client subscribes with a wildcard and gets a
// device's QoS 1 message; a device gets what ots-ota's client publishes.
// Topics with '.' (a Tasmota topic may hold one) pass unchanged.
func TestQoS1BothWays(t *testing.T) {
	b := start(t)
	if !strings.HasPrefix(b.URL(), "mqtt://127.0.0.1:") {
		t.Fatalf("URL %q: want mqtt://127.0.0.1:PORT", b.URL())
	}
	c := client(t, b, "otsotaqos1")
	in := make(inbox, 10)
	if err := c.Subscribe(ctxT(t), "stat/+/RESULT", in.h); err != nil {
		t.Fatal(err)
	}
	d := dev(t, b, "DVES_00DE01", nil)
	got := make(chan mqtt.Message, 10)
	if tok := d.Subscribe("cmnd/dev.1/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m }); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device subscribe: %v", tok.Error())
	}
	d.pub(t, "stat/dev.1/RESULT", 1, false, `{"Upgrade":"Started"}`)
	m := in.next(t, "the device's RESULT")
	if m.Topic != "stat/dev.1/RESULT" || string(m.Payload) != `{"Upgrade":"Started"}` || m.Retained {
		t.Errorf("got %s %q retained=%v", m.Topic, m.Payload, m.Retained)
	}
	if err := c.Publish(ctxT(t), "cmnd/dev.1/Upgrade", []byte("1")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Topic() != "cmnd/dev.1/Upgrade" || string(m.Payload()) != "1" || m.Qos() != 1 || m.Retained() {
			t.Errorf("device got %s %q qos %d retained=%v", m.Topic(), m.Payload(), m.Qos(), m.Retained())
		}
	case <-time.After(wait):
		t.Fatal("the device got no command")
	}
}

// TestRetainedToNewSubscriber: a retained message published before anyone
// subscribed reaches a later subscriber, flagged retained; an empty
// retained message clears it.
func TestRetainedToNewSubscriber(t *testing.T) {
	b := start(t)
	d := dev(t, b, "dev2", nil)
	d.pub(t, "tele/dev2/LWT", 1, true, "Online")
	d.pub(t, "tele/gone/LWT", 1, true, "Offline")
	d.pub(t, "tele/gone/LWT", 1, true, "") // cleared
	c := client(t, b, "otsotaret")
	in := make(inbox, 10)
	if err := c.Subscribe(ctxT(t), "tele/+/LWT", in.h); err != nil {
		t.Fatal(err)
	}
	// nats-server may still hand out the cleared message, as an empty
	// retained one, shortly after the clear (its store catches up
	// asynchronously): a subscriber takes an empty payload for nothing, as
	// the families do. Any other copy of it is a failure.
	seen := false
	deadline := time.After(wait)
	for !seen {
		var m broker.Message
		select {
		case m = <-in:
		case <-deadline:
			t.Fatal("no retained LWT of dev2")
		}
		switch {
		case m.Topic == "tele/dev2/LWT" && string(m.Payload) == "Online" && m.Retained:
			seen = true
		case m.Topic == "tele/gone/LWT" && len(m.Payload) == 0:
		default:
			t.Errorf("got %s %q retained=%v, want tele/dev2/LWT Online retained", m.Topic, m.Payload, m.Retained)
		}
	}
	select {
	case m := <-in:
		if m.Topic != "tele/gone/LWT" || len(m.Payload) != 0 {
			t.Errorf("a cleared retained message came: %s %q", m.Topic, m.Payload)
		}
	case <-time.After(500 * time.Millisecond):
	}
}

// TestWillOnAbruptClose: a device whose TCP connection ends without a
// DISCONNECT has its will published (retained, as Tasmota's LWT), to
// subscribers now and later.
func TestWillOnAbruptClose(t *testing.T) {
	b := start(t)
	c := client(t, b, "otsotawill")
	in := make(inbox, 10)
	if err := c.Subscribe(ctxT(t), "tele/dev3/LWT", in.h); err != nil {
		t.Fatal(err)
	}
	d := dev(t, b, "dev3", func(o *mqtt.ClientOptions) { o.SetWill("tele/dev3/LWT", "Offline", 1, true) })
	d.pub(t, "tele/dev3/LWT", 1, true, "Online")
	if m := in.next(t, "Online"); string(m.Payload) != "Online" {
		t.Fatalf("got %q, want Online", m.Payload)
	}
	d.mu.Lock()
	_ = d.conn.Close() // no DISCONNECT: the broker must publish the will
	d.mu.Unlock()
	m := in.next(t, "the will")
	if string(m.Payload) != "Offline" || m.Retained {
		t.Errorf("got %q retained=%v, want a live Offline", m.Payload, m.Retained)
	}
	later := client(t, b, "otsotalater")
	in2 := make(inbox, 10)
	if err := later.Subscribe(ctxT(t), "tele/+/LWT", in2.h); err != nil {
		t.Fatal(err)
	}
	if m := in2.next(t, "the retained will"); string(m.Payload) != "Offline" || !m.Retained {
		t.Errorf("a later subscriber got %q retained=%v, want Offline retained", m.Payload, m.Retained)
	}
}

// TestPersistentSession: ots-ota's client (clean session off) gets, after
// it connects again with the same ID, the QoS 1 messages published while
// it was away, as a rollout resumed after a lost link or a restart does.
func TestPersistentSession(t *testing.T) {
	b := start(t)
	c := client(t, b, "otsotapersist")
	in := make(inbox, 10)
	if err := c.Subscribe(ctxT(t), "stat/+/UPGRADE", in.h); err != nil {
		t.Fatal(err)
	}
	c.Close()
	d := dev(t, b, "dev4", nil)
	for i := range 3 {
		d.pub(t, "stat/dev4/UPGRADE", 1, false, fmt.Sprintf("step %d", i))
	}
	c2 := client(t, b, "otsotapersist")
	in2 := make(inbox, 10)
	if err := c2.Subscribe(ctxT(t), "stat/+/UPGRADE", in2.h); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		m := in2.next(t, "a message sent while away")
		if want := fmt.Sprintf("step %d", i); string(m.Payload) != want || m.Retained {
			t.Errorf("got %q retained=%v, want %q", m.Payload, m.Retained, want)
		}
	}
}

// TestManySubscriptions: one persistent session holds more QoS 1
// subscriptions than the server's default allows (63).
func TestManySubscriptions(t *testing.T) {
	b := start(t)
	c := client(t, b, "otsotamany")
	for i := range 100 {
		if err := c.Subscribe(ctxT(t), fmt.Sprintf("stat/dev%d/RESULT", i), func(broker.Message) {}); err != nil {
			t.Fatalf("subscription %d: %v", i, err)
		}
	}
}

// TestCloseFreesThePort: after Close the port is free and the store's
// folder can be removed (t.TempDir's cleanup fails otherwise on Windows).
func TestCloseFreesThePort(t *testing.T) {
	ctx := ctxT(t)
	b, err := Start(ctx, Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	b.Close() // twice is harmless
	ln, err := net.Listen("tcp", b.Addr())
	if err != nil {
		t.Fatalf("%s still taken after Close: %v", b.Addr(), err)
	}
	ln.Close()
	if _, err := Start(ctx, Config{}); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("no folder: got %v, want a one-line error", err)
	}
}

// TestRestrictions pins what nats-server's MQTT refuses that mosquitto
// takes (the package doc lists them): client IDs with '.', '*', '>' or
// whitespace, and topics with whitespace. Each refusal leaves the broker
// serving others.
func TestRestrictions(t *testing.T) {
	b := start(t)
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"DVES_ABC123", true},
		{"otsota0123456789abcd", true},
		{"esphome-node_1", true},
		{"dev.1", false},
		{"dev*", false},
		{"dev>", false},
		{"dev 1", false},
	} {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(tc.id).SetAutoReconnect(false)
		c := mqtt.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(wait) {
			t.Fatalf("client ID %q: no answer", tc.id)
		}
		if ok := tok.Error() == nil; ok != tc.ok {
			t.Errorf("client ID %q: connected %v (%v), want %v", tc.id, ok, tok.Error(), tc.ok)
		}
		c.Disconnect(0)
	}
	for _, tc := range []struct {
		topic string
		ok    bool
	}{
		{"tele/dev.1/LWT", true},
		{"esphome/update/firmware/state", true},
		{"stat/a-b_c/RESULT", true},
		{"stat/a*b/RESULT", true},
		{"stat/*/RESULT", true},  // but as a filter it matches any level, as "+"
		{"stat/>/RESULT", false}, // a whole level of ">" is a NATS wildcard
		{"stat/a b/RESULT", false},
	} {
		c := client(t, b, "otsotatopics")
		in := make(inbox, 10)
		err := c.Subscribe(ctxT(t), tc.topic, in.h)
		if ok := err == nil; ok != tc.ok {
			t.Errorf("subscribe %q: %v, want ok %v", tc.topic, err, tc.ok)
		}
		if err == nil {
			d := dev(t, b, "DVES_TOPICS", nil)
			d.pub(t, tc.topic, 1, false, "x")
			if m := in.next(t, tc.topic); m.Topic != tc.topic {
				t.Errorf("published on %q, got %q", tc.topic, m.Topic)
			}
			d.Disconnect(0)
		}
		c.Close()
	}
}
