package fakedev

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// tick shortens Tasmota's second for the tests: an upgrade takes about a
// dozen ticks.
const testTick = 40 * time.Millisecond

// imageServer serves files by name on 127.0.0.1, with Content-Length and,
// when withMD5, x-MD5; anything else is 404.
type imageServer struct {
	*httptest.Server
	mu   sync.Mutex
	gets []string
}

func newImageServer(t *testing.T, withMD5 bool, files map[string][]byte) *imageServer {
	s := &imageServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.gets = append(s.gets, r.URL.Path+" "+r.Header.Get("User-Agent")+" "+r.Header.Get("x-ESP8266-version")+r.Header.Get("x-ESP32-version"))
		s.mu.Unlock()
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if withMD5 {
			sum := md5.Sum(b)
			w.Header().Set("x-MD5", hex.EncodeToString(sum[:]))
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}

func espImage(size int, seed byte) []byte {
	b := make([]byte, size)
	b[0], b[1], b[2], b[3] = 0xE9, 3, 2, 0x40
	for i := 4; i < size; i++ {
		b[i] = byte(i*31) ^ seed
	}
	return b
}

// devWatch subscribes to a device's stat and tele topics (and its command
// topic, to see what else was published there).
func devWatch(t *testing.T, m *testMosquitto, d *TasmotaMQTTDevice, id string) *watcher {
	return newWatcher(t, m.Addr(), id, d.StatTopic("#"), d.TeleTopic("#"), d.CommandTopic("#"))
}

// step is one message a test expects, in order.
type step struct {
	topic   string
	payload string // "": any; "x*" a prefix, "*x" a suffix, "*x*" a part
}

func (s step) match(m mqttMessage) bool {
	if m.Topic != s.topic {
		return false
	}
	p := string(m.Payload)
	switch {
	case len(s.payload) > 1 && strings.HasPrefix(s.payload, "*") && strings.HasSuffix(s.payload, "*"):
		return strings.Contains(p, s.payload[1:len(s.payload)-1])
	case strings.HasPrefix(s.payload, "*"):
		return strings.HasSuffix(p, s.payload[1:])
	case strings.HasSuffix(s.payload, "*"):
		return strings.HasPrefix(p, strings.TrimSuffix(s.payload, "*"))
	}
	return s.payload == "" || string(m.Payload) == s.payload
}

// expect waits for steps in order from index from; it returns each step's
// index.
func (w *watcher) expect(t *testing.T, from int, steps ...step) []int {
	t.Helper()
	var at []int
	for _, s := range steps {
		i := w.wait(t, from, fmt.Sprintf("%s %s", s.topic, s.payload), s.match)
		at = append(at, i)
		from = i + 1
	}
	return at
}

// noneBetween fails when a message in [from, to) satisfies bad.
func (w *watcher) noneBetween(t *testing.T, from, to int, what string, bad func(mqttMessage) bool) {
	t.Helper()
	ms := w.messages()
	for i := from; i < to && i < len(ms); i++ {
		if bad(ms[i]) {
			t.Fatalf("%s at %d: %s %s\n%s", what, i, ms[i].Topic, ms[i].Payload, dumpMessages(ms))
		}
	}
}

// marker publishes a message only the watcher gets and waits for it: all
// the device said before it has arrived by then (one broker, in order).
func (w *watcher) marker(t *testing.T, d *TasmotaMQTTDevice, n int) int {
	t.Helper()
	topic := d.StatTopic("MARKER")
	w.publish(t, topic, strconv.Itoa(n), 1, false)
	return w.wait(t, 0, "marker", is(topic, strconv.Itoa(n)))
}

func jsonField(t *testing.T, payload []byte, path ...string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		t.Fatalf("%s: %v", payload, err)
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: no %s", payload, strings.Join(path, "."))
		}
		v = m[p]
	}
	return v
}

