// Issue 21's rollout (rollout.Run with the Tasmota family over a real
// mosquitto) against the independent pulling Tasmota fakes
// (fakedev.StartTasmotaMQTT), which share no code with the client nor the
// simulator.

package pushtest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/fileserve"
	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/internal/testbroker"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/rollout/tasmota"
	"github.com/ots-ota/ots-ota/upload"
)

// Short timings in place of the rollout's defaults. Their order is the
// real one: a fake's restart (RebootTime, four ticks) is far shorter than
// the reboot window, the stability window outlasts a CrashAfter, and the
// per-device bound outlasts every fault's download tries.
const (
	tick21      = 40 * time.Millisecond
	read21      = 2 * time.Second // Preflight, Reread and Restore
	reboot21    = 3 * time.Second // RebootWindow
	stability21 = time.Second
	bound21     = 5 * time.Second // Timeout, from the last command
	// runBound21 is how long any run may take here: one still going then
	// hangs.
	runBound21 = 60 * time.Second
	expect21   = "14.3.0"
)

// group21 is one test's broker, image, devices and spy.
type group21 struct {
	t     *testing.T
	b     *testbroker.Broker
	dir   string
	img   string // FIRMWARE
	spy   *spy
	names []string
	fakes map[string]*fakedev.TasmotaMQTTDevice
	cfgs  map[string]fakedev.TasmotaMQTT
}

