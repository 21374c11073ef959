package esphomepull

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testbroker"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// msg and watcher are simtest's MQTT watcher.
type (
	msg     = simtest.Msg
	watcher = simtest.Watcher
)

func watch(t testing.TB, b *testbroker.Broker, filter string) *watcher {
	t.Helper()
	return simtest.Watch(t, b.Addr(), filter)
}

// node is what a watcher saw of one node, in a short form: "online",
// "offline" for <node>/status, and "I/L" for a state (installed_version
// and latest_version; "/" for the empty state).
func nodeMsgs(w *watcher, name string) []string {
	var out []string
	for _, m := range w.All() {
		switch {
		case m.Topic == name+"/status":
			out = append(out, m.Payload)
		case m.Topic == name+"/update/"+DefaultEntity+"/state":
			var s stateJSON
			if err := json.Unmarshal([]byte(m.Payload), &s); err != nil {
				out = append(out, "bad JSON "+m.Payload)
				continue
			}
			out = append(out, s.Installed+"/"+s.Latest)
		}
	}
	return out
}

// expectNode waits until the node's messages are want (exactly, in order):
// the broker may pass the last ones on after the node's own event.
func expectNode(t testing.TB, w *watcher, name string, want ...string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = nodeMsgs(w, name); len(got) >= len(want) {
			break
		}
	}
	if strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Fatalf("%s: messages\n  %s\nwant\n  %s", name, strings.Join(got, " | "), strings.Join(want, " | "))
	}
}

// expectInOrder waits until want appears in the node's messages in order
// (others may come between).
func expectInOrder(t testing.TB, w *watcher, name string, want ...string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got = nodeMsgs(w, name)
		i := 0
		for _, g := range got {
			if i < len(want) && g == want[i] {
				i++
			}
		}
		if i == len(want) {
			return
		}
	}
	t.Fatalf("%s: messages\n  %s\nwant in this order\n  %s", name, strings.Join(got, " | "), strings.Join(want, " | "))
}

// server serves files on 127.0.0.1 with Content-Length, counting GETs per
// path.
type server struct {
	srv   *httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
}

func serve(t testing.TB) *server {
	t.Helper()
	s := &server{files: map[string][]byte{}, hits: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		b, ok := s.files[r.URL.Path]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *server) put(path string, b []byte) {
	s.mu.Lock()
	s.files[path] = b
	s.mu.Unlock()
}

func (s *server) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

func (s *server) url(path string) string { return s.srv.URL + path }

// manifestFor is a manifest of version for the image at path (md5 of img).
func manifestFor(version, chipFamily, path string, img []byte) []byte {
	sum := md5.Sum(img)
	b, _ := json.Marshal(map[string]any{"name": "sim", "version": version, "builds": []any{
		map[string]any{"chipFamily": "ESP32", "ota": map[string]any{"path": "/other.bin", "md5": strings.Repeat("0", 32)}},
		map[string]any{"chipFamily": chipFamily, "ota": map[string]any{"path": path, "md5": hex.EncodeToString(sum[:]), "summary": "s"}},
	}})
	return b
}

func buildImage(t testing.TB, version string, size int) []byte {
	t.Helper()
	b, err := sim.Image("esp32s3", "esphome-sim", version, size)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fast makes devices quick: one check soon after each boot and no other
// (an hour's interval) unless set, instant flash, short boots.
func fast(devs ...Device) []Device {
	for i := range devs {
		if devs[i].UpdateInterval == 0 {
			devs[i].UpdateInterval = time.Hour
		}
		if devs[i].FirstCheck == 0 {
			devs[i].FirstCheck = 20 * time.Millisecond
		}
		if devs[i].FlashRate == 0 {
			devs[i].FlashRate = -1
		}
		if devs[i].RebootTime == 0 {
			devs[i].RebootTime = 50 * time.Millisecond
		}
	}
	return devs
}

// events records a fleet's events, by node.
type events struct {
	mu     sync.Mutex
	byNode map[string][]Event
	sig    chan struct{}
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	e.byNode[ev.Device] = append(e.byNode[ev.Device], ev)
	e.mu.Unlock()
	select {
	case e.sig <- struct{}{}:
	default:
	}
}

func (e *events) of(name string) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.byNode[name]...)
}

// wait waits for the node's n-th event of kind (1 = the first).
func (e *events) wait(t testing.TB, name string, k EventKind, n int) Event {
	t.Helper()
	seen := 0
	return e.waitFor(t, name, fmt.Sprintf("%s event (#%d)", k, n), func(ev Event) bool {
		if ev.Event == k {
			seen++
		}
		return ev.Event == k && seen == n
	})
}

// waitFor waits for the node's first event that ok takes (ok sees the
// events in order, from the first, on every look).
func (e *events) waitFor(t testing.TB, name, what string, ok func(Event) bool) Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	done := 0
	for {
		evs := e.of(name)
		for _, ev := range evs[done:] {
			if ok(ev) {
				return ev
			}
		}
		done = len(evs)
		select {
		case <-e.sig:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			var kinds []string
			for _, ev := range e.of(name) {
				kinds = append(kinds, string(ev.Event)+" "+ev.Text)
			}
			t.Fatalf("%s: no %s; events:\n  %s", name, what, strings.Join(kinds, "\n  "))
		}
	}
}

func (e *events) has(name string, k EventKind) bool {
	for _, ev := range e.of(name) {
		if ev.Event == k {
			return true
		}
	}
	return false
}

func startFleet(t testing.TB, cfg Config) (*Fleet, *events) {
	t.Helper()
	ev := &events{byNode: map[string][]Event{}, sig: make(chan struct{}, 1)}
	cfg.OnEvent = ev.add
	if cfg.ReconnectWait == 0 {
		cfg.ReconnectWait = 100 * time.Millisecond
	}
	f, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f, ev
}
