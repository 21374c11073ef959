package fakedev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testMosquitto is a mosquitto run for one test on 127.0.0.1 and a free
// port, with a configuration of its own. A private starter: fakedev's tests
// use nothing of the module they test against.
type testMosquitto struct {
	addr string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const mosquittoPath = "/usr/sbin/mosquitto"

// startMosquitto starts mosquitto; users (name, password pairs) turn on
// password authentication. Without mosquitto the test skips with one line,
// unless CI=true, where it fails.
func startMosquitto(t testing.TB, users ...string) *testMosquitto {
	t.Helper()
	bin := mosquittoPath
	if _, err := os.Stat(bin); err != nil {
		if p, lerr := exec.LookPath("mosquitto"); lerr == nil {
			bin = p
		} else {
			if os.Getenv("CI") == "true" {
				t.Fatalf("mosquitto not installed (CI=true): %v", err)
			}
			t.Skip("mosquitto not installed")
		}
	}
	dir := t.TempDir()
	var lastLog string
	for attempt := 0; attempt < 3; attempt++ {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, port, _ := net.SplitHostPort(addr)
		conf := "listener " + port + " 127.0.0.1\npersistence false\nlog_dest stderr\nlog_type all\n"
		if os.Geteuid() == 0 {
			// Started as root, mosquitto drops to its own user, which
			// cannot read the test's private temp dir.
			conf += "user root\n"
		}
		if len(users) > 0 {
			pw := filepath.Join(dir, "passwd")
			for i := 0; i+1 < len(users); i += 2 {
				args := []string{"-b", pw, users[i], users[i+1]}
				if i == 0 {
					args = []string{"-c", "-b", pw, users[i], users[i+1]}
				}
				if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_passwd: %v: %s", err, out)
				}
			}
			conf += "allow_anonymous false\npassword_file " + pw + "\n"
		} else {
			conf += "allow_anonymous true\n"
		}
		cf := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		m := &testMosquitto{addr: addr, log: &syncBuffer{}, done: make(chan struct{})}
		m.cmd = exec.Command(bin, "-c", cf)
		m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
		if err := m.cmd.Start(); err != nil {
			t.Fatalf("starting mosquitto: %v", err)
		}
		go func() { _ = m.cmd.Wait(); close(m.done) }()
		if m.ready() {
			t.Cleanup(func() {
				m.stop()
				if t.Failed() {
					l := strings.Split(m.log.String(), "\n")
					t.Logf("mosquitto log (the last 80 lines):\n%s", strings.Join(l[max(0, len(l)-80):], "\n"))
				}
			})
			return m
		}
		m.stop()
		lastLog = m.log.String() // most likely the port was taken meanwhile
	}
	t.Fatalf("mosquitto did not start:\n%s", lastLog)
	return nil
}

// ready waits until the broker accepts connections, or exits.
func (m *testMosquitto) ready() bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", m.addr, time.Second)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (m *testMosquitto) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(os.Interrupt)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

func (m *testMosquitto) Addr() string { return m.addr }

// watcher is a plain test client: it records every message it gets.
type watcher struct {
	c    *mqttClient
	mu   sync.Mutex
	msgs []mqttMessage
	ch   chan struct{} // pinged on every message
}

func newWatcher(t testing.TB, addr, id string, filters ...string) *watcher {
	t.Helper()
	w := &watcher{ch: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := mqttDial(ctx, addr, mqttOptions{ClientID: id, CleanSession: true, KeepAlive: 30 * time.Second}, func(m mqttMessage) {
		w.mu.Lock()
		w.msgs = append(w.msgs, m)
		w.mu.Unlock()
		select {
		case w.ch <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatalf("watcher %s: %v", id, err)
	}
	w.c = c
	t.Cleanup(c.Disconnect)
	if len(filters) > 0 {
		if _, err := c.Subscribe(ctx, 1, filters...); err != nil {
			t.Fatalf("watcher %s: %v", id, err)
		}
	}
	return w
}

func (w *watcher) messages() []mqttMessage {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]mqttMessage(nil), w.msgs...)
}

// wait waits until some message from index from on satisfies ok, and
// returns its index.
func (w *watcher) wait(t testing.TB, from int, what string, ok func(mqttMessage) bool) int {
	t.Helper()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		ms := w.messages()
		for i := from; i < len(ms); i++ {
			if ok(ms[i]) {
				return i
			}
		}
		select {
		case <-w.ch:
		case <-deadline.C:
			t.Fatalf("no %s in 60 s; got:\n%s", what, dumpMessages(ms))
		}
	}
}

