package broker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/internal/testbroker"
)

// wait is the generous bound of every wait on an event here.
const wait = 20 * time.Second

func dial(t *testing.T, url, id string, mod ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: url, ClientID: id}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := Connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// inbox collects messages.
type inbox struct {
	mu  sync.Mutex
	got []Message
	ch  chan struct{}
}

func newInbox() *inbox { return &inbox{ch: make(chan struct{}, 1000)} }

func (b *inbox) add(m Message) {
	b.mu.Lock()
	b.got = append(b.got, m)
	b.mu.Unlock()
	b.ch <- struct{}{}
}

// next waits for the next message.
func (b *inbox) next(t *testing.T) Message {
	t.Helper()
	select {
	case <-b.ch:
	case <-time.After(wait):
		t.Fatal("no message")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.got[0]
	b.got = b.got[1:]
	return m
}

func (b *inbox) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-b.ch:
		b.mu.Lock()
		defer b.mu.Unlock()
		t.Fatalf("unexpected message %+v", b.got)
	case <-time.After(d):
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func TestPublishSubscribeNotRetained(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t, testbroker.KeepLogs())
	sub := dial(t, b.URL(), "sub1")
	pub := dial(t, b.URL(), "pub1")
	in := newInbox()
	if err := sub.Subscribe(ctxT(t), "cmnd/+/Backlog", in.add); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctxT(t), "cmnd/dev1/Backlog", []byte("OtaUrl http://x/y.bin; Upgrade 1")); err != nil {
		t.Fatal(err)
	}
	m := in.next(t)
	if m.Topic != "cmnd/dev1/Backlog" || string(m.Payload) != "OtaUrl http://x/y.bin; Upgrade 1" || m.Retained || m.At.IsZero() {
		t.Fatalf("got %+v", m)
	}
	// A subscriber that comes later gets nothing: nothing was retained.
	late := dial(t, b.URL(), "late1")
	in2 := newInbox()
	if err := late.Subscribe(ctxT(t), "cmnd/#", in2.add); err != nil {
		t.Fatal(err)
	}
	in2.none(t, time.Second)
	if !sub.Connected() {
		t.Fatal("not connected")
	}
}

func TestRetainedMessageIsMarked(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dev := rawClient(t, b.Addr())
	dev.publishRetained(t, "tele/dev1/LWT", "Online")
	c := dial(t, b.URL(), "watch1")
	in := newInbox()
	if err := c.Subscribe(ctxT(t), "tele/+/LWT", in.add); err != nil {
		t.Fatal(err)
	}
	if m := in.next(t); !m.Retained || string(m.Payload) != "Online" {
		t.Fatalf("got %+v", m)
	}
}

func TestBadCredentials(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t, testbroker.WithUser("ots", "right-password"))
	const pw = "wrong-password-123"
	var logs bytes.Buffer
	_, err := Connect(ctxT(t), Config{URL: b.URL(), ClientID: "bad1", Username: "ots", Password: auth.NewSecret(pw),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err == nil || !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "the broker refused the user name or password") || !strings.Contains(err.Error(), b.Addr()) {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error()+logs.String(), pw) {
		t.Fatal("the password shows")
	}
	c, err := Connect(ctxT(t), Config{URL: b.URL(), ClientID: "good1", Username: "ots", Password: auth.NewSecret("right-password")})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = Connect(ctxT(t), Config{URL: "mqtt://" + addr, ClientID: "x1", Password: auth.NewSecret("pw-never-shown")})
	if err == nil || !strings.Contains(err.Error(), "cannot reach the MQTT broker at "+addr) || strings.Contains(err.Error(), "pw-never-shown") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("more than one line: %q", err)
	}
}

// A listener that never answers the CONNECT: the first connect ends with
// Connect's ctx.
func TestConnectBoundedByContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = Connect(ctx, Config{URL: "mqtt://" + l.Addr().String(), ClientID: "x2"})
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("err = %v", err)
	}
}

