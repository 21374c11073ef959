package fakedev

import (
	"crypto/md5"
	"encoding/hex"
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

// pullServer serves manifests and images by path on 127.0.0.1; a path
// set chunked is served without Content-Length.
type pullServer struct {
	*httptest.Server
	mu      sync.Mutex
	files   map[string][]byte
	chunked map[string]bool
	gets    []string
}

func newPullServer(t *testing.T) *pullServer {
	s := &pullServer{files: map[string][]byte{}, chunked: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.gets = append(s.gets, r.URL.Path+" "+r.Header.Get("User-Agent"))
		b, ok := s.files[r.URL.Path]
		chunked := s.chunked[r.URL.Path]
		s.mu.Unlock()
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/fw.bin", http.StatusFound)
			return
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		if chunked {
			w.(http.Flusher).Flush()
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *pullServer) set(path string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path] = b
}

func (s *pullServer) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.gets {
		if strings.HasPrefix(g, path+" ") {
			n++
		}
	}
	return n
}

func md5Hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// manifest is the shape ots-ota writes, for one chip.
func manifest(version, chip, path, sum string) []byte {
	return []byte(fmt.Sprintf(`{"name":"fw","version":%q,"builds":[{"chipFamily":%q,"ota":{"path":%q,"md5":%q,"summary":"ots-ota rollout %s"}}]}`,
		version, chip, path, sum, version))
}

// stateIs matches a state message by its versions.
func stateIs(topic, installed, latest string) func(mqttMessage) bool {
	want := fmt.Sprintf(`{"installed_version":%q,"latest_version":%q,`, installed, latest)
	return func(m mqttMessage) bool { return m.Topic == topic && strings.HasPrefix(string(m.Payload), want) }
}

func emptyState(topic string) func(mqttMessage) bool {
	return func(m mqttMessage) bool {
		return m.Topic == topic && string(m.Payload) == `{"installed_version":"","latest_version":"","title":""}`
	}
}

// waitIn waits for oks in order from index from; it returns each index.
func (w *watcher) waitIn(t *testing.T, from int, what []string, oks ...func(mqttMessage) bool) []int {
	t.Helper()
	var at []int
	for i, ok := range oks {
		j := w.wait(t, from, what[i], ok)
		at = append(at, j)
		from = j + 1
	}
	return at
}

// TestESPHomePullUpdate: the whole life as the facts have it: birth and
// state retained with "" versions before the first check, NO_UPDATE, an
// INSTALL then ignored (tripwire), the manifest changed, AVAILABLE, INSTALL,
// the same JSON once more, a clean "offline", the boot with "" versions,
// then the new installed_version.
func TestESPHomePullUpdate(t *testing.T) {
	t.Parallel()
	m := startMosquitto(t)
	srv := newPullServer(t)
	img := espImage(40000, 3)
	srv.set("/fw.bin", img)
	srv.set("/manifest.json", manifest("1.0.0", "ESP32-S3", srv.URL+"/fw.bin", md5Hex(img)))
	w := newWatcher(t, m.Addr(), "watch", "kitchen/#", "homeassistant/#")
	d := StartESPHomePull(t, "tcp://"+m.Addr(), ESPHomePull{Name: "kitchen", ChipFamily: "ESP32-S3", Source: srv.URL + "/manifest.json",
		Version: "1.0.0", Interval: 100 * time.Millisecond})[0]
	st, cmd := d.StateTopic(""), d.CommandTopic("")
	if st != "kitchen/update/firmware/state" || cmd != "kitchen/update/firmware/command" || d.StatusTopic() != "kitchen/status" {
		t.Fatalf("topics %s %s %s", st, cmd, d.StatusTopic())
	}
	at := w.waitIn(t, 0, []string{"online", "empty state", "no update"},
		is("kitchen/status", "online"), emptyState(st), stateIs(st, "1.0.0", "1.0.0"))
	ms := w.messages()
	// A late subscriber gets the birth and the last state, retained.
	late := newWatcher(t, m.Addr(), "late", "kitchen/#")
	for _, ok := range []func(mqttMessage) bool{is("kitchen/status", "online"), stateIs(st, "1.0.0", "1.0.0")} {
		if i := late.wait(t, 0, "retained", ok); !late.messages()[i].Retained {
			t.Fatalf("not retained: %s", dumpMessages(late.messages()))
		}
	}
	i := w.wait(t, 0, "discovery", is("homeassistant/update/kitchen/firmware/config", ""))
	if p := string(w.messages()[i].Payload); !strings.Contains(p, `"cmd_t":"kitchen/update/firmware/command"`) || !strings.Contains(p, `"payload_install":"INSTALL"`) {
		t.Fatalf("discovery %s", p)
	}
	if p := string(ms[at[2]].Payload); p != `{"installed_version":"1.0.0","latest_version":"1.0.0","title":"fw","release_summary":"ots-ota rollout 1.0.0"}` {
		t.Fatalf("state %s", p)
	}

	// INSTALL while NO_UPDATE: nothing, but the tripwire.
	w.publish(t, cmd, "INSTALL", 1, false)
	waitLong(t, "the INSTALL counted", func() bool { return d.InstallWhileNotAvailable() == 1 })
	if d.Installs() != 0 || len(d.Fetches()) != 0 {
		t.Fatalf("INSTALL while not available acted: %d installs, %v", d.Installs(), d.Fetches())
	}

	srv.set("/manifest.json", manifest("1.1.0", "ESP32-S3", srv.URL+"/fw.bin", md5Hex(img)))
	from := w.wait(t, 0, "available", stateIs(st, "1.0.0", "1.1.0")) + 1
	w.publish(t, cmd, "INSTALL", 1, false)
	steps := w.waitIn(t, from, []string{"install state", "offline", "online", "empty", "updated"},
		stateIs(st, "1.0.0", "1.1.0"), is("kitchen/status", "offline"), is("kitchen/status", "online"), emptyState(st), stateIs(st, "1.1.0", "1.1.0"))
	// Between INSTALL and the reboot: the same JSON, nothing else.
	w.noneBetween(t, steps[0], steps[1], "a state other than the install's", func(m mqttMessage) bool {
		return m.Topic == st && !stateIs(st, "1.0.0", "1.1.0")(m)
	})
	if d.Running() != "1.1.0" || d.Boots() != 2 || d.Installs() != 1 || d.InstallCommands() != 2 {
		t.Errorf("running %q boots %d installs %d INSTALLs %d", d.Running(), d.Boots(), d.Installs(), d.InstallCommands())
	}
	if f := d.Fetches(); len(f) != 1 || f[0].Err != "" || f[0].Bytes != int64(len(img)) || f[0].URL != srv.URL+"/fw.bin" ||
		f[0].Start.IsZero() || f[0].End.Before(f[0].Start) || f[0].Auto {
		t.Errorf("fetches %+v", f)
	}
	if d.Tripwires()[0] != "1 INSTALL while not available" || len(d.Tripwires()) != 1 {
		t.Errorf("tripwires %q", d.Tripwires())
	}
	if s := d.State(""); s.State != "NO_UPDATE" || s.Installed != "1.1.0" {
		t.Errorf("state %+v", s)
	}
	srv.mu.Lock()
	ua := srv.gets[0]
	srv.mu.Unlock()
	if !strings.Contains(ua, "ESPHome/") {
		t.Errorf("GET %q without ESPHome's User-Agent", ua)
	}
}

func TestESPHomeFirmwareURL(t *testing.T) {
	for _, c := range []struct{ source, path, want string }{
		{"http://h:8/a/b/manifest.json", "http://cdn/x.bin", "http://cdn/x.bin"},
		{"http://h:8/a/b/manifest.json", "https://cdn/x.bin", "https://cdn/x.bin"},
		{"http://h:8/a/b/manifest.json", "/fw/x.bin", "http://h:8/fw/x.bin"},
		{"http://h:8/a/b/manifest.json", "x.bin", "http://h:8/a/b/x.bin"},
		{"http://h:8/a/b/manifest.json", "sub/x.bin", "http://h:8/a/b/sub/x.bin"},
		// The quirk: "http" anywhere keeps the path as it is.
		{"http://h:8/a/manifest.json", "/fw/http-1.bin", "/fw/http-1.bin"},
		{"http://h:8/a/manifest.json", "myhttpfw.bin", "myhttpfw.bin"},
		{"https://h/manifest.json", "/x.bin", "https://h/x.bin"},
		{"http://h", "/x.bin", "http://h/x.bin"},
		{"http://h:8/a/b/manifest.json", "", ""},
	} {
		if got := esphomeFirmwareURL(c.source, c.path); got != c.want {
			t.Errorf("%s + %s = %s, want %s", c.source, c.path, got, c.want)
		}
	}
}

func TestESPHomeManifest(t *testing.T) {
	const src = "http://127.0.0.1:9/m/manifest.json"
	sum := strings.Repeat("0a", 16)
	good := string(manifest("2.0", "ESP32", "http://127.0.0.1:9/fw.bin", sum))
	for _, c := range []struct {
		name, body, chip string
		refusal          string // part; "" = taken
		latest, url      string
		shape            []string // parts, one per problem
	}{
		{name: "good", body: good, chip: "ESP32", latest: "2.0", url: "http://127.0.0.1:9/fw.bin"},
		{name: "other chip", body: good, chip: "ESP32-S3", refusal: "no build for ESP32-S3", shape: []string{"refuses"}},
		{name: "not json", body: "<html>", chip: "ESP32", refusal: "not a JSON object", shape: []string{"refuses"}},
		{name: "array", body: "[]", chip: "ESP32", refusal: "not a JSON object", shape: []string{"refuses"}},
		{name: "number version", body: `{"name":"a","version":2,"builds":[]}`, chip: "ESP32", refusal: `string "version"`, shape: []string{"refuses"}},
		{name: "no chipFamily before", body: `{"name":"a","version":"2","builds":[{"ota":{}},{"chipFamily":"ESP32","ota":{"path":"http://x/a","md5":"` + sum + `"}}]}`,
			chip: "ESP32", refusal: "build 0 has no string chipFamily", shape: []string{"refuses"}},
		{name: "no ota", body: `{"name":"a","version":"2","builds":[{"chipFamily":"ESP32"}]}`, chip: "ESP32", refusal: "no ota object", shape: []string{"refuses"}},
		{name: "no md5", body: `{"name":"a","version":"2","builds":[{"chipFamily":"ESP32","ota":{"path":"http://x/a"}}]}`, chip: "ESP32", refusal: `"md5"`, shape: []string{"refuses"}},
		{name: "relative path, upper md5, no summary", chip: "ESP32",
			body:   `{"name":"a","version":"2","builds":[{"chipFamily":"ESP32","ota":{"path":"fw.bin","md5":"` + strings.ToUpper(sum) + `"}}]}`,
			latest: "2", url: "http://127.0.0.1:9/m/fw.bin",
			shape: []string{"no ota.summary", `ota.md5 "0A0A`, `ota.path "fw.bin" is not an absolute`}},
		{name: "extra keys, two builds, empty version", chip: "ESP32",
			body:   `{"name":"a","version":"","x":1,"builds":[{"chipFamily":"ESP32","ota":{"path":"http://h/a","md5":"` + sum + `","summary":"s"}},{"chipFamily":"ESP32"}]}`,
			latest: "", url: "http://h/a",
			shape: []string{"2 builds for ESP32", "empty version", `unknown key "x"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			info, refusal := parseESPHomeManifest([]byte(c.body), c.chip, src)
			if c.refusal == "" && refusal != "" || !strings.Contains(refusal, c.refusal) {
				t.Errorf("refusal %q, want %q", refusal, c.refusal)
			}
			if refusal == "" && (info.Latest != c.latest || info.URL != c.url) {
				t.Errorf("latest %q url %q, want %q %q", info.Latest, info.URL, c.latest, c.url)
			}
			shape := esphomeManifestShape([]byte(c.body), c.chip)
			if len(shape) != len(c.shape) {
				t.Fatalf("shape %q, want %q", shape, c.shape)
			}
			for i := range shape {
				if !strings.Contains(shape[i], c.shape[i]) {
					t.Errorf("shape %q, want %q", shape, c.shape)
				}
			}
		})
	}
}

func FuzzESPHomeManifest(f *testing.F) {
	f.Add([]byte(manifest("2.0", "ESP32", "http://127.0.0.1:9/fw.bin", strings.Repeat("ab", 16))), "ESP32", "http://127.0.0.1:9/m/manifest.json")
	f.Add([]byte(`{"name":"a","version":"1","builds":[{"chipFamily":"ESP8266","ota":{"path":"x","md5":"y"}}]}`), "ESP8266", "http://h")
	f.Add([]byte(`{"builds":[1,2]}`), "ESP32", "")
	f.Fuzz(func(t *testing.T, body []byte, chip, source string) {
		info, refusal := parseESPHomeManifest(body, chip, source)
		shape := esphomeManifestShape(body, chip)
		if refusal != "" && (len(shape) == 0 || !strings.HasPrefix(shape[0], "the device refuses it")) {
			t.Fatalf("refused (%s) but shape %q", refusal, shape)
		}
		if refusal == "" && info.URL != "" && !strings.Contains(info.URL, "http") && !strings.HasPrefix(info.URL, source[:strings.LastIndexByte(source, '/')+1]) &&
			!strings.HasPrefix(info.URL, "/") {
			t.Fatalf("url %q from source %q", info.URL, source)
		}
	})
}

// pullFleet is one broker, one server and a watcher over everything.
type pullFleet struct {
	m   *testMosquitto
	srv *pullServer
	w   *watcher
	img []byte
}

func newPullFleet(t *testing.T, version string) *pullFleet {
	f := &pullFleet{m: startMosquitto(t), srv: newPullServer(t), img: espImage(30000, 5)}
	f.srv.set("/fw.bin", f.img)
	f.srv.set("/manifest.json", manifest(version, "ESP32", f.srv.URL+"/fw.bin", md5Hex(f.img)))
	f.w = newWatcher(t, f.m.Addr(), "watch", "#")
	return f
}

func (f *pullFleet) start(t *testing.T, cfgs ...ESPHomePull) map[string]*ESPHomePullDevice {
	for i := range cfgs {
		if cfgs[i].Source == "" {
			cfgs[i].Source = f.srv.URL + "/manifest.json"
		}
		if cfgs[i].Interval == 0 {
			cfgs[i].Interval = 100 * time.Millisecond
		}
	}
	out := map[string]*ESPHomePullDevice{}
	for _, d := range StartESPHomePull(t, f.m.Addr(), cfgs...) {
		out[d.Name()] = d
	}
	return out
}

// install waits until d tells latest, then sends INSTALL; it returns the
// index from which what followed is.
func (f *pullFleet) install(t *testing.T, d *ESPHomePullDevice, latest string) int {
	t.Helper()
	i := f.w.wait(t, 0, d.Name()+" available", func(m mqttMessage) bool {
		return m.Topic == d.StateTopic("") && strings.Contains(string(m.Payload), `"latest_version":"`+latest+`"`)
	})
	f.w.publish(t, d.CommandTopic(""), "INSTALL", 1, false)
	return i + 1
}

// TestESPHomePullFaults: each fault in its own device, one broker.
func TestESPHomePullFaults(t *testing.T) {
	t.Parallel()
	f := newPullFleet(t, "2.0")
	ds := f.start(t,
		ESPHomePull{Name: "cut", Version: "1.0", DownloadCut: true, FaultFetches: 1},
		ESPHomePull{Name: "md5", Version: "1.0", BadMD5: true},
		ESPHomePull{Name: "back", Version: "1.0", RollsBack: true},
		ESPHomePull{Name: "crash", Version: "1.0", RollsBack: true, CrashAfter: 500 * time.Millisecond, FirstCheck: 50 * time.Millisecond},
		ESPHomePull{Name: "gone", Version: "1.0", NeverComesBack: true},
		ESPHomePull{Name: "wrong", Version: "1.0", WrongVersion: "1.9"},
		ESPHomePull{Name: "drop", Version: "1.0", BrokerDrop: true, FetchRate: 60000},
		ESPHomePull{Name: "progress", Version: "1.0", ProgressStates: 2},
	)
	w := f.w
	same := func(d *ESPHomePullDevice, installed string) func(mqttMessage) bool {
		return stateIs(d.StateTopic(""), installed, "2.0")
	}
	status := func(d *ESPHomePullDevice, s string) func(mqttMessage) bool { return is(d.StatusTopic(), s) }

	// DownloadCut once: the state again (the same JSON), no reboot; a
	// second INSTALL goes through.
	d := ds["cut"]
	from := f.install(t, d, "2.0")
	at := w.waitIn(t, from, []string{"installing", "failed"}, same(d, "1.0"), same(d, "1.0"))
	waitLong(t, "cut's failure logged", func() bool { return len(d.Fetches()) == 1 })
	w.noneBetween(t, from, at[1], "cut rebooted", status(d, "offline"))
	if fe := d.Fetches()[0]; !strings.Contains(fe.Err, "error reading") || fe.Bytes >= int64(len(f.img)) {
		t.Errorf("cut: %+v", fe)
	}
	f.w.publish(t, d.CommandTopic(""), "INSTALL", 1, false)
	w.waitIn(t, at[1]+1, []string{"offline", "online", "updated"}, status(d, "offline"), status(d, "online"), same(d, "2.0"))

	// BadMD5: every try fails, never a reboot.
	d = ds["md5"]
	from = f.install(t, d, "2.0")
	w.waitIn(t, from, []string{"installing", "failed"}, same(d, "1.0"), same(d, "1.0"))
	waitLong(t, "md5's failure logged", func() bool { return len(d.Fetches()) == 1 })
	if fe := d.Fetches()[0]; !strings.Contains(fe.Err, "MD5 mismatch") || d.Boots() != 1 || d.Running() != "1.0" {
		t.Errorf("md5: %+v boots %d running %q", fe, d.Boots(), d.Running())
	}

	// RollsBack: offline, then the old build with an empty state, then
	// still 1.0 and 2.0 available.
	d = ds["back"]
	from = f.install(t, d, "2.0")
	w.waitIn(t, from, []string{"offline", "online", "empty", "old"}, status(d, "offline"), status(d, "online"), emptyState(d.StateTopic("")), same(d, "1.0"))
	if d.Boots() != 2 || d.Running() != "1.0" {
		t.Errorf("back: boots %d running %q", d.Boots(), d.Running())
	}

	// CrashAfter: the new build tells 2.0, the will fires, the old boots.
	d = ds["crash"]
	from = f.install(t, d, "2.0")
	at = w.waitIn(t, from, []string{"offline", "online", "new", "will", "online", "old"},
		status(d, "offline"), status(d, "online"), same(d, "2.0"), status(d, "offline"), status(d, "online"), same(d, "1.0"))
	_ = at
	if d.Boots() != 3 {
		t.Errorf("crash: boots %d", d.Boots())
	}

	// NeverComesBack: "offline" stays.
	d = ds["gone"]
	from = f.install(t, d, "2.0")
	i := w.wait(t, from, "gone offline", status(d, "offline"))
	time.Sleep(time.Second)
	w.noneBetween(t, i, len(w.messages()), "gone came back", status(d, "online"))
	if d.Running() != "" {
		t.Errorf("gone runs %q", d.Running())
	}
	late := newWatcher(t, f.m.Addr(), "late", d.StatusTopic())
	if i := late.wait(t, 0, "gone's status", status(d, "")); !late.messages()[i].Retained || string(late.messages()[i].Payload) != "offline" {
		t.Errorf("gone's status: %s", dumpMessages(late.messages()))
	}

	// WrongVersion: it boots telling 1.9; 2.0 stays available.
	d = ds["wrong"]
	from = f.install(t, d, "2.0")
	w.waitIn(t, from, []string{"offline", "empty", "wrong"}, status(d, "offline"), emptyState(d.StateTopic("")), same(d, "1.9"))
	if s := d.State(""); s.State != "AVAILABLE" {
		t.Errorf("wrong: %+v", s)
	}

	// BrokerDrop: the will mid-download, then the clean reboot's own
	// offline is lost (no link); it comes back updated.
	d = ds["drop"]
	from = f.install(t, d, "2.0")
	w.waitIn(t, from, []string{"installing", "will", "online", "updated"}, same(d, "1.0"), status(d, "offline"), status(d, "online"), same(d, "2.0"))
	if d.Boots() != 2 {
		t.Errorf("drop: boots %d", d.Boots())
	}

	// ProgressStates: three states with the same JSON before the reboot.
	d = ds["progress"]
	from = f.install(t, d, "2.0")
	at = w.waitIn(t, from, []string{"1", "2", "3", "offline"}, same(d, "1.0"), same(d, "1.0"), same(d, "1.0"), status(d, "offline"))
	w.waitIn(t, at[3], []string{"updated"}, same(d, "2.0"))

	for name, d := range ds {
		if tw := d.Tripwires(); len(tw) > 0 {
			t.Errorf("%s: tripwires %q", name, tw)
		}
	}
}

// TestESPHomePullNoCommand: faults that need no INSTALL.
func TestESPHomePullNoCommand(t *testing.T) {
	t.Parallel()
	f := newPullFleet(t, "2.0")
	ds := f.start(t,
		ESPHomePull{Name: "auto", Version: "1.0", AutoInstall: true},
		ESPHomePull{Name: "autowrong", Version: "1.0", AutoInstall: true, WrongVersion: "1.5"},
		ESPHomePull{Name: "unreach", Version: "1.0", ManifestUnreachable: true},
		ESPHomePull{Name: "silent", Version: "1.0", Silent: true},
		ESPHomePull{Name: "current", Version: "2.0"},
	)
	w := f.w
	// AutoInstall: it installs on its own.
	d := ds["auto"]
	w.waitIn(t, 0, []string{"available", "offline", "updated"}, stateIs(d.StateTopic(""), "1.0", "2.0"), is(d.StatusTopic(), "offline"),
		stateIs(d.StateTopic(""), "2.0", "2.0"))
	if d.AutoInstalls() != 1 || d.Installs() != 0 {
		t.Errorf("auto: %d auto installs, %d installs", d.AutoInstalls(), d.Installs())
	}
	// AutoInstall with a wrong version: it reflashes on every boot.
	d = ds["autowrong"]
	waitLong(t, "autowrong's third install", func() bool { return d.AutoInstalls() >= 3 })
	// ManifestUnreachable: checks, but never a latest_version.
	d = ds["unreach"]
	waitLong(t, "unreach's checks", func() bool { return d.Checks() >= 3 })
	if d.ManifestGets() != 0 || d.State("").State != "UNKNOWN" {
		t.Errorf("unreach: %d gets, %+v", d.ManifestGets(), d.State(""))
	}
	w.noneBetween(t, 0, len(w.messages()), "unreach told versions", func(m mqttMessage) bool {
		return m.Topic == d.StateTopic("") && !emptyState(d.StateTopic(""))(m)
	})
	// Silent: online, no state at all, no subscription.
	d = ds["silent"]
	waitLong(t, "silent's checks", func() bool { return d.Checks() >= 2 })
	w.noneBetween(t, 0, len(w.messages()), "silent told a state", func(m mqttMessage) bool { return strings.HasPrefix(m.Topic, "silent/update/") })
	w.publish(t, d.CommandTopic(""), "INSTALL", 1, false)
	// Current: NO_UPDATE; INSTALL is the tripwire and does nothing.
	d = ds["current"]
	i := w.wait(t, 0, "current no update", stateIs(d.StateTopic(""), "2.0", "2.0"))
	w.publish(t, d.CommandTopic(""), "INSTALL", 1, false)
	waitLong(t, "current's INSTALL counted", func() bool { return d.InstallWhileNotAvailable() == 1 })
	w.noneBetween(t, i, len(w.messages()), "current rebooted", is(d.StatusTopic(), "offline"))
	if ds["silent"].InstallCommands() != 0 || len(ds["current"].Fetches()) != 0 {
		t.Errorf("silent got %d INSTALLs; current fetched %v", ds["silent"].InstallCommands(), ds["current"].Fetches())
	}
}

// TestESPHomePullLink: a Wi-Fi drop republishes the states as they were
// (no boot); a restart empties them; two entities, and every state said
// twice.
func TestESPHomePullLink(t *testing.T) {
	t.Parallel()
	f := newPullFleet(t, "2.0")
	f.srv.set("/beta.json", manifest("3.0-beta", "ESP32", f.srv.URL+"/fw.bin", md5Hex(f.img)))
	d := f.start(t, ESPHomePull{Name: "n", Prefix: "site/n", Version: "1.0", SecondEntity: "beta", SecondSource: f.srv.URL + "/beta.json", DoubleStates: true})["n"]
	w := f.w
	st, beta := d.StateTopic(""), d.StateTopic("beta")
	if st != "site/n/update/firmware/state" || beta != "site/n/update/beta/state" {
		t.Fatalf("topics %s %s", st, beta)
	}
	a := w.wait(t, 0, "firmware", stateIs(st, "1.0", "2.0"))
	w.wait(t, a+1, "firmware twice", func(m mqttMessage) bool { return m.Topic == st })
	if !stateIs(st, "1.0", "2.0")(w.messages()[a+1]) {
		t.Errorf("the state was not said twice: %s", dumpMessages(w.messages()[a:]))
	}
	w.wait(t, 0, "beta", stateIs(beta, "1.0", "3.0-beta"))
	from := len(w.messages())
	d.Flap()
	w.waitIn(t, from, []string{"will", "online", "firmware as was", "beta as was"},
		is("site/n/status", "offline"), is("site/n/status", "online"), stateIs(st, "1.0", "2.0"), stateIs(beta, "1.0", "3.0-beta"))
	if d.Boots() != 1 || d.Onlines() != 2 {
		t.Errorf("flap: boots %d onlines %d", d.Boots(), d.Onlines())
	}
	from = len(w.messages())
	d.Restart()
	w.waitIn(t, from, []string{"offline", "online", "empty", "checked"},
		is("site/n/status", "offline"), is("site/n/status", "online"), emptyState(st), stateIs(st, "1.0", "2.0"))
	// INSTALL on the beta entity installs the beta.
	from = len(w.messages())
	w.publish(t, d.CommandTopic("beta"), "INSTALL", 1, false)
	w.waitIn(t, from, []string{"offline", "beta installed", "firmware tells it too"},
		is("site/n/status", "offline"), stateIs(beta, "3.0-beta", "3.0-beta"), stateIs(st, "3.0-beta", "2.0"))
	if d.Running() != "3.0-beta" {
		t.Errorf("running %q", d.Running())
	}
	// An unknown payload is ignored.
	w.publish(t, d.CommandTopic(""), "install", 1, false)
	waitLong(t, "the payload seen", func() bool { return len(d.Commands()) == 2 })
	if d.Installs() != 1 || len(d.Tripwires()) != 0 {
		t.Errorf("installs %d tripwires %q", d.Installs(), d.Tripwires())
	}
}

// TestESPHomePullTripwires: a retained INSTALL, manifests of a bad shape
// (one the device takes: a relative path, upper-case MD5, which then
// fails; one served without a length), a redirect followed on loopback.
func TestESPHomePullTripwires(t *testing.T) {
	t.Parallel()
	f := newPullFleet(t, "2.0")
	img := f.img
	f.srv.set("/rel/fw2.bin", img)
	f.srv.set("/rel/manifest.json", []byte(`{"name":"fw","version":"2.0","builds":[{"chipFamily":"ESP32","ota":{"path":"fw2.bin","md5":"`+strings.ToUpper(md5Hex(img))+`","summary":"s"}}]}`))
	f.srv.set("/chunk/manifest.json", manifest("2.0", "ESP32", f.srv.URL+"/moved", md5Hex(img)))
	f.srv.mu.Lock()
	f.srv.chunked["/chunk/manifest.json"] = true
	f.srv.mu.Unlock()
	ds := f.start(t,
		ESPHomePull{Name: "ret", Version: "1.0"},
		ESPHomePull{Name: "rel", Version: "1.0", Source: f.srv.URL + "/rel/manifest.json"},
		ESPHomePull{Name: "chunk", Version: "1.0", Source: f.srv.URL + "/chunk/manifest.json"},
	)
	w := f.w
	d := ds["ret"]
	f.install(t, d, "2.0") // a plain one first, then a retained one to the new build
	w.wait(t, 0, "ret updated", stateIs(d.StateTopic(""), "2.0", "2.0"))
	// A subscriber gets the retain flag only from the broker's store: on
	// its next subscription, after a Wi-Fi drop.
	w.publish(t, d.CommandTopic(""), "INSTALL", 1, true)
	waitLong(t, "ret's live INSTALL", func() bool { return d.InstallCommands() == 2 })
	d.Flap()
	waitLong(t, "ret's retained INSTALL", func() bool { return d.RetainedCommandSeen() })
	w.publish(t, d.CommandTopic(""), "", 1, true) // clear it
	if tw := d.Tripwires(); !slices.Contains(tw, "a retained command") || !slices.Contains(tw, "2 INSTALL while not available") {
		t.Errorf("ret: %q", tw)
	}

	d = ds["rel"]
	from := f.install(t, d, "2.0")
	w.waitIn(t, from, []string{"installing", "failed"}, stateIs(d.StateTopic(""), "1.0", "2.0"), stateIs(d.StateTopic(""), "1.0", "2.0"))
	waitLong(t, "rel's fetch", func() bool { return len(d.Fetches()) == 1 })
	if fe := d.Fetches()[0]; fe.URL != f.srv.URL+"/rel/fw2.bin" || !strings.Contains(fe.Err, "MD5 mismatch") {
		t.Errorf("rel: %+v", fe)
	}
	if b := d.BadManifests(); len(b) == 0 || !strings.Contains(b[0], "is not an absolute") || !strings.Contains(b[0], "lower-case") {
		t.Errorf("rel: %q", b)
	}

	d = ds["chunk"]
	from = f.install(t, d, "2.0")
	w.waitIn(t, from, []string{"offline", "updated"}, is(d.StatusTopic(), "offline"), stateIs(d.StateTopic(""), "2.0", "2.0"))
	if b := d.BadManifests(); len(b) == 0 || !strings.Contains(b[0], "without Content-Length") {
		t.Errorf("chunk: %q", b)
	}
	if n := f.srv.count("/moved"); n != 1 {
		t.Errorf("the redirect was fetched %d times", n)
	}
}

// TestESPHomePullQuirks: a first check done before the MQTT link (no ""
// state after the boot), and a path the OTA cannot take ("http" inside a
// relative path: kept as it is, then not a URL): INSTALL leaves the state
// INSTALLING with no download, until the next check.
func TestESPHomePullQuirks(t *testing.T) {
	t.Parallel()
	f := newPullFleet(t, "2.0")
	f.srv.set("/quirk.json", manifest("2.0", "ESP32", "/fw/http-1.bin", md5Hex(f.img)))
	ds := f.start(t,
		ESPHomePull{Name: "early", Version: "1.0", CheckBeforeMQTT: true},
		ESPHomePull{Name: "quirk", Version: "1.0", Source: f.srv.URL + "/quirk.json", Interval: 400 * time.Millisecond},
	)
	w := f.w
	d := ds["early"]
	i := w.wait(t, 0, "early's first state", func(m mqttMessage) bool { return m.Topic == d.StateTopic("") })
	if !stateIs(d.StateTopic(""), "1.0", "2.0")(w.messages()[i]) {
		t.Errorf("early's first state: %s", w.messages()[i].Payload)
	}
	from := f.install(t, d, "2.0")
	at := w.waitIn(t, from, []string{"offline", "online", "state"}, is(d.StatusTopic(), "offline"), is(d.StatusTopic(), "online"),
		func(m mqttMessage) bool { return m.Topic == d.StateTopic("") })
	if !stateIs(d.StateTopic(""), "2.0", "2.0")(w.messages()[at[2]]) {
		t.Errorf("early's first state after its boot: %s", w.messages()[at[2]].Payload)
	}

	d = ds["quirk"]
	f.install(t, d, "2.0")
	waitLong(t, "quirk's INSTALL", func() bool { return d.Installs() == 1 })
	if s := d.State(""); s.State != "INSTALLING" {
		t.Errorf("quirk: %+v, want INSTALLING until its next check", s)
	}
	waitLong(t, "quirk's next check", func() bool { return d.State("").State == "AVAILABLE" })
	if len(d.Fetches()) != 0 || d.Boots() != 1 {
		t.Errorf("quirk fetched %v, boots %d", d.Fetches(), d.Boots())
	}
	if b := d.BadManifests(); len(b) == 0 || !strings.Contains(b[0], `"/fw/http-1.bin" is not an absolute`) {
		t.Errorf("quirk: %q", b)
	}
}