func waitLong(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s in 60 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTasmotaMQTTUpgrade: the whole ESP8266 upgrade as the facts have it:
// boot report, Status0 and Status 2, Backlog OtaUrl; Upgrade 1, the will
// as the download starts (the updater closes the MQTT socket), LWT Online
// without INFO after it, UPGRADE Successful, a planned restart with no
// will, then the boot report of the new build.
func TestTasmotaMQTTUpgrade(t *testing.T) {
	m := startMosquitto(t)
	img := espImage(20000, 1)
	srv := newImageServer(t, true, map[string][]byte{"fw.bin": img})
	d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "kitchen", Version: "14.2.0(tasmota)",
		NextVersion: "14.3.0(tasmota)", Tick: testTick, BootCount: 41})

	// A late subscriber gets the retained LWT; INFO is not retained.
	w := devWatch(t, m, d, "test")
	i := w.wait(t, 0, "retained LWT", is("tele/kitchen/LWT", "Online"))
	if !w.messages()[i].Retained {
		t.Fatal("LWT Online is not retained")
	}
	mk := w.marker(t, d, 1)
	w.noneBetween(t, 0, mk, "a retained INFO", func(m mqttMessage) bool { return strings.Contains(m.Topic, "INFO") })

	w.publish(t, "cmnd/kitchen/Status0", "", 1, false)
	i = w.wait(t, 0, "STATUS0", is("stat/kitchen/STATUS0", ""))
	st := w.messages()[i].Payload
	if v := jsonField(t, st, "StatusFWR", "Version"); v != "14.2.0(tasmota)" {
		t.Fatalf("STATUS0 version %v", v)
	}
	if v := jsonField(t, st, "StatusPRM", "BootCount"); v != 41.0 {
		t.Fatalf("STATUS0 boot count %v", v)
	}
	if v := jsonField(t, st, "StatusMEM", "Free"); v != 1000.0 {
		t.Fatalf("STATUS0 free %v", v)
	}
	if v := jsonField(t, st, "StatusSTS", "UptimeSec"); v == nil {
		t.Fatal("STATUS0 tells no UptimeSec")
	}
	w.publish(t, "cmnd/kitchen/Status", "2", 1, false)
	i = w.wait(t, 0, "STATUS2", is("stat/kitchen/STATUS2", ""))
	if v := jsonField(t, w.messages()[i].Payload, "StatusFWR", "Hardware"); v != "ESP8266EX" {
		t.Fatalf("STATUS2 hardware %v", v)
	}

	from := len(w.messages())
	u := srv.URL + "/fw.bin"
	w.publish(t, "cmnd/kitchen/Backlog", "OtaUrl "+u+"; Upgrade 1", 1, false)
	at := w.expect(t, from,
		step{"stat/kitchen/RESULT", `{"OtaUrl":"` + u + `"}`},
		step{"stat/kitchen/RESULT", `{"Upgrade":"Version 14.2.0 from ` + u + `"}`},
		step{"tele/kitchen/LWT", "Offline"}, // the updater closed the MQTT socket
		step{"tele/kitchen/LWT", "Online"},
		step{"stat/kitchen/UPGRADE", `{"Upgrade":"Successful. Restarting"}`},
		step{"tele/kitchen/LWT", "Online"},
		step{"tele/kitchen/INFO1", `{"Info1":{"Module":"Generic","Version":"14.3.0(tasmota)","FallbackTopic":"cmnd/` + d.ClientID() + `_fb/","GroupTopic":"cmnd/tasmotas/"}}`},
		step{"tele/kitchen/INFO2", `{"Info2":{"WebServerMode":"Admin",*`},
		step{"tele/kitchen/INFO3", `{"Info3":{"RestartReason":"Software/System restart","BootCount":42}}`},
	)
	w.noneBetween(t, at[2], at[5], "INFO before the restart", func(m mqttMessage) bool { return strings.Contains(m.Topic, "INFO") })
	w.noneBetween(t, at[4], at[5], "the will on a planned restart", is("tele/kitchen/LWT", "Offline"))

	if got := d.Running(); got != "14.3.0(tasmota)" {
		t.Fatalf("Running %q", got)
	}
	if d.Upgrades() != 1 || d.StatusDuringUpgrade() != 0 || d.RetainedCommandSeen() || d.Upgrading() {
		t.Fatalf("upgrades %d, status during %d, retained %v, upgrading %v", d.Upgrades(), d.StatusDuringUpgrade(), d.RetainedCommandSeen(), d.Upgrading())
	}
	if f := d.Fetches(); !slices.Equal(f, []string{u}) {
		t.Fatalf("fetches %q", f)
	}
	srv.mu.Lock()
	gets := slices.Clone(srv.gets)
	srv.mu.Unlock()
	if len(gets) != 1 || gets[0] != "/fw.bin ESP8266-http-Update 14.2.0(tasmota)" {
		t.Fatalf("server saw %q", gets)
	}
	cmds := d.Commands()
	if !slices.Contains(cmds, "cmnd/kitchen/Backlog OtaUrl "+u+"; Upgrade 1") || !slices.Contains(cmds, "cmnd/kitchen/Status0") {
		t.Fatalf("commands %q", cmds)
	}
	// The empty POWER each connection publishes on its own command topic.
	w.wait(t, 0, "the empty POWER", is("cmnd/kitchen/POWER", ""))
}