func TestURLs(t *testing.T) {
	for _, tc := range []struct {
		url, addr, err string
	}{
		{"mqtt://broker.lan", "broker.lan:1883", ""},
		{"mqtts://broker.lan", "broker.lan:8883", ""},
		{"MQTT://10.0.0.1:1884/", "10.0.0.1:1884", ""},
		{"mqtt://[::1]", "[::1]:1883", ""},
		{"mqtt://user@broker.lan", "broker.lan:1883", ""},
		{"mqtt://user:hunter2secret@broker.lan", "", "holds a password"},
		{"http://broker.lan", "", "not mqtt://"},
		{"tcp://broker.lan:1883", "", "not mqtt://"},
		{"broker.lan:1883", "", "not mqtt://"},
		{"mqtt://broker.lan/path", "", "path or query"},
		{"mqtt://broker.lan?x=1", "", "path or query"},
		{"mqtt://", "", "not mqtt://"},
	} {
		addr, err := Addr(tc.url)
		if tc.err == "" {
			if err != nil || addr != tc.addr {
				t.Errorf("%s: %q, %v", tc.url, addr, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err %v, want %q", tc.url, err, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2secret") {
			t.Errorf("%s: the password shows: %v", tc.url, err)
		}
	}
	_, err := Connect(ctxT(t), Config{URL: "mqtt://a@h", Username: "b", ClientID: "x"})
	if err == nil || !strings.Contains(err.Error(), "give one") {
		t.Errorf("user conflict: %v", err)
	}
	_, err = Connect(ctxT(t), Config{URL: "mqtt://h"})
	if err == nil || !strings.Contains(err.Error(), "client ID") {
		t.Errorf("no client id: %v", err)
	}
}

func TestMatchAndFilters(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"tele/+/LWT", "tele/dev/LWT", true},
		{"tele/+/LWT", "tele/dev/x/LWT", false},
		{"tele/#", "tele/dev/LWT", true},
		{"tele/#", "tele", true},
		{"#", "$SYS/broker", false},
		{"+/x", "$SYS/x", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/+", "a/", true},
		{"a/+/c", "a//c", true},
	} {
		if got := Match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.filter, tc.topic, got)
		}
	}
	for _, f := range []string{"", "a/#/b", "a/b#", "a+/b"} {
		if validFilter(f) == nil {
			t.Errorf("filter %q taken", f)
		}
	}
	for _, topic := range []string{"", "cmnd/+/Backlog", "cmnd/#", "a\x00b"} {
		if validTopic(topic) == nil {
			t.Errorf("topic %q taken", topic)
		}
	}
}