// newGroup21 starts mosquitto and the spy, and writes fw.bin for chip;
// with companions also what Tasmota's ESP8266 updater may ask for beside
// it: fw-minimal.bin and fw.bin.gz (gzip, as Tasmota's releases are).
func newGroup21(t *testing.T, chip image.Chip, companions bool, opts ...testbroker.Option) *group21 {
	t.Helper()
	g := &group21{t: t, b: testbroker.Start(t, append(opts, testbroker.KeepLogs())...), dir: t.TempDir(),
		fakes: map[string]*fakedev.TasmotaMQTTDevice{}, cfgs: map[string]fakedev.TasmotaMQTT{}}
	build := func(name string, size int, seed int64) []byte {
		b, err := image.Build(image.BuildOptions{Chip: chip, Project: "tasmota", Version: expect21, Size: size, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(g.dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return b
	}
	fw := build("fw.bin", 96<<10, 2101)
	g.img = filepath.Join(g.dir, "fw.bin")
	if companions {
		build("fw-minimal.bin", 48<<10, 2102)
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, _ = zw.Write(fw)
		_ = zw.Close()
		if err := os.WriteFile(filepath.Join(g.dir, "fw.bin.gz"), gz.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g.spy = startSpy21(t, g.b)
	return g
}

// add starts a fake named (and topic) name; its OtaUrl is its own, so a
// restore to the wrong device shows.
func (g *group21) add(name string, cfg fakedev.TasmotaMQTT) *fakedev.TasmotaMQTTDevice {
	g.t.Helper()
	cfg.Topic = name
	if cfg.Tick == 0 {
		cfg.Tick = tick21
	}
	if cfg.OtaUrl == "" {
		cfg.OtaUrl = "http://ota.tasmota.com/tasmota/release/" + name + ".bin.gz"
	}
	d := fakedev.StartTasmotaMQTT(g.t, g.b.Addr(), cfg)
	g.names = append(g.names, name)
	g.fakes[name], g.cfgs[name] = d, cfg
	return d
}

func (g *group21) devices() []rollout.Device {
	var out []rollout.Device
	for _, n := range g.names {
		out = append(out, rollout.Device{Name: n, Topic: n, FullTopic: g.cfgs[n].FullTopic})
	}
	return out
}

// config is a rollout of every device with the short timings.
func (g *group21) config(plan rollout.Plan) rollout.Config {
	return rollout.Config{Devices: g.devices(), Plan: plan, Expect: expect21, ImagePath: g.img,
		Serve: fileserve.Config{Addr: "127.0.0.1:0"}, MaxFetches: 16, Retries: 1,
		Timeout: bound21, RebootWindow: reboot21, Stability: stability21, ReadTimeout: read21}
}

// createState opens a new rollout's state for cfg; the MQTT client id is
// the one the runs use.
func (g *group21) createState(cfg rollout.Config, clientID string) *rollout.State {
	g.t.Helper()
	st, err := rollout.CreateState(filepath.Join(g.dir, "state"), rollout.Meta{Family: "tasmota", Firmware: g.img,
		Expect: cfg.Expect, Plan: cfg.Plan, ServeAddr: cfg.Serve.Addr, Broker: g.b.URL(), ClientID: clientID, Devices: cfg.Devices})
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { st.Close() })
	return st
}

// runOut is what one rollout.Run gave.
type runOut struct {
	results map[string]upload.Result
	done    map[string]time.Time // when each device's result came
	waves   []rollout.WaveEvent
	token   string // the URL token devices were told
}

// run is one rollout.Run over a client of its own (clientID, persistent
// session) with the Tasmota family. A run outlasting runBound21 fails the
// test (and is interrupted).
func (g *group21) run(ctx context.Context, cfg rollout.Config, st *rollout.State, clientID string) runOut {
	g.t.Helper()
	c, err := broker.Connect(ctx, broker.Config{URL: g.b.URL(), ClientID: clientID})
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	out := runOut{results: map[string]upload.Result{}, done: map[string]time.Time{}}
	var mu sync.Mutex
	cfg.Family = tasmota.New(c, tasmota.Options{})
	cfg.State = st
	cfg.OnEvent = func(e upload.FleetEvent) {
		if e.Phase == upload.PhaseDone {
			mu.Lock()
			out.done[e.Target] = e.Time
			mu.Unlock()
		}
	}
	onWave := cfg.OnWave
	cfg.OnWave = func(w rollout.WaveEvent) {
		mu.Lock()
		out.waves = append(out.waves, w)
		mu.Unlock()
		if onWave != nil {
			onWave(w)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, runBound21)
	defer cancel()
	res, err := rollout.Run(ctx, cfg)
	if err != nil {
		g.t.Fatalf("rollout.Run: %v", err)
	}
	if ctx.Err() == context.DeadlineExceeded {
		g.t.Errorf("the rollout still ran after %s: it hangs", runBound21)
	}
	out.token = st.Record().Serve.Token
	mu.Lock()
	defer mu.Unlock()
	for _, r := range res {
		g.t.Logf("%s: %s tries %d source %q running %q words %q: %s %v", r.Device, r.OutcomeText(), r.Tries, r.VersionSource, r.Running, r.Words, r.Message, r.Warnings)
		out.results[r.Device] = r
	}
	if len(res) != len(cfg.Devices) {
		g.t.Fatalf("%d results for %d devices", len(res), len(cfg.Devices))
	}
	return out
}

// runAll creates the state and runs once.
func (g *group21) runAll(cfg rollout.Config) runOut {
	g.t.Helper()
	id := broker.NewClientID()
	return g.run(context.Background(), cfg, g.createState(cfg, id), id)
}

// want21 is one device's expected verdict.
type want21 struct {
	outcome upload.Outcome
	tries   int          // commands sent = Result.Tries = Backlogs the device and the spy saw
	words   string       // a part of Result.Words; "" = no words
	class   upload.Class // "" = not checked
	reason  upload.Reason
	source  string // VersionSource; "" = none; "a|b" either
	running string // Running; "" = none
	message string // a part of Message; "" = not checked
	// gone: the device never came back, so its old OtaUrl cannot be put
	// back; every other device must have its old one at the end.
	gone bool
}

// check asserts each device's verdict, and for every device the
// tripwires: no Status during an upgrade, no retained command, as many
// commands as the result says (the fake's count and the spy's), its old
// OtaUrl back.
func (g *group21) check(out runOut, wants map[string]want21) {
	g.t.Helper()
	for _, name := range g.names {
		w, ok := wants[name]
		if !ok {
			g.t.Fatalf("no verdict expected for %s", name)
		}
		r, ok := out.results[name]
		if !ok {
			g.t.Errorf("%s: no result", name)
			continue
		}
		cfg := g.cfgs[name]
		if r.Outcome != w.outcome {
			g.t.Errorf("%s: %s (%s), want %s", name, r.OutcomeText(), r.Message, w.outcome)
		}
		if r.Reason != w.reason {
			g.t.Errorf("%s: reason %q, want %q", name, r.Reason, w.reason)
		}
		if r.Tries != w.tries {
			g.t.Errorf("%s: tries %d, want %d", name, r.Tries, w.tries)
		}
		if w.words == "" && r.Words != "" || !strings.Contains(r.Words, w.words) {
			g.t.Errorf("%s: words %q, want %q", name, r.Words, w.words)
		}
		if w.class != "" && r.Class != w.class {
			g.t.Errorf("%s: class %q, want %q", name, r.Class, w.class)
		}
		if !slices.Contains(strings.Split(w.source, "|"), r.VersionSource) || r.Running != shown21(w.running) {
			g.t.Errorf("%s: running %q told by %q, want %q by %q", name, r.Running, r.VersionSource, w.running, w.source)
		}
		if w.message != "" && !strings.Contains(r.Message, w.message) {
			g.t.Errorf("%s: message %q lacks %q", name, r.Message, w.message)
		}
		// The token guards an image that holds Wi-Fi credentials: never
		// in a result, though the device repeats the URL it was told.
		if b, err := json.Marshal(r); err != nil || out.token == "" || strings.Contains(string(b), out.token) {
			g.t.Errorf("%s: the URL token is in its result: %s", name, b)
		}
		if r.Protocol != "tasmota-mqtt" || r.Addr != name || r.To != expect21 {
			g.t.Errorf("%s: protocol %q address %q to %q", name, r.Protocol, r.Addr, r.To)
		}
		if !cfg.Silent && r.Outcome != upload.OutcomeNotStarted && r.From != shown21(cfg.Version+cfg.CodeCores) {
			g.t.Errorf("%s: from %q, want %q", name, r.From, cfg.Version)
		}
		if !w.gone && len(r.Warnings) > 0 {
			g.t.Errorf("%s: warnings %q", name, r.Warnings)
		}
		g.checkDevice(name, w.tries, w.gone)
	}
}

// shown21 is a Tasmota Version as results show it: the release
// ("14.3.0" of "14.3.0(tasmota32)"), whole for a loader image or one
// without a number, as push shows Tasmota's.
func shown21(v string) string {
	if strings.Contains(v, "(minimal)") || strings.Contains(v, "(safeboot)") {
		return v
	}
	end := strings.IndexFunc(v, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	if end < 0 {
		end = len(v)
	}
	if rel := strings.TrimRight(v[:end], "."); rel != "" {
		return rel
	}
	return v
}

// checkDevice asserts what the fake itself and the spy saw of name:
// commands sent, tripwires, its OtaUrl.
func (g *group21) checkDevice(name string, commands int, gone bool) {
	g.t.Helper()
	d, cfg := g.fakes[name], g.cfgs[name]
	backlogs := 0
	for _, c := range d.Commands() {
		if strings.HasPrefix(c, d.CommandTopic("Backlog")+" ") {
			backlogs++
		}
	}
	if backlogs != commands || d.Upgrades() != commands {
		g.t.Errorf("%s: the fake took %d Backlogs and %d Upgrades, want %d: %q", name, backlogs, d.Upgrades(), commands, d.Commands())
	}
	if n := len(g.backlogs(name)); n != commands {
		g.t.Errorf("%s: the spy saw %d Backlogs on %s, want %d", name, n, d.CommandTopic("Backlog"), commands)
	}
	if n := d.StatusDuringUpgrade(); n != 0 {
		g.t.Errorf("%s: %d Status commands came during its upgrade", name, n)
	}
	if d.RetainedCommandSeen() {
		g.t.Errorf("%s: got a retained command", name)
	}
	if !gone {
		if got := d.OtaURL(); got != cfg.OtaUrl {
			g.t.Errorf("%s: OtaUrl %q at the end, want its old %q back", name, got, cfg.OtaUrl)
		}
	}
}

// finish asserts what holds for the whole group: no command was ever
// retained or sent to a group or fallback topic, and none remains on the
// broker.
func (g *group21) finish() {
	g.t.Helper()
	for _, m := range g.spy.all() {
		if !isCommand(m.topic) {
			continue
		}
		if m.retained {
			g.t.Errorf("retained command %s %q", m.topic, m.payload)
		}
		if !slices.ContainsFunc(g.names, func(n string) bool { return strings.HasPrefix(m.topic, g.fakes[n].CommandTopic("")) }) {
			g.t.Errorf("a command to %s, which is no device's own topic: %q", m.topic, m.payload)
		}
	}
	noRetained(g.t, g.b, isCommand)
}

// backlogs are the indexes of the upgrade commands the spy saw sent to
// the device name.
func (g *group21) backlogs(name string) []int {
	return g.spy.indexes(g.fakes[name].CommandTopic("Backlog"))
}

// isCommand: a topic under the cmnd prefix (Tasmota's FullTopic may put
// it anywhere).
func isCommand(topic string) bool {
	return strings.HasPrefix(topic, "cmnd/") || strings.Contains(topic, "/cmnd/")
}

// spy is a test subscriber to every topic: what went over the broker, in
// the order it passed.
type spy struct {
	mu   sync.Mutex
	msgs []spyMsg
}

type spyMsg struct {
	topic, payload string
	retained       bool
	at             time.Time
}

func startSpy21(t *testing.T, b *testbroker.Broker) *spy {
	t.Helper()
	s := &spy{}
	// paho itself, for the DUP flag: the broker sends a message again,
	// marked DUP, when the spy's acknowledgement was lost (a broker
	// restart); that is one message, not a second command. A command
	// the rollout sent twice comes as two messages without DUP.
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(broker.NewClientID()).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(500 * time.Millisecond)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("spy: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe("#", 1, func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		defer s.mu.Unlock()
		// A device says an empty cmnd/<t>/POWER itself on every connect.
		if isCommand(m.Topic()) && strings.HasSuffix(m.Topic(), "/POWER") && len(m.Payload()) == 0 || m.Duplicate() {
			return
		}
		s.msgs = append(s.msgs, spyMsg{m.Topic(), string(m.Payload()), m.Retained(), time.Now()})
	})
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("spy: subscribe: %v", tok.Error())
	}
	return s
}

func (s *spy) all() []spyMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// index is the first message at or after from on topic whose payload
// holds part; -1 when none.
func (s *spy) index(from int, topic, part string) int {
	ms := s.all()
	for i := max(from, 0); i < len(ms); i++ {
		if ms[i].topic == topic && strings.Contains(ms[i].payload, part) {
			return i
		}
	}
	return -1
}

func (s *spy) at(i int) time.Time { return s.all()[i].at }

// indexes are those of the messages on topic.
func (s *spy) indexes(topic string) []int {
	var out []int
	for i, m := range s.all() {
		if m.topic == topic {
			out = append(out, i)
		}
	}
	return out
}

// noRetained subscribes afresh to every topic: a retained command (by
// isCmd) would come first, before a marker published after the
// subscription.
func noRetained(t *testing.T, b *testbroker.Broker, isCmd func(topic string) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := broker.Connect(ctx, broker.Config{URL: b.URL(), ClientID: broker.NewClientID()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan broker.Message, 1000)
	if err := c.Subscribe(ctx, "#", func(m broker.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	marker := "zz_spy_marker/" + broker.NewClientID()
	if err := c.Publish(ctx, marker, []byte("1")); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case m := <-got:
			if m.Topic == marker {
				return
			}
			if m.Retained && isCmd(m.Topic) {
				t.Errorf("a retained command remains on the broker: %s %q", m.Topic, m.Payload)
			}
		case <-ctx.Done():
			t.Fatal("the marker did not come back")
		}
	}
}

// fetchSpans are the fake's downloads, from its log: a line "fetch <url>"
// opens one, the next "try N: …" closes it (the try's end).
func fetchSpans(t *testing.T, d *fakedev.TasmotaMQTTDevice) [][2]time.Time {
	t.Helper()
	var out [][2]time.Time
	var open time.Time
	for _, l := range d.Log() {
		stamp, rest, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		at, err := time.Parse("15:04:05.000", stamp)
		if err != nil {
			t.Fatalf("the fake's log line %q has no time", l)
		}
		switch {
		case strings.HasPrefix(rest, "fetch http"):
			open = at
		case strings.HasPrefix(rest, "try ") && !open.IsZero():
			out = append(out, [2]time.Time{open, at})
			open = time.Time{}
		}
	}
	return out
}

func budget(s string) upload.FailureBudget {
	b, err := upload.ParseFailureBudget(s)
	if err != nil {
		panic(err)
	}
	return b
}

func waves(s string) []rollout.Step {
	w, err := rollout.ParseWaves(s)
	if err != nil {
		panic(err)
	}
	return w
}

// The ESP8266 fleet: a healthy device, each fault, the old INFO shapes, a
// silent one and one already on the version, in one rollout. FIRMWARE has
// fw-minimal.bin and fw.bin.gz beside it, as Tasmota's updater asks for
// them.
func TestRollout21_ESP8266Fleet(t *testing.T) {
	t.Parallel()
	g := newGroup21(t, image.ChipESP8266, true)
	old, next := "14.2.0(tasmota)", "14.3.0(tasmota)"
	base := fakedev.TasmotaMQTT{Version: old, NextVersion: next}
	with := func(f func(*fakedev.TasmotaMQTT)) fakedev.TasmotaMQTT { c := base; f(&c); return c }
	g.add("e_ok", base)
	// Every try of the first command cut (five of fw.bin, four of
	// fw.bin.gz); the second command's first try goes through.
	g.add("e_cut9", with(func(c *fakedev.TasmotaMQTT) { c.DownloadCut, c.FaultFetches = true, 9 }))
	g.add("e_cut", with(func(c *fakedev.TasmotaMQTT) { c.DownloadCut = true }))
	g.add("e_md5", with(func(c *fakedev.TasmotaMQTT) { c.BadMD5 = true }))
	g.add("e_rollback", with(func(c *fakedev.TasmotaMQTT) { c.RollsBack, c.CrashDump = true, true }))
	g.add("e_crash", with(func(c *fakedev.TasmotaMQTT) { c.RollsBack, c.CrashAfter = true, 100*time.Millisecond }))
	g.add("e_gone", with(func(c *fakedev.TasmotaMQTT) { c.NeverComesBack = true }))
	g.add("e_twostep", with(func(c *fakedev.TasmotaMQTT) { c.TwoStep = true }))
	g.add("e_lose", with(func(c *fakedev.TasmotaMQTT) { c.LoseOutcome = true }))
	g.add("e_losecut", with(func(c *fakedev.TasmotaMQTT) { c.LoseOutcome, c.DownloadCut = true, true }))
	g.add("e_silent", with(func(c *fakedev.TasmotaMQTT) { c.Silent = true }))
	g.add("e_current", with(func(c *fakedev.TasmotaMQTT) { c.Version = next }))
	g.add("e_flat", with(func(c *fakedev.TasmotaMQTT) { c.Version, c.FlatInfo = "9.3.1(tasmota)", true }))

	out := g.runAll(g.config(rollout.Plan{MaxFailures: budget("100%")}))
	cutWords := "Failed Update error: Stream Read Timeout"
	g.check(out, map[string]want21{
		"e_ok":       {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
		"e_cut9":     {outcome: upload.OutcomeUpdated, tries: 2, source: "INFO1", running: next},
		"e_cut":      {outcome: upload.OutcomeFailed, tries: 2, words: cutWords, class: upload.ClassNetwork},
		"e_md5":      {outcome: upload.OutcomeFailed, tries: 1, words: "Failed Update error: MD5 Failed: expected:", class: upload.ClassRejected},
		"e_rollback": {outcome: upload.OutcomeRolledBack, tries: 1, source: "INFO1", running: old},
		"e_crash":    {outcome: upload.OutcomeRolledBack, tries: 1, source: "INFO1", running: old, message: "ran " + next},
		"e_gone":     {outcome: upload.OutcomeUnreachable, tries: 1, message: "never came back", gone: true},
		"e_twostep":  {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
		"e_lose":     {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
		"e_losecut":  {outcome: upload.OutcomeUnchanged, tries: 1, source: "Status 2", running: old},
		"e_silent":   {outcome: upload.OutcomeUnreachable},
		"e_current":  {outcome: upload.OutcomeSkipped, running: next},
		"e_flat":     {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
	})
	g.finish()
	s := g.spy

	// A second command only after the device told its failure, and for
	// the cut ones their link came and went in between (the updater's
	// stopAllExcept): no reason to hold the retry.
	for _, name := range []string{"e_cut9", "e_cut"} {
		b := g.backlogs(name)
		if len(b) != 2 {
			continue
		}
		failed := s.index(b[0], "stat/"+name+"/UPGRADE", `"Failed `)
		offline := s.index(b[0], "tele/"+name+"/LWT", "Offline")
		if failed < 0 || failed > b[1] || offline < 0 || offline > failed {
			t.Errorf("%s: commanded again at message %d, its Failed at %d (offline at %d)", name, b[1], failed, offline)
		}
	}
	if f := g.fakes["e_cut9"].Fetches(); len(f) != 10 || !strings.HasSuffix(f[5], "/fw.bin.gz") || !strings.HasSuffix(f[9], "/fw.bin") {
		t.Errorf("e_cut9 fetched %q, want five fw.bin, four fw.bin.gz, then fw.bin", f)
	}
	// The two-step: refused for room, the minimal image, its own boot,
	// then the full image; the verdict only once the full image ran.
	if f := g.fakes["e_twostep"].Fetches(); len(f) != 3 || !strings.HasSuffix(f[0], "/fw.bin") || !strings.HasSuffix(f[1], "/fw-minimal.bin") || !strings.HasSuffix(f[2], "/fw.bin") {
		t.Errorf("e_twostep fetched %q, want fw.bin, fw-minimal.bin, fw.bin", f)
	}
	if m := s.index(0, "tele/e_twostep/INFO1", "(minimal)"); m < 0 {
		t.Errorf("e_twostep never booted its minimal image")
	} else if fin := s.index(m, "tele/e_twostep/INFO1", next); fin < 0 || !out.done["e_twostep"].After(s.at(fin)) {
		t.Errorf("e_twostep: verdict at %v, the full image's boot at message %d", out.done["e_twostep"], fin)
	}
	// LoseOutcome: no UPGRADE ever reached the broker; the boot decided.
	if i := s.index(0, "stat/e_lose/UPGRADE", ""); i >= 0 {
		t.Errorf("e_lose's outcome was not lost: %v", s.all()[i])
	}
	// CrashAfter: the new build said it runs, then the will fired within
	// the stability window, then the old one booted.
	if i := s.index(0, "tele/e_crash/INFO1", next); i < 0 {
		t.Errorf("e_crash never told it runs %s", next)
	} else if j := s.index(i, "tele/e_crash/LWT", "Offline"); j < 0 || s.index(j, "tele/e_crash/INFO1", old) < 0 {
		t.Errorf("e_crash: no crash (will) and old boot after its new boot")
	}
	// Never commanded: the silent and current devices only got reads.
	for _, name := range []string{"e_silent", "e_current"} {
		for _, c := range g.fakes[name].Commands() {
			if !strings.Contains(c, "/Status0") {
				t.Errorf("%s got %q", name, c)
			}
		}
	}
}

// The ESP32 fleet: healthy, a cut download retried, a bad MD5, a
// rollback, the safeboot two-step, broker drops mid-fetch, and an ESP8266
// among them refused for its chip.
func TestRollout21_ESP32Fleet(t *testing.T) {
	t.Parallel()
	g := newGroup21(t, image.ChipESP32, false)
	old, next := "14.2.0(tasmota32)", "14.3.0(tasmota32)"
	base := fakedev.TasmotaMQTT{Version: old, NextVersion: next}
	with := func(f func(*fakedev.TasmotaMQTT)) fakedev.TasmotaMQTT { c := base; f(&c); return c }
	g.add("s_ok", base)
	g.add("s_cut4", with(func(c *fakedev.TasmotaMQTT) { c.DownloadCut, c.FaultFetches = true, 4 }))
	g.add("s_md5", with(func(c *fakedev.TasmotaMQTT) { c.BadMD5 = true }))
	g.add("s_rollback", with(func(c *fakedev.TasmotaMQTT) { c.RollsBack = true }))
	g.add("s_twostep", with(func(c *fakedev.TasmotaMQTT) { c.TwoStep = true }))
	g.add("s_drop", with(func(c *fakedev.TasmotaMQTT) { c.BrokerDrop = true }))
	g.add("s_dropcut", with(func(c *fakedev.TasmotaMQTT) { c.BrokerDrop, c.DownloadCut, c.FaultFetches = true, true, 4 }))
	g.add("s_chip", fakedev.TasmotaMQTT{Version: "14.2.0(tasmota)", NextVersion: "14.3.0(tasmota)"})
	// A FullTopic of its own (inventory full_topic:).
	g.add("s_ft", with(func(c *fakedev.TasmotaMQTT) { c.FullTopic = "site1/%topic%/%prefix%/" }))

	out := g.runAll(g.config(rollout.Plan{MaxFailures: budget("100%")}))
	g.check(out, map[string]want21{
		"s_ok":       {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
		"s_cut4":     {outcome: upload.OutcomeUpdated, tries: 2, source: "INFO1", running: next},
		"s_md5":      {outcome: upload.OutcomeFailed, tries: 1, words: "Failed Update error: MD5 Check Failed", class: upload.ClassRejected},
		"s_rollback": {outcome: upload.OutcomeRolledBack, tries: 1, source: "INFO1", running: old},
		"s_twostep":  {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
		"s_drop":     {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
		"s_dropcut":  {outcome: upload.OutcomeUpdated, tries: 2, source: "INFO1", running: next},
		"s_chip":     {outcome: upload.OutcomeRefused, message: "esp8266"},
		"s_ft":       {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
	})
	g.finish()
	s := g.spy
	for _, name := range []string{"s_cut4", "s_dropcut"} {
		b := g.backlogs(name)
		if len(b) == 2 && (s.index(b[0], "stat/"+name+"/UPGRADE", `"Failed `) < 0 || s.index(b[0], "stat/"+name+"/UPGRADE", `"Failed `) > b[1]) {
			t.Errorf("%s commanded again before it told its failure", name)
		}
	}
	// The broker drops: the will fired mid-fetch and the link came back
	// without a boot; the device still was commanded once.
	for _, name := range []string{"s_drop", "s_dropcut"} {
		b := g.backlogs(name)
		if len(b) == 0 {
			continue
		}
		off := s.index(b[0], "tele/"+name+"/LWT", "Offline")
		up := s.index(off, "tele/"+name+"/LWT", "Online")
		res := s.index(b[0], "stat/"+name+"/UPGRADE", "")
		if off < 0 || up < 0 || res < up || s.index(b[0], "tele/"+name+"/INFO1", "") < res {
			t.Errorf("%s: no broker drop (offline %d, online %d) before its outcome %d with no boot", name, off, up, res)
		}
	}
	// Safeboot: the app restarts into safeboot (a boot of its own) which
	// fetches the image; the verdict only once the full image ran.
	if f := g.fakes["s_twostep"].Fetches(); len(f) != 1 {
		t.Errorf("s_twostep fetched %q, want one fetch from safeboot", f)
	}
	if m := s.index(0, "tele/s_twostep/INFO1", "(safeboot)"); m < 0 {
		t.Errorf("s_twostep never booted safeboot")
	} else if fin := s.index(m, "tele/s_twostep/INFO1", next); fin < 0 || !out.done["s_twostep"].After(s.at(fin)) {
		t.Errorf("s_twostep: verdict at %v, the full image's boot at message %d", out.done["s_twostep"], fin)
	}
	if n := g.fakes["s_chip"].Statuses(); n != 1 {
		t.Errorf("s_chip got %d Status commands, want the one read", n)
	}
}

// A canary that fails stops the rollout: the rest are not started, not
// even read.
func TestRollout21_CanaryFailureStops(t *testing.T) {
	t.Parallel()
	g := newGroup21(t, image.ChipESP32, false)
	base := fakedev.TasmotaMQTT{Version: "14.2.0(tasmota32)", NextVersion: "14.3.0(tasmota32)"}
	bad := base
	bad.BadMD5 = true
	g.add("c_canary", bad)
	for i := range 3 {
		g.add(fmt.Sprintf("c_rest%d", i), base)
	}
	out := g.runAll(g.config(rollout.Plan{Canary: 1, Waves: waves("100%"), MaxFailures: budget("100%")}))
	wants := map[string]want21{"c_canary": {outcome: upload.OutcomeFailed, tries: 1, words: "MD5 Check Failed", class: upload.ClassRejected}}
	for i := range 3 {
		wants[fmt.Sprintf("c_rest%d", i)] = want21{outcome: upload.OutcomeNotStarted, message: "canary"}
	}
	g.check(out, wants)
	g.finish()
	if r := out.results["c_canary"]; !r.Canary {
		t.Errorf("c_canary is not marked canary")
	}
	for i := range 3 {
		if n := g.fakes[fmt.Sprintf("c_rest%d", i)].Statuses(); n != 0 {
			t.Errorf("c_rest%d was read %d times after the canary failed", i, n)
		}
	}
	if len(out.waves) != 2 || out.waves[1].State != "stopped" || !out.waves[1].Canary {
		t.Errorf("waves %+v, want the canary started, then stopped", out.waves)
	}
}

// --max-failures applies to each wave against the wave's size: 40% of
// three devices allows one failure. Wave 1 has one and passes; wave 2 has
// two and stops the rollout, though the rollout's three of nine stay
// under 40%; wave 3 is not started.
func TestRollout21_MaxFailuresPerWave(t *testing.T) {
	t.Parallel()
	g := newGroup21(t, image.ChipESP32, false)
	base := fakedev.TasmotaMQTT{Version: "14.2.0(tasmota32)", NextVersion: "14.3.0(tasmota32)"}
	bad := base
	bad.BadMD5 = true
	wants := map[string]want21{}
	ok := want21{outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: "14.3.0(tasmota32)"}
	failed := want21{outcome: upload.OutcomeFailed, tries: 1, words: "MD5 Check Failed", class: upload.ClassRejected}
	for i, kind := range []string{"ok", "bad", "ok", "bad", "ok", "bad", "ok", "ok", "ok"} {
		name := fmt.Sprintf("m_%d_%s", i, kind)
		switch {
		case i >= 6:
			g.add(name, base)
			wants[name] = want21{outcome: upload.OutcomeNotStarted, message: "wave 2 of 3: 2 of its 3 devices failed"}
		case kind == "bad":
			g.add(name, bad)
			wants[name] = failed
		default:
			g.add(name, base)
			wants[name] = ok
		}
	}
	out := g.runAll(g.config(rollout.Plan{Waves: waves("3,6,100%"), MaxFailures: budget("40%")}))
	g.check(out, wants)
	g.finish()
	var states []string
	for _, w := range out.waves {
		states = append(states, fmt.Sprintf("%d:%s", w.Index, w.State))
	}
	if got := strings.Join(states, " "); got != "0:started 0:passed 1:started 1:stopped" {
		t.Errorf("waves %s", got)
	}
}

// --max-fetches 2 over eight devices: never more than two download at
// once, by the fakes' own fetch times; a device whose download comes from
// its safeboot image, after a boot of its own, holds its slot until then.
func TestRollout21_MaxFetches(t *testing.T) {
	t.Parallel()
	g := newGroup21(t, image.ChipESP32, false)
	wants := map[string]want21{}
	for i := range 8 {
		name := fmt.Sprintf("f_%d", i)
		// 96 KiB at 384 KiB/s: a quarter second each. Every other device
		// has one app slot: it restarts into safeboot, which fetches.
		g.add(name, fakedev.TasmotaMQTT{Version: "14.2.0(tasmota32)", NextVersion: "14.3.0(tasmota32)", FetchRate: 384 << 10, TwoStep: i%2 == 1})
		wants[name] = want21{outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: "14.3.0(tasmota32)"}
	}
	cfg := g.config(rollout.Plan{MaxFailures: budget("100%")})
	cfg.MaxFetches = 2
	out := g.runAll(cfg)
	g.check(out, wants)
	g.finish()
	if most := mostFetching(t, g, 1); most > 2 {
		t.Errorf("%d devices fetched at once, --max-fetches is 2", most)
	}
}

// The same with ESP8266 two-steps: refused for room, each device fetches
// fw-minimal.bin, boots it, and fetches fw.bin from it; it keeps its slot
// from the command to its final boot.
func TestRollout21_MaxFetchesMinimal(t *testing.T) {
	t.Parallel()
	g := newGroup21(t, image.ChipESP8266, true)
	wants := map[string]want21{}
	for i := range 4 {
		name := fmt.Sprintf("fm_%d", i)
		g.add(name, fakedev.TasmotaMQTT{Version: "14.2.0(tasmota)", NextVersion: "14.3.0(tasmota)", FetchRate: 384 << 10, TwoStep: true})
		wants[name] = want21{outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: "14.3.0(tasmota)"}
	}
	cfg := g.config(rollout.Plan{MaxFailures: budget("100%")})
	cfg.MaxFetches = 2
	out := g.runAll(cfg)
	g.check(out, wants)
	g.finish()
	if most := mostFetching(t, g, 3); most > 2 {
		t.Errorf("%d devices fetched at once, --max-fetches is 2", most)
	}
}

// mostFetching is how many of the group's devices fetched at once at most,
// by the fakes' own fetch times; each device must have fetched each
// times.
func mostFetching(t *testing.T, g *group21, each int) int {
	t.Helper()
	type edge struct {
		at   time.Time
		open int
	}
	var edges []edge
	for _, name := range g.names {
		spans := fetchSpans(t, g.fakes[name])
		if len(spans) != each {
			t.Errorf("%s: %d fetches, want %d", name, len(spans), each)
		}
		if len(spans) > 0 {
			// A device's own fetches follow each other: one span.
			edges = append(edges, edge{spans[0][0], 1}, edge{spans[len(spans)-1][1], -1})
		}
	}
	// Ends before starts at one instant: a slot handed on is not overlap.
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.open - b.open
	})
	n, most := 0, 0
	for _, e := range edges {
		n += e.open
		most = max(most, n)
	}
	t.Logf("at most %d devices fetching at once", most)
	return most
}

// The broker restarts while the devices download (it keeps its sessions,
// as a production broker does): devices and the rollout reconnect, the
// rollout waits, no device is commanded twice, and each ends updated, told
// by its boot or, when that was published while the rollout's link was
// still down, by the one read.
func TestRollout21_BrokerRestart(t *testing.T) {
	t.Parallel()
	g := newGroup21(t, image.ChipESP32, false, testbroker.WithPersistence())
	wants := map[string]want21{}
	for i := range 3 {
		name := fmt.Sprintf("b_%d", i)
		// 96 KiB at 64 KiB/s: a second and a half.
		g.add(name, fakedev.TasmotaMQTT{Version: "14.2.0(tasmota32)", NextVersion: "14.3.0(tasmota32)", FetchRate: 64 << 10})
		wants[name] = want21{outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1|Status 2", running: "14.3.0(tasmota32)"}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		for ctx.Err() == nil {
			if g.fakes["b_0"].Upgrades() > 0 && g.fakes["b_1"].Upgrades() > 0 && g.fakes["b_2"].Upgrades() > 0 {
				g.b.Restart()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	out := g.runAll(g.config(rollout.Plan{MaxFailures: budget("100%")}))
	cancel()
	<-restarted
	g.check(out, wants)
	g.finish()
	for _, name := range g.names {
		if f := g.fakes[name].Fetches(); len(f) != 1 {
			t.Errorf("%s fetched %d times", name, len(f))
		}
	}
}

// Ctrl-C mid-rollout, then --resume: no device is commanded twice (the
// fakes' counts and the spy's over both runs), and the devices in flight
// end with their own verdict: one restarting ends updated, one whose
// download keeps failing ends failed without a second command although
// --retries allows one.
func TestRollout21_Resume(t *testing.T) {
	t.Parallel()
	g := newGroup21(t, image.ChipESP32, false)
	old, next := "14.2.0(tasmota32)", "14.3.0(tasmota32)"
	// r_a restarts for a second, so its boot comes after the resume.
	g.add("r_a", fakedev.TasmotaMQTT{Version: old, NextVersion: next, RebootTime: time.Second})
	// r_b's tries fail slowly (a 300 ms tick: about four seconds to its
	// Failed), so that comes after the resume too.
	b := g.add("r_b", fakedev.TasmotaMQTT{Version: old, NextVersion: next, DownloadCut: true, Tick: 300 * time.Millisecond})
	g.add("r_c", fakedev.TasmotaMQTT{Version: old, NextVersion: next})
	g.add("r_d", fakedev.TasmotaMQTT{Version: old, NextVersion: next})

	cfg := g.config(rollout.Plan{Waves: waves("2,100%"), MaxFailures: budget("1")})
	cfg.Timeout = 10 * time.Second
	id := broker.NewClientID()
	st := g.createState(cfg, id)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Interrupt once r_a wrote the image and restarts, and r_b took
		// its command.
		for ctx.Err() == nil {
			if g.spy.index(0, "stat/r_a/UPGRADE", "Successful") >= 0 && b.Upgrades() > 0 {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	out1 := g.run(ctx, cfg, st, id)
	for name, want := range map[string]upload.Outcome{"r_a": upload.OutcomeCancelled, "r_b": upload.OutcomeCancelled,
		"r_c": upload.OutcomeNotStarted, "r_d": upload.OutcomeNotStarted} {
		if got := out1.results[name].Outcome; got != want {
			t.Errorf("run 1: %s %s, want %s", name, got, want)
		}
	}
	rec := st.Record()
	if rec.Finished {
		t.Fatal("an interrupted rollout is marked finished")
	}
	for _, d := range rec.Devices {
		want := rollout.PhasePending
		if d.Name == "r_a" || d.Name == "r_b" {
			want = rollout.PhaseCommanded
		}
		if d.Phase != want {
			t.Errorf("run 1 left %s %s in the state, want %s", d.Name, d.Phase, want)
		}
	}

	// --resume: the state re-opened, the same MQTT client id.
	stID := st.ID()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2, err := rollout.OpenState(filepath.Join(g.dir, "state"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st2.Close() })
	if st2.ID() != stID || st2.Record().ClientID != id {
		t.Fatalf("resumed %s (client %s), want %s (client %s)", st2.ID(), st2.Record().ClientID, stID, id)
	}
	out2 := g.run(context.Background(), cfg, st2, id)
	g.check(out2, map[string]want21{
		"r_a": {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
		"r_b": {outcome: upload.OutcomeFailed, tries: 1, words: "Failed ", class: upload.ClassNetwork, message: "in flight"},
		"r_c": {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
		"r_d": {outcome: upload.OutcomeUpdated, tries: 1, source: "INFO1", running: next},
	})
	g.finish()
	if !st2.Record().Finished {
		t.Errorf("the resumed rollout did not finish")
	}
}