// TestTasmotaMQTTShapes: the two INFO shapes and the two Status 0 forms.
func TestTasmotaMQTTShapes(t *testing.T) {
	m := startMosquitto(t)
	for _, flat := range []bool{false, true} {
		t.Run(fmt.Sprintf("flat=%v", flat), func(t *testing.T) {
			topic := fmt.Sprintf("shape%v", flat)
			w := newWatcher(t, m.Addr(), "w"+topic, "tele/"+topic+"/#", "stat/"+topic+"/#")
			d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: topic, Version: "14.2.0(tasmota32solo1)", CodeCores: "single-core",
				Tick: testTick, FlatInfo: flat})
			if d.esp8266 {
				t.Fatal("a tasmota32 image is an ESP32")
			}
			i1 := w.wait(t, 0, "INFO1", is("tele/"+topic+"/INFO1", ""))
			i3 := w.wait(t, 0, "INFO3", is("tele/"+topic+"/INFO3", ""))
			p1, p3 := w.messages()[i1].Payload, w.messages()[i3].Payload
			if flat {
				if jsonField(t, p1, "Version") != "14.2.0(tasmota32solo1)single-core" || jsonField(t, p3, "RestartReason") != "Software reset CPU" ||
					jsonField(t, p3, "BootCount") != nil {
					t.Fatalf("flat INFO1 %s INFO3 %s", p1, p3)
				}
			} else if jsonField(t, p1, "Info1", "Version") != "14.2.0(tasmota32solo1)single-core" || jsonField(t, p3, "Info3", "BootCount") != 17.0 {
				t.Fatalf("wrapped INFO1 %s INFO3 %s", p1, p3)
			}
			// Status 0 answers section by section; Status0 merges them
			// from 9.5 on.
			w.publish(t, "cmnd/"+topic+"/Status", "0", 1, false)
			for _, n := range []string{"", "1", "2", "3", "4", "5", "6", "7", "10", "11"} {
				w.wait(t, 0, "STATUS"+n, is("stat/"+topic+"/STATUS"+n, ""))
			}
			from := len(w.messages())
			w.publish(t, "cmnd/"+topic+"/Status0", "", 1, false)
			if flat {
				w.wait(t, from, "STATUS11 again", is("stat/"+topic+"/STATUS11", ""))
			} else {
				i := w.wait(t, from, "STATUS0", is("stat/"+topic+"/STATUS0", ""))
				if jsonField(t, w.messages()[i].Payload, "StatusFWR", "Version") != "14.2.0(tasmota32solo1)single-core" {
					t.Fatalf("STATUS0 %s", w.messages()[i].Payload)
				}
			}
		})
	}
}