// The broker restarts (forgetting every session): the client tells the
// link went down and came back, subscribes again, and publishes and
// receives as before.
func TestReconnectAfterRestart(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t, testbroker.KeepLogs())
	links := make(chan bool, 10)
	var errText string
	var mu sync.Mutex
	logs := &lockedBuf{}
	c := dial(t, b.URL(), "recon1", func(c *Config) {
		c.Password = auth.NewSecret("")
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		c.OnLink = func(up bool, err error) {
			if !up {
				mu.Lock()
				errText = err.Error()
				mu.Unlock()
			}
			links <- up
		}
	})
	in := newInbox()
	if err := c.Subscribe(ctxT(t), "stat/+/UPGRADE", in.add); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	for _, want := range []bool{false, true} {
		select {
		case up := <-links:
			if up != want {
				t.Fatalf("OnLink(%v), want %v", up, want)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("no OnLink(%v)", want)
		}
	}
	mu.Lock()
	// OnLink tells the caller, who tells the user once: the client's
	// own lines about the link are details.
	if l := logs.String(); strings.Contains(l, "link to the MQTT broker") {
		t.Errorf("the client logged the outage beside OnLink: %q", l)
	}
	// A broker that worked gets no hint about a wrong listener.
	if !strings.Contains(errText, b.Addr()) || strings.Contains(errText, "\n") || strings.Contains(errText, "MQTT listener") {
		t.Errorf("link error %q", errText)
	}
	mu.Unlock()
	// Subscribed again: a message published now arrives. The resubscribe
	// runs beside OnLink, so publish until one arrives.
	dev := rawClient(t, b.Addr())
	deadline := time.Now().Add(wait)
	for {
		dev.publish(t, "stat/dev1/UPGRADE", `{"Upgrade":"Successful. Restarting"}`)
		select {
		case <-in.ch:
			return
		case <-time.After(300 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no message after the reconnect")
		}
	}
}

// Publish while the broker is down waits for the link, then sends.
func TestPublishWaitsForLink(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	c := dial(t, b.URL(), "waiter1")
	b.Stop()
	deadline := time.Now().Add(wait)
	for c.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("still connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// With a short ctx and the link down, the message is not sent.
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := c.Publish(short, "cmnd/dev1/Status", []byte("2"))
	cancel()
	if err == nil || errors.Is(err, ErrMaybeSent) || !strings.Contains(err.Error(), "not sent") {
		t.Fatalf("err = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Publish(ctxT(t), "cmnd/dev1/Status", []byte("0")) }()
	b.Restart()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Publish did not return after the broker came back")
	}
}

// With the session kept (clean session off, same client ID), QoS 1
// messages published while the client was away are delivered after it
// connects again, to the first Subscribe whose filter matches them.
func TestPersistentSession(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	c := dial(t, b.URL(), "persist1")
	if err := c.Subscribe(ctxT(t), "stat/+/UPGRADE", func(Message) {}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	pub := dial(t, b.URL(), "pub2")
	if err := pub.Publish(ctxT(t), "stat/dev1/UPGRADE", []byte(`{"Upgrade":"Failed Wrong MD5"}`)); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, b.URL(), "persist1")
	in := newInbox()
	if err := c2.Subscribe(ctxT(t), "stat/+/UPGRADE", in.add); err != nil {
		t.Fatal(err)
	}
	if m := in.next(t); string(m.Payload) != `{"Upgrade":"Failed Wrong MD5"}` {
		t.Fatalf("got %+v", m)
	}
}

func TestHandlerMayPublish(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	c := dial(t, b.URL(), "echo1")
	in := newInbox()
	if err := c.Subscribe(ctxT(t), "b/x", in.add); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctxT(t), "a/x", func(m Message) {
		if err := c.Publish(ctxT(t), "b/x", m.Payload); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctxT(t), "a/x", []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if m := in.next(t); string(m.Payload) != "ping" {
		t.Fatalf("got %+v", m)
	}
}

func TestNewClientID(t *testing.T) {
	a, b := NewClientID(), NewClientID()
	if a == b || len(a) > 23 || len(a) < 16 {
		t.Fatalf("%q %q", a, b)
	}
	for _, r := range a {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			t.Fatalf("%q", a)
		}
	}
}

// Forget ends the kept session: nothing published after it is delivered
// to the next connect with the same client ID.
func TestForget(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	c := dial(t, b.URL(), "forget1")
	if err := c.Subscribe(ctxT(t), "stat/+/UPGRADE", func(Message) {}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := Forget(ctxT(t), Config{URL: b.URL(), ClientID: "forget1"}); err != nil {
		t.Fatal(err)
	}
	pub := dial(t, b.URL(), "pub3")
	if err := pub.Publish(ctxT(t), "stat/dev1/UPGRADE", []byte("x")); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, b.URL(), "forget1")
	in := newInbox()
	if err := c2.Subscribe(ctxT(t), "stat/+/UPGRADE", in.add); err != nil {
		t.Fatal(err)
	}
	in.none(t, time.Second)
}

// Link follows the link: up after Connect, a change when the broker goes
// away, and up again only once the client subscribed again (the broker
// restarted without its sessions): one message published then arrives.
// Close is a last change, down for good.
func TestLink(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t, testbroker.KeepLogs())
	c := dial(t, b.URL(), "link1")
	up, changed := c.Link()
	if !up {
		t.Fatal("down after Connect")
	}
	in := newInbox()
	if err := c.Subscribe(ctxT(t), "stat/+/UPGRADE", in.add); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	select {
	case <-changed:
	case <-time.After(wait):
		t.Fatal("no change when the broker went away")
	}
	deadline := time.After(60 * time.Second)
	for {
		up, changed = c.Link()
		if up {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("the link never came back")
		}
	}
	dev := rawClient(t, b.Addr())
	dev.publish(t, "stat/dev1/UPGRADE", `{"Upgrade":"Successful. Restarting"}`)
	if m := in.next(t); m.Topic != "stat/dev1/UPGRADE" {
		t.Fatalf("got %+v", m)
	}
	c.Close()
	select {
	case <-changed:
	case <-time.After(wait):
		t.Fatal("no change at Close")
	}
	if up, _ := c.Link(); up {
		t.Fatal("up after Close")
	}
}

// lockedBuf is a log sink written from the client's goroutines.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Unsubscribe ends a filter's handlers and the broker's subscription; a
// wider filter keeps its own; subscribing again brings the retained
// message again.
func TestUnsubscribe(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dev := rawClient(t, b.Addr())
	dev.publishRetained(t, "node/update/fw/state", "v1")
	c := dial(t, b.URL(), "unsub1")
	wide, exact := newInbox(), newInbox()
	if err := c.Subscribe(ctxT(t), "+/update/+/state", wide.add); err != nil {
		t.Fatal(err)
	}
	if m := wide.next(t); !m.Retained || string(m.Payload) != "v1" {
		t.Fatalf("wide: %+v", m)
	}
	if err := c.Subscribe(ctxT(t), "node/update/fw/state", exact.add); err != nil {
		t.Fatal(err)
	}
	if m := exact.next(t); !m.Retained || string(m.Payload) != "v1" {
		t.Fatalf("exact: %+v", m)
	}
	if m := wide.next(t); !m.Retained || string(m.Payload) != "v1" { // every matching handler gets each message
		t.Fatalf("wide, at the exact subscribe: %+v", m)
	}
	if err := c.Unsubscribe(ctxT(t), "node/update/fw/state"); err != nil {
		t.Fatal(err)
	}
	// The broker's subscription is gone too: the wide filter's handler
	// gets the live message once (twice while both stood: the broker's
	// copy for each, each to both handlers), then the marker behind it.
	dev.publish(t, "node/update/fw/state", "v2")
	dev.publish(t, "mark/update/x/state", "mark")
	for _, want := range []string{"v2", "mark"} {
		if m := wide.next(t); m.Retained || string(m.Payload) != want {
			t.Fatalf("wide after, want %s: %+v", want, m)
		}
	}
	exact.none(t, 0)
	again := newInbox()
	if err := c.Subscribe(ctxT(t), "node/update/fw/state", again.add); err != nil {
		t.Fatal(err)
	}
	if m := again.next(t); !m.Retained || string(m.Payload) != "v1" {
		t.Fatalf("again: %+v", m)
	}
}
