package tasmotamqtt

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
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
	"github.com/ots-ota/ots-ota/sim/tasmota"
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

// is matches a message by topic and a payload fragment.
func is(topic, fragment string) func(msg) bool {
	return func(m msg) bool { return m.Topic == topic && strings.Contains(m.Payload, fragment) }
}

// expectSeq checks that the device's messages (topics under its name;
// tele STATE left out: it comes on its own clock), from index from on, are
// exactly want, each "TOPIC-TAIL FRAGMENT":
// "RESULT {"OtaUrl"" matches stat/<t>/RESULT with that fragment.
func expectSeq(t testing.TB, w *watcher, topic string, from int, want []string) {
	t.Helper()
	var got []msg
	// The device's own event can come before the broker has passed its
	// last messages on to the watcher: wait for as many as wanted.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got = got[:0]
		for i, m := range w.All() {
			if i >= from && strings.Contains(m.Topic, "/"+topic+"/") && !strings.HasSuffix(m.Topic, "/STATE") {
				got = append(got, m)
			}
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
	}
	bad := len(got) != len(want)
	for i := 0; !bad && i < len(want); i++ {
		tail, frag, _ := strings.Cut(want[i], " ")
		if !strings.HasSuffix(got[i].Topic, "/"+tail) || !strings.Contains(got[i].Payload, frag) {
			bad = true
		}
	}
	if bad {
		var b strings.Builder
		for _, m := range got {
			fmt.Fprintf(&b, "  %s\n", m)
		}
		t.Fatalf("device %s: messages\n%swant\n  %s", topic, b.String(), strings.Join(want, "\n  "))
	}
}

// images serves files on 127.0.0.1 with Content-Length and x-MD5 (as the
// rollout's file server does), counting requests per path.
type images struct {
	srv   *httptest.Server
	mu    sync.Mutex
	hits  []string
	noMD5 bool
}

func serve(t testing.TB, files map[string][]byte) *images {
	t.Helper()
	im := &images{}
	im.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		im.mu.Lock()
		im.hits = append(im.hits, r.URL.Path)
		noMD5 := im.noMD5
		im.mu.Unlock()
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		sum := md5.Sum(b)
		if !noMD5 {
			w.Header().Set("x-MD5", hex.EncodeToString(sum[:]))
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	}))
	t.Cleanup(im.srv.Close)
	return im
}

func (im *images) url(path string) string { return im.srv.URL + path }

func (im *images) requests() []string {
	im.mu.Lock()
	defer im.mu.Unlock()
	return append([]string(nil), im.hits...)
}

func buildImage(t testing.TB, chip, name, version string, size int) []byte {
	t.Helper()
	b, err := tasmota.Image(chip, name, version, size)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testConfig is a fleet on b with fast firmware timing.
func testConfig(b *testbroker.Broker, devs ...Device) Config {
	for i := range devs {
		if devs[i].FlashRate == 0 {
			devs[i].FlashRate = -1
		}
		if devs[i].RebootTime == 0 {
			devs[i].RebootTime = 50 * time.Millisecond
		}
	}
	return Config{Broker: b.URL(), Devices: devs, Tick: 20 * time.Millisecond}
}

// events records a fleet's events.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) { e.mu.Lock(); e.all = append(e.all, ev); e.mu.Unlock() }

func (e *events) kinds(topic string) []EventKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []EventKind
	for _, ev := range e.all {
		if ev.Device == topic {
			out = append(out, ev.Event)
		}
	}
	return out
}

func (e *events) has(topic string, k EventKind) bool {
	for _, x := range e.kinds(topic) {
		if x == k {
			return true
		}
	}
	return false
}

func startFleet(t testing.TB, cfg Config) (*Fleet, *events) {
	t.Helper()
	ev := &events{}
	cfg.OnEvent = ev.add
	f, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f, ev
}

// field reads one string field of a nested JSON payload ("Info1.Version").
func field(t testing.TB, payload, path string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(payload), &v); err != nil {
		t.Fatalf("not JSON: %s", payload)
	}
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