// TestTasmotaMQTTFaults: each fault, its reports in the firmware's words
// and what the device runs after it.
func TestTasmotaMQTTFaults(t *testing.T) {
	m := startMosquitto(t)
	img, minimal := espImage(20000, 2), espImage(8000, 3)
	cases := []struct {
		name    string
		cfg     TasmotaMQTT
		noMD5   bool
		steps   func(tp, u string) []step
		running string // after; "" = gone
		fetches func(u string) []string
		check   func(t *testing.T, m *testMosquitto, w *watcher, d *TasmotaMQTTDevice, at []int)
	}{
		{name: "download cut, every try (ESP32)", cfg: TasmotaMQTT{Version: "14.2.0(tasmota32)", DownloadCut: true},
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Failed Update error: Stream Read Timeout"}`}}
			},
			running: "14.2.0(tasmota32)", fetches: func(u string) []string { return []string{u, u, u, u} }},
		{name: "download cut once, then taken (ESP8266)", cfg: TasmotaMQTT{DownloadCut: true, FaultFetches: 1},
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`}, {"tele/" + tp + "/INFO1", `*"Version":"14.3.0(tasmota)"*`}}
			},
			running: "14.3.0(tasmota)", fetches: func(u string) []string { return []string{u, u} }},
		{name: "bad md5 (ESP32)", cfg: TasmotaMQTT{Version: "14.2.0(tasmota32)", BadMD5: true},
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Failed Update error: MD5 Check Failed"}`}}
			},
			running: "14.2.0(tasmota32)", fetches: func(u string) []string { return []string{u, u, u, u} }},
		{name: "bad md5 (ESP8266): .gz from the sixth try, the last words are its 404", cfg: TasmotaMQTT{BadMD5: true},
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Failed File Not Found (404)"}`}}
			},
			running: "14.2.0(tasmota)", fetches: func(u string) []string {
				return []string{u, u, u, u, u, u + ".gz", u + ".gz", u + ".gz", u + ".gz"}
			},
			check: func(t *testing.T, m *testMosquitto, w *watcher, d *TasmotaMQTTDevice, at []int) {
				// Each try had its own words; only the last try's are told.
				want := fmt.Sprintf("try 1: Update error: MD5 Failed: expected:%x, calculated:", md5.Sum(img))
				if !slices.ContainsFunc(d.Log(), func(l string) bool { return strings.Contains(l, want) }) {
					t.Fatalf("no %q in\n%s", want, strings.Join(d.Log(), "\n"))
				}
			}},
		{name: "bad md5 without x-MD5 (ESP8266)", cfg: TasmotaMQTT{BadMD5: true}, noMD5: true,
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Failed File Not Found (404)"}`}}
			},
			running: "14.2.0(tasmota)"},
		{name: "rolls back (ESP8266)", cfg: TasmotaMQTT{RollsBack: true},
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`},
					{"tele/" + tp + "/INFO1", `*"Version":"14.2.0(tasmota)"*`},
					{"tele/" + tp + "/INFO3", `{"Info3":{"RestartReason":"Exception","BootCount":18}}`}}
			},
			running: "14.2.0(tasmota)"},
		{name: "rolls back with a crash dump", cfg: TasmotaMQTT{RollsBack: true, CrashDump: true},
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`},
					{"tele/" + tp + "/INFO3", `{"Info3":{"RestartReason":{*`}}
			},
			running: "14.2.0(tasmota)"},
		{name: "boots, reports, then crashes back", cfg: TasmotaMQTT{RollsBack: true, CrashAfter: 5 * testTick},
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`},
					{"tele/" + tp + "/INFO1", `*"Version":"14.3.0(tasmota)"*`},
					{"tele/" + tp + "/LWT", "Offline"},
					{"tele/" + tp + "/INFO1", `*"Version":"14.2.0(tasmota)"*`},
					{"tele/" + tp + "/INFO3", `{"Info3":{"RestartReason":"Exception","BootCount":19}}`}}
			},
			running: "14.2.0(tasmota)"},
		{name: "rolls back (ESP32): the reason cannot tell", cfg: TasmotaMQTT{Version: "14.2.0(tasmota32)", NextVersion: "14.3.0(tasmota32)", RollsBack: true},
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`},
					{"tele/" + tp + "/INFO1", `*"Version":"14.2.0(tasmota32)"*`},
					{"tele/" + tp + "/INFO3", `{"Info3":{"RestartReason":"Software reset CPU","BootCount":18}}`}}
			},
			running: "14.2.0(tasmota32)"},
		{name: "never comes back: no will, the LWT stays Online", cfg: TasmotaMQTT{NeverComesBack: true},
			steps: func(tp, u string) []step {
				return []step{{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`}}
			},
			running: "",
			check: func(t *testing.T, m *testMosquitto, w *watcher, d *TasmotaMQTTDevice, at []int) {
				waitLong(t, "down", func() bool { return d.Running() == "" })
				time.Sleep(10 * testTick)
				mk := w.marker(t, d, 7)
				w.noneBetween(t, at[0], mk, "a message after the restart", func(m mqttMessage) bool { return strings.HasPrefix(m.Topic, "tele/") })
				late := newWatcher(t, m.Addr(), "late-"+d.Topic(), d.TeleTopic("LWT"))
				i := late.wait(t, 0, "retained LWT", is(d.TeleTopic("LWT"), ""))
				if got := late.messages()[i]; string(got.Payload) != "Online" || !got.Retained {
					t.Fatalf("retained LWT %s retained=%v", got.Payload, got.Retained)
				}
			}},
		{name: "two-step (ESP8266): -minimal, then the image", cfg: TasmotaMQTT{TwoStep: true},
			steps: func(tp, u string) []step {
				return []step{
					{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`},
					{"tele/" + tp + "/INFO1", `*"Version":"14.3.0(minimal)"*`},
					{"tele/" + tp + "/INFO3", `*"BootCount":18}}`},
					{"tele/" + tp + "/LWT", "Offline"},
					{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`},
					{"tele/" + tp + "/INFO1", `*"Version":"14.3.0(tasmota)"*`},
					{"tele/" + tp + "/INFO3", `*"BootCount":19}}`}}
			},
			running: "14.3.0(tasmota)", fetches: func(u string) []string {
				return []string{u, strings.TrimSuffix(u, "fw.bin") + "fw-minimal.bin", u}
			}},
		{name: "two-step by size (ESP8266)", cfg: TasmotaMQTT{FreeKiB: 10},
			steps: func(tp, u string) []step {
				return []step{{"tele/" + tp + "/INFO1", `*"Version":"14.3.0(minimal)"*`}, {"tele/" + tp + "/INFO1", `*"Version":"14.3.0(tasmota)"*`}}
			},
			running: "14.3.0(tasmota)", fetches: func(u string) []string {
				return []string{u, strings.TrimSuffix(u, "fw.bin") + "fw-minimal.bin", u}
			}},
		{name: "two-step (ESP32): safeboot fetches", cfg: TasmotaMQTT{Version: "14.2.0(tasmota32)", NextVersion: "14.3.0(tasmota32)", TwoStep: true},
			steps: func(tp, u string) []step {
				return []step{
					{"tele/" + tp + "/INFO1", `*"Version":"14.2.0(safeboot)"*`},
					{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`},
					{"tele/" + tp + "/INFO1", `*"Version":"14.3.0(tasmota32)"*`}}
			},
			running: "14.3.0(tasmota32)", fetches: func(u string) []string { return []string{u} }},
		{name: "broker drop mid-fetch (ESP32): back without a restart", cfg: TasmotaMQTT{Version: "14.2.0(tasmota32)", NextVersion: "14.3.0(tasmota32)", BrokerDrop: true},
			steps: func(tp, u string) []step {
				return []step{
					{"tele/" + tp + "/LWT", "Offline"},
					{"tele/" + tp + "/LWT", "Online"},
					{"stat/" + tp + "/UPGRADE", `{"Upgrade":"Successful. Restarting"}`},
					{"tele/" + tp + "/INFO1", `*"Version":"14.3.0(tasmota32)"*`}}
			},
			running: "14.3.0(tasmota32)",
			check: func(t *testing.T, m *testMosquitto, w *watcher, d *TasmotaMQTTDevice, at []int) {
				w.noneBetween(t, at[0], at[2], "INFO on a reconnect", func(m mqttMessage) bool { return strings.Contains(m.Topic, "INFO") })
			}},
		{name: "outcome lost: only the boot tells", cfg: TasmotaMQTT{Version: "14.2.0(tasmota32)", NextVersion: "14.3.0(tasmota32)", LoseOutcome: true},
			steps: func(tp, u string) []step {
				return []step{{"tele/" + tp + "/LWT", "Offline"}, {"tele/" + tp + "/INFO1", `*"Version":"14.3.0(tasmota32)"*`}}
			},
			running: "14.3.0(tasmota32)",
			check: func(t *testing.T, m *testMosquitto, w *watcher, d *TasmotaMQTTDevice, at []int) {
				w.noneBetween(t, 0, at[1], "UPGRADE", func(m mqttMessage) bool { return strings.HasSuffix(m.Topic, "/UPGRADE") })
			}},
		{name: "outcome lost on a failure: back online, no restart", cfg: TasmotaMQTT{Version: "14.2.0(tasmota32)", LoseOutcome: true, DownloadCut: true},
			steps: func(tp, u string) []step {
				return []step{{"tele/" + tp + "/LWT", "Offline"}, {"tele/" + tp + "/LWT", "Online"}}
			},
			running: "14.2.0(tasmota32)", fetches: func(u string) []string { return []string{u, u, u, u} },
			check: func(t *testing.T, m *testMosquitto, w *watcher, d *TasmotaMQTTDevice, at []int) {
				mk := w.marker(t, d, 9)
				w.noneBetween(t, 0, mk, "UPGRADE or INFO", func(m mqttMessage) bool {
					return strings.HasSuffix(m.Topic, "/UPGRADE") || strings.Contains(m.Topic, "/INFO")
				})
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := newImageServer(t, !c.noMD5, map[string][]byte{"fw.bin": img, "fw-minimal.bin": minimal})
			cfg := c.cfg
			cfg.Topic = fmt.Sprintf("fault%x", md5.Sum([]byte(c.name)))[:13]
			cfg.Tick = testTick
			if cfg.NextVersion == "" {
				cfg.NextVersion = "14.3.0(tasmota)"
			}
			d := StartTasmotaMQTT(t, m.Addr(), cfg)
			w := devWatch(t, m, d, "w-"+cfg.Topic)
			w.marker(t, d, 0)
			from := len(w.messages())
			u := srv.URL + "/fw.bin"
			w.publish(t, d.CommandTopic("Backlog"), "OtaUrl "+u+"; Upgrade 1", 1, false)
			at := w.expect(t, from, c.steps(cfg.Topic, u)...)
			if c.running != "" {
				waitLong(t, "running "+c.running, func() bool { return d.Running() == c.running && !d.Upgrading() })
			}
			if c.fetches != nil {
				if f := d.Fetches(); !slices.Equal(f, c.fetches(u)) {
					t.Fatalf("fetches\n%q\nwant\n%q", f, c.fetches(u))
				}
			}
			if c.check != nil {
				c.check(t, m, w, d, at)
			}
			if d.Upgrades() != 1 || d.StatusDuringUpgrade() != 0 {
				t.Fatalf("upgrades %d, status during %d", d.Upgrades(), d.StatusDuringUpgrade())
			}
		})
	}
}

