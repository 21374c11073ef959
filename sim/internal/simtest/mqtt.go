package simtest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Msg is one message a Watcher saw.
type Msg struct {
	Topic, Payload string
	Retained       bool
}

func (m Msg) String() string {
	r := ""
	if m.Retained {
		r = " (retained)"
	}
	return m.Topic + " " + m.Payload + r
}

// Watcher subscribes to a filter on an MQTT broker and keeps what it sees,
// in order. It reconnects and subscribes again after a broker restart.
type Watcher struct {
	t      testing.TB
	client mqtt.Client
	mu     sync.Mutex
	msgs   []Msg
	sig    chan struct{}
}

// Watch subscribes to filter (QoS 1) on the broker at addr; the test's
// cleanup disconnects.
func Watch(t testing.TB, addr, filter string) *Watcher {
	t.Helper()
	w := &Watcher{t: t, sig: make(chan struct{}, 1)}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		w.mu.Lock()
		w.msgs = append(w.msgs, Msg{m.Topic(), string(m.Payload()), m.Retained()})
		w.mu.Unlock()
		select {
		case w.sig <- struct{}{}:
		default:
		}
	}
	subscribed := make(chan error, 1)
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("watcher-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(true).SetMaxReconnectInterval(100 * time.Millisecond).SetOrderMatters(true).
		SetOnConnectHandler(func(c mqtt.Client) {
			// On every connection: a broker restart forgets the session.
			tok := c.Subscribe(filter, 1, handler)
			tok.WaitTimeout(10 * time.Second)
			select {
			case subscribed <- tok.Error():
			default:
			}
		})
	w.client = mqtt.NewClient(opts)
	if tok := w.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher: connect: %v", tok.Error())
	}
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("watcher: subscribe: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watcher: no subscription")
	}
	t.Cleanup(func() { w.client.Disconnect(50) })
	return w
}

// Client is the watcher's own connection.
func (w *Watcher) Client() mqtt.Client { return w.client }

// All is what the watcher saw so far.
func (w *Watcher) All() []Msg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Msg(nil), w.msgs...)
}

// WaitFor waits (30 s at most) until a message from index from on
// satisfies ok; returns its index.
func (w *Watcher) WaitFor(from int, what string, ok func(Msg) bool) int {
	w.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		for i, m := range w.All() {
			if i >= from && ok(m) {
				return i
			}
		}
		select {
		case <-w.sig:
		case <-deadline:
			w.t.Fatalf("no %s; saw:\n%s", what, w.Dump())
		}
	}
}

// Dump lists what the watcher saw, numbered.
func (w *Watcher) Dump() string {
	var b strings.Builder
	for i, m := range w.All() {
		fmt.Fprintf(&b, "  %3d %s\n", i, m)
	}
	return b.String()
}

// Publish publishes at QoS 1, failing the test when the broker does not
// take it.
func (w *Watcher) Publish(topic, payload string, retained bool) {
	w.t.Helper()
	tok := w.client.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		w.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}