func dumpMessages(ms []mqttMessage) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "  %s retained=%v %s\n", m.Topic, m.Retained, m.Payload)
	}
	return b.String()
}

func (w *watcher) publish(t testing.TB, topic, payload string, qos byte, retain bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.c.Publish(ctx, topic, []byte(payload), qos, retain); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

func is(topic, payload string) func(mqttMessage) bool {
	return func(m mqttMessage) bool { return m.Topic == topic && (payload == "" || string(m.Payload) == payload) }
}

func TestMQTTCodec(t *testing.T) {
	pub, err := publishPacket("tele/a/LWT", []byte("Online"), 1, true, true, 7)
	if err != nil {
		t.Fatal(err)
	}
	pub0, _ := publishPacket("a/b", nil, 0, false, true, 0) // dup dropped at QoS 0
	big, _ := publishPacket("t", bytes.Repeat([]byte{'x'}, 300), 0, false, false, 0)
	cases := []struct {
		name string
		in   []byte
		want mqttPacket
		err  bool
	}{
		{"publish qos1 retained dup", pub, mqttPacket{Type: mqttPUBLISH, Flags: 0xB, Topic: "tele/a/LWT", Payload: []byte("Online"), QoS: 1, Retain: true, Dup: true, ID: 7}, false},
		{"publish qos0", pub0, mqttPacket{Type: mqttPUBLISH, Topic: "a/b", Payload: []byte{}}, false},
		{"publish two-byte length", big, mqttPacket{Type: mqttPUBLISH, Topic: "t", Payload: bytes.Repeat([]byte{'x'}, 300)}, false},
		{"connack", []byte{0x20, 2, 1, 0}, mqttPacket{Type: mqttCONNACK, SessionPresent: true}, false},
		{"connack refused", []byte{0x20, 2, 0, 5}, mqttPacket{Type: mqttCONNACK, ReturnCode: 5}, false},
		{"puback", idPacket(mqttPUBACK, 0x1234), mqttPacket{Type: mqttPUBACK, ID: 0x1234}, false},
		{"pubrel", idPacket(mqttPUBREL, 9), mqttPacket{Type: mqttPUBREL, Flags: 2, ID: 9}, false},
		{"suback", []byte{0x90, 4, 0, 3, 1, 0x80}, mqttPacket{Type: mqttSUBACK, ID: 3, Granted: []byte{1, 0x80}}, false},
		{"pingresp", []byte{0xD0, 0}, mqttPacket{Type: mqttPINGRESP}, false},
		{"connack session present on refusal", []byte{0x20, 2, 1, 4}, mqttPacket{}, true},
		{"connack code 6", []byte{0x20, 2, 0, 6}, mqttPacket{}, true},
		{"publish qos3", []byte{0x36, 5, 0, 1, 'a', 0, 1}, mqttPacket{}, true},
		{"publish qos0 dup", []byte{0x38, 3, 0, 1, 'a'}, mqttPacket{}, true},
		{"publish wildcard topic", []byte{0x30, 3, 0, 1, '#'}, mqttPacket{}, true},
		{"publish empty topic", []byte{0x30, 2, 0, 0}, mqttPacket{}, true},
		{"publish topic past the end", []byte{0x30, 3, 0, 9, 'a'}, mqttPacket{}, true},
		{"publish bad utf-8", []byte{0x30, 3, 0, 1, 0xFF}, mqttPacket{}, true},
		{"publish nul in topic", []byte{0x30, 3, 0, 1, 0}, mqttPacket{}, true},
		{"publish qos1 id 0", []byte{0x32, 5, 0, 1, 'a', 0, 0}, mqttPacket{}, true},
		{"publish qos1 no id", []byte{0x32, 4, 0, 1, 'a', 0}, mqttPacket{}, true},
		{"puback flags", []byte{0x42, 2, 0, 1}, mqttPacket{}, true},
		{"pubrel flags", []byte{0x60, 2, 0, 1}, mqttPacket{}, true},
		{"suback bad code", []byte{0x90, 3, 0, 1, 3}, mqttPacket{}, true},
		{"suback no codes", []byte{0x90, 2, 0, 1}, mqttPacket{}, true},
		{"pingresp body", []byte{0xD0, 1, 0}, mqttPacket{}, true},
		{"connect from a broker", []byte{0x10, 0}, mqttPacket{}, true},
		{"type 0", []byte{0x00, 0}, mqttPacket{}, true},
		{"type 15", []byte{0xF0, 0}, mqttPacket{}, true},
		{"length five bytes", []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, mqttPacket{}, true},
		{"length over the cap", []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, mqttPacket{}, true},
		{"cut body", []byte{0x30, 10, 0, 1}, mqttPacket{}, true},
		{"cut length", []byte{0x30, 0x80}, mqttPacket{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bytes.NewReader(c.in)
			got, err := readMQTTPacket(r, r)
			if c.err {
				if err == nil {
					t.Fatalf("decoded %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
			if r.Len() != 0 {
				t.Fatalf("%d bytes left unread", r.Len())
			}
		})
	}
}

func TestMQTTConnectPacket(t *testing.T) {
	o := mqttOptions{ClientID: "DVES_A1B2C3", KeepAlive: 30 * time.Second, CleanSession: true, WillTopic: "tele/x/LWT",
		WillPayload: []byte("Offline"), WillQoS: 1, WillRetain: true, Username: "u", Password: "p", HasUsername: true, HasPassword: true}
	b, err := o.connectPacket()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x10, 0}
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x80 | 0x40 | 0x20 | 1<<3 | 0x04 | 0x02, 0, 30,
		0, 11, 'D', 'V', 'E', 'S', '_', 'A', '1', 'B', '2', 'C', '3',
		0, 10, 't', 'e', 'l', 'e', '/', 'x', '/', 'L', 'W', 'T', 0, 7, 'O', 'f', 'f', 'l', 'i', 'n', 'e',
		0, 1, 'u', 0, 1, 'p'}
	want[1] = byte(len(body))
	want = append(want, body...)
	if !bytes.Equal(b, want) {
		t.Fatalf("CONNECT\ngot  % x\nwant % x", b, want)
	}
	if _, err := (mqttOptions{Password: "p", HasPassword: true}).connectPacket(); err == nil {
		t.Fatal("a password without a user name was accepted")
	}
	if _, err := (mqttOptions{WillTopic: "a/#"}).connectPacket(); err == nil {
		t.Fatal("a will topic with a wildcard was accepted")
	}
}

// FuzzMQTTPacket: no bytes from a broker make the decoder panic, and a
// PUBLISH it accepts encodes back to a packet that decodes the same.
func FuzzMQTTPacket(f *testing.F) {
	seed := func(b []byte, _ error) { f.Add(b) }
	seed(publishPacket("stat/t/RESULT", []byte(`{"Upgrade":"Version 14.2.0 from http://x/y.bin"}`), 1, false, false, 3))
	seed(publishPacket("cmnd/t/Backlog", []byte("OtaUrl http://127.0.0.1:1/a.bin; Upgrade 1"), 0, true, false, 0))
	f.Add([]byte{0x20, 2, 0, 0})
	f.Add([]byte{0x90, 4, 0, 1, 1, 0x80})
	f.Add(idPacket(mqttPUBACK, 1))
	f.Add(idPacket(mqttPUBREL, 1))
	f.Add([]byte{0xD0, 0})
	f.Add([]byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F})
	f.Add([]byte{0x32, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		p, err := readMQTTPacket(r, r)
		if err != nil || p.Type != mqttPUBLISH {
			return
		}
		b, err := publishPacket(p.Topic, p.Payload, p.QoS, p.Retain, p.Dup, p.ID)
		if err != nil {
			t.Fatalf("accepted PUBLISH %+v does not encode: %v", p, err)
		}
		r2 := bytes.NewReader(b)
		q, err := readMQTTPacket(r2, r2)
		if err != nil {
			t.Fatalf("re-encoded PUBLISH does not decode: %v", err)
		}
		if fmt.Sprintf("%+v", q) != fmt.Sprintf("%+v", p) {
			t.Fatalf("round trip\ngot  %+v\nwant %+v", q, p)
		}
	})
}

// TestMQTTClientMosquitto runs the client against the real broker: QoS 0
// and 1 both ways, the retained will after an abort and none after a
// clean goodbye, keep alive pings.
func TestMQTTClientMosquitto(t *testing.T) {
	m := startMosquitto(t)
	w := newWatcher(t, m.Addr(), "watcher", "dev/#")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var mu sync.Mutex
	var got []mqttMessage
	gotCh := make(chan struct{}, 8)
	dev, err := mqttDial(ctx, m.Addr(), mqttOptions{ClientID: "dev1", CleanSession: true, KeepAlive: time.Second,
		WillTopic: "dev/1/LWT", WillPayload: []byte("Offline"), WillQoS: 1, WillRetain: true}, func(msg mqttMessage) {
		mu.Lock()
		got = append(got, msg)
		mu.Unlock()
		gotCh <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Subscribe(ctx, 1, "cmd/1/#"); err != nil {
		t.Fatal(err)
	}
	if err := dev.Publish(ctx, "dev/1/LWT", []byte("Online"), 1, true); err != nil {
		t.Fatal(err)
	}
	if err := dev.Publish(ctx, "dev/1/q0", []byte("zero"), 0, false); err != nil {
		t.Fatal(err)
	}
	w.wait(t, 0, "Online", is("dev/1/LWT", "Online"))
	w.wait(t, 0, "QoS 0 message", is("dev/1/q0", "zero"))
	w.publish(t, "cmd/1/Power", "ON", 1, false)
	w.publish(t, "cmd/1/Power", "OFF", 0, false)
	for i := 0; i < 2; i++ {
		select {
		case <-gotCh:
		case <-ctx.Done():
			t.Fatal("the device got no message")
		}
	}
	mu.Lock()
	if len(got) != 2 || got[0].QoS != 1 || string(got[0].Payload) != "ON" || got[1].QoS != 0 || got[0].Retained {
		t.Fatalf("device got %+v", got)
	}
	mu.Unlock()

	// Keep alive: with 1 s, pings go out and come back; the link stays.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, answered := dev.Pings(); answered >= 2 {
			break
		}
		if time.Now().After(deadline) {
			s, a := dev.Pings()
			t.Fatalf("pings: %d sent, %d answered", s, a)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-dev.Done():
		t.Fatalf("link lost: %v", dev.Err())
	default:
	}

	// Abort: the broker publishes the retained will.
	n := len(w.messages())
	dev.Abort()
	i := w.wait(t, n, "the will", is("dev/1/LWT", "Offline"))
	if w.messages()[i].Retained {
		t.Fatal("a will delivered to a live subscription carries retain 1")
	}
	late := newWatcher(t, m.Addr(), "late", "dev/1/LWT")
	j := late.wait(t, 0, "the retained will", is("dev/1/LWT", "Offline"))
	if !late.messages()[j].Retained {
		t.Fatal("the will was not retained")
	}

	// A clean goodbye: no will.
	dev2, err := mqttDial(ctx, m.Addr(), mqttOptions{ClientID: "dev2", CleanSession: true,
		WillTopic: "dev/2/LWT", WillPayload: []byte("Offline"), WillRetain: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev2.Publish(ctx, "dev/2/LWT", []byte("Bye"), 1, false); err != nil {
		t.Fatal(err)
	}
	dev2.Disconnect()
	w.publish(t, "dev/3/marker", "after", 1, false)
	k := w.wait(t, 0, "marker", is("dev/3/marker", "after"))
	for _, msg := range w.messages()[:k] {
		if msg.Topic == "dev/2/LWT" && string(msg.Payload) == "Offline" {
			t.Fatal("the will fired after DISCONNECT")
		}
	}
}

func TestMQTTClientAuth(t *testing.T) {
	m := startMosquitto(t, "dev", "s3cret")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := mqttDial(ctx, m.Addr(), mqttOptions{ClientID: "a", CleanSession: true, Username: "dev", Password: "wrong",
		HasUsername: true, HasPassword: true}, nil)
	var ce mqttConnectError
	if !errors.As(err, &ce) || (ce != 4 && ce != 5) {
		t.Fatalf("bad password: %v, want a refusal in CONNACK", err)
	}
	c, err := mqttDial(ctx, m.Addr(), mqttOptions{ClientID: "b", CleanSession: true, Username: "dev", Password: "s3cret",
		HasUsername: true, HasPassword: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "a/b", []byte("x"), 1, false); err != nil {
		t.Fatal(err)
	}
	c.Disconnect()
}

// TestMQTTDialSilentBroker: a listener that takes the connection and never
// answers CONNECT does not hang the dial past its context.
func TestMQTTDialSilentBroker(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := mqttDial(ctx, ln.Addr().String(), mqttOptions{ClientID: "x"}, nil); err == nil {
		t.Fatal("dial to a silent broker succeeded")
	}
}