// TestTasmotaMQTTTripwires: Status during an upgrade is counted, Silent
// answers none, a retained command runs on every subscribe and is seen,
// group and fallback topics reach the device.
func TestTasmotaMQTTTripwires(t *testing.T) {
	m := startMosquitto(t)
	img := espImage(64000, 4)
	srv := newImageServer(t, true, map[string][]byte{"fw.bin": img})

	t.Run("status during an upgrade", func(t *testing.T) {
		d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "trip1", Version: "14.2.0(tasmota32)", Tick: testTick, FetchRate: 64000})
		w := devWatch(t, m, d, "w-trip1")
		w.publish(t, "cmnd/trip1/Backlog", "OtaUrl "+srv.URL+"/fw.bin; Upgrade 1", 1, false)
		waitLong(t, "upgrading", d.Upgrading)
		w.publish(t, "cmnd/trip1/Status", "2", 1, false)
		waitLong(t, "the tripwire", func() bool { return d.StatusDuringUpgrade() == 1 })
		w.wait(t, 0, "new build", is("tele/trip1/INFO1", ""))
		if d.Statuses() != 1 {
			t.Fatalf("statuses %d", d.Statuses())
		}
	})
	t.Run("silent", func(t *testing.T) {
		d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "trip2", Tick: testTick, Silent: true})
		w := devWatch(t, m, d, "w-trip2")
		w.publish(t, "cmnd/trip2/Status0", "", 1, false)
		waitLong(t, "the Status taken", func() bool { return d.Statuses() == 1 })
		mk := w.marker(t, d, 1)
		w.noneBetween(t, 0, mk, "a Status answer", func(m mqttMessage) bool { return strings.HasPrefix(m.Topic, "stat/trip2/STATUS") })
	})
	t.Run("retained command", func(t *testing.T) {
		d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "trip3", Tick: testTick})
		w := devWatch(t, m, d, "w-trip3")
		w.publish(t, "cmnd/trip3/OtaUrl", "http://127.0.0.1:9/x.bin", 1, true)
		t.Cleanup(func() { w.publish(t, "cmnd/trip3/OtaUrl", "", 1, true) })
		waitLong(t, "OtaUrl set", func() bool { return d.OtaURL() == "http://127.0.0.1:9/x.bin" })
		if d.RetainedCommandSeen() {
			t.Fatal("a live subscription got the retain flag")
		}
		// The restart resubscribes: the broker hands the stored command
		// over, flagged retained, and the device runs it again.
		n := len(d.Commands())
		w.publish(t, "cmnd/trip3/Restart", "1", 1, false)
		waitLong(t, "the retained command", d.RetainedCommandSeen)
		if got := d.Commands()[n:]; !slices.Contains(got, "cmnd/trip3/OtaUrl http://127.0.0.1:9/x.bin") {
			t.Fatalf("commands after the restart %q", got)
		}
	})
	t.Run("group and fallback topics", func(t *testing.T) {
		d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "trip4", GroupTopic: "grp4", Tick: testTick})
		w := devWatch(t, m, d, "w-trip4")
		w.publish(t, "cmnd/grp4/OtaUrl", "", 1, false)
		w.publish(t, "cmnd/"+d.ClientID()+"_fb/Status", "2", 1, false)
		w.expect(t, 0, step{"stat/trip4/RESULT", `{"OtaUrl":*`}, step{"stat/trip4/STATUS2", ""})
		if got := d.Commands(); len(got) != 2 || !strings.HasPrefix(got[0], "cmnd/grp4/OtaUrl") {
			t.Fatalf("commands %q", got)
		}
	})
	t.Run("upgrade refused", func(t *testing.T) {
		d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "trip5", Tick: testTick})
		w := devWatch(t, m, d, "w-trip5")
		w.publish(t, "cmnd/trip5/Upgrade", "14.1.0", 1, false)
		w.expect(t, 0, step{"stat/trip5/RESULT", `{"Upgrade":"1 or >14.2.0 to upgrade"}`})
		if d.Upgrades() != 0 || d.Upgrading() {
			t.Fatal("an older version started an upgrade")
		}
	})
}

// TestTasmotaMQTTLink: the will fires on an abrupt restart and not on a
// planned one, keep alive holds the link, a broker that wants a password
// gets it.
func TestTasmotaMQTTLink(t *testing.T) {
	t.Run("will on an abrupt restart", func(t *testing.T) {
		m := startMosquitto(t)
		d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "abrupt", Tick: testTick, AbruptRestart: true})
		w := devWatch(t, m, d, "w-abrupt")
		w.marker(t, d, 0)
		from := len(w.messages())
		w.publish(t, "cmnd/abrupt/Restart", "1", 1, false)
		at := w.expect(t, from, step{"stat/abrupt/RESULT", `{"Restart":"Restarting"}`}, step{"tele/abrupt/LWT", "Offline"},
			step{"tele/abrupt/LWT", "Online"}, step{"tele/abrupt/INFO3", `{"Info3":{"RestartReason":"Software/System restart","BootCount":18}}`})
		if w.messages()[at[1]].Retained {
			t.Fatal("a will to a live subscription came flagged retained")
		}
	})
	t.Run("no will on a planned restart", func(t *testing.T) {
		m := startMosquitto(t)
		d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "planned", Tick: testTick})
		w := devWatch(t, m, d, "w-planned")
		w.publish(t, "cmnd/planned/Restart", "1", 1, false)
		at := w.expect(t, 0, step{"stat/planned/RESULT", `{"Restart":"Restarting"}`}, step{"tele/planned/INFO1", ""})
		w.noneBetween(t, at[0], at[1], "the will", is("tele/planned/LWT", "Offline"))
	})
	t.Run("keep alive", func(t *testing.T) {
		m := startMosquitto(t)
		d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "ka", Tick: testTick, KeepAlive: time.Second})
		d.mu.Lock()
		c := d.link
		d.mu.Unlock()
		waitLong(t, "two pings answered", func() bool { _, a := c.Pings(); return a >= 2 })
		d.mu.Lock()
		same, n := d.link == c, d.mqttCount
		d.mu.Unlock()
		if !same || n != 1 {
			t.Fatalf("the link did not hold: same %v, connections %d", same, n)
		}
	})
	t.Run("password", func(t *testing.T) {
		m := startMosquitto(t, "dev", "pw1", "test", "pw2")
		d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "auth", Tick: testTick, Username: "dev", Password: "pw1"})
		if d.Running() == "" {
			t.Fatal("not running")
		}
	})
}

func TestTasmotaMQTTTopics(t *testing.T) {
	cases := []struct {
		full, prefix, want string
	}{
		{"%prefix%/%topic%/", "cmnd", "cmnd/dev/"},
		{"%prefix%/%topic%/", "tele", "tele/dev/"},
		{"%topic%/%prefix%/", "stat", "dev/stat/"},
		{"home/%topic%", "tele", "home/dev/"},
		{"home/%topic%", "cmnd", "home/dev/cmnd/"},
		{"home/#/%topic%//x", "stat", "home/dev/x/"},
		{"%prefix%/%id%/", "cmnd", "cmnd/AABBCC010203/"},
		{"%prefix%/%hostname%/", "cmnd", "cmnd/dev-0001/"},
	}
	for _, c := range cases {
		d := &TasmotaMQTTDevice{cfg: TasmotaMQTT{FullTopic: c.full}, mac: "AABBCC010203", hostname: "dev-0001"}
		if got := d.topicFor(c.prefix, "dev"); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.full, c.prefix, got, c.want)
		}
	}
	if !newerRelease("14.3.0", "14.2.9") || newerRelease("14.2.0", "14.2.0") || newerRelease("9.5", "14.2.0") {
		t.Error("newerRelease")
	}
	if n, i := splitCommand("Status0"); n != "STATUS" || i != "0" {
		t.Errorf("splitCommand: %s %s", n, i)
	}
}

// TestTasmotaMQTTFullTopic: a custom FullTopic carries commands and
// reports.
func TestTasmotaMQTTFullTopic(t *testing.T) {
	m := startMosquitto(t)
	d := StartTasmotaMQTT(t, m.Addr(), TasmotaMQTT{Topic: "ft", FullTopic: "site/%topic%/%prefix%/", Tick: testTick})
	w := newWatcher(t, m.Addr(), "w-ft", "site/#")
	i := w.wait(t, 0, "LWT", is("site/ft/tele/LWT", "Online"))
	if !w.messages()[i].Retained {
		t.Fatal("LWT not retained")
	}
	w.publish(t, "site/ft/cmnd/Status", "2", 1, false)
	w.wait(t, 0, "STATUS2", is("site/ft/stat/STATUS2", ""))
	if d.CommandTopic("Backlog") != "site/ft/cmnd/Backlog" {
		t.Fatal(d.CommandTopic("Backlog"))
	}
}
