package esphome

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ots-ota/ots-ota/broker"
	"github.com/ots-ota/ots-ota/internal/testbroker"
	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/rollout/internal/familytest"
)

// The families' shared test helpers, by their names here.
const wait = familytest.Wait

var ctxT = familytest.Ctx

type (
	reports    = familytest.Reports
	syncBuffer = familytest.SyncBuffer
)

var (
	newReports = familytest.NewReports
	hasKind    = familytest.HasKind
)

var idN atomic.Int32

func connect(t *testing.T, b *testbroker.Broker) *broker.Client {
	t.Helper()
	c, err := broker.Connect(ctxT(t), broker.Config{URL: b.URL(), ClientID: fmt.Sprintf("otsota%d", idN.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newFamily(t *testing.T, b *testbroker.Broker, cfg Config) *Family {
	t.Helper()
	cfg.Client = connect(t, b)
	return New(cfg)
}

// fakeESP is a scripted ESPHome node written here from the facts
// (docs/protocols/esphome-pull.md): a plain MQTT client with a clean
// session, its will "offline" on <prefix>/status (retained); on each
// connect it publishes "online" and each update entity's state, retained;
// before its first manifest check after a boot every version is "".
// INSTALL acts only while an update is available: the state is published
// once (installing), then onInstall runs.
type fakeESP struct {
	t      *testing.T
	b      *testbroker.Broker
	prefix string
	ids    []string

	mu        sync.Mutex
	c         mqtt.Client
	project   string // the running build's project version
	installed string // update_info: "" until the first check
	latest    string
	available bool
	installs  []bool // per INSTALL: whether it was acted on
	onInstall func(d *fakeESP)
}

func startESP(t *testing.T, b *testbroker.Broker, prefix, project string, ids ...string) *fakeESP {
	t.Helper()
	if len(ids) == 0 {
		ids = []string{"firmware"}
	}
	d := &fakeESP{t: t, b: b, prefix: prefix, ids: ids, project: project}
	d.connect()
	t.Cleanup(func() {
		d.mu.Lock()
		c := d.c
		d.mu.Unlock()
		c.Disconnect(50)
	})
	return d
}

func (d *fakeESP) connect() {
	d.t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://"+d.b.Addr()).SetClientID(fmt.Sprintf("esp%d", idN.Add(1))).
		SetCleanSession(true).SetAutoReconnect(false).SetWill(d.prefix+"/status", "offline", 0, true)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		d.t.Fatalf("device: %v", tok.Error())
	}
	d.mu.Lock()
	d.c = c
	d.mu.Unlock()
	d.publish(d.prefix+"/status", "online")
	for _, id := range d.ids {
		d.publishState(id)
		tok := c.Subscribe(d.prefix+"/update/"+id+"/command", 0, func(_ mqtt.Client, m mqtt.Message) {
			if string(m.Payload()) == "INSTALL" {
				d.install(id)
			}
		})
		if !tok.WaitTimeout(wait) || tok.Error() != nil {
			d.t.Fatalf("device subscribe: %v", tok.Error())
		}
	}
}

func (d *fakeESP) publish(topic, payload string) {
	d.mu.Lock()
	c := d.c
	d.mu.Unlock()
	tok := c.Publish(topic, 0, true, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		d.mu.Lock()
		cur := d.c
		d.mu.Unlock()
		if cur != c || !c.IsConnected() {
			// Published across its own reboot (a poll racing the
			// restart): lost, as on a device.
			return
		}
		d.t.Errorf("device publish: %v", tok.Error())
	}
}

func (d *fakeESP) publishState(id string) {
	d.mu.Lock()
	s := st(d.installed, d.latest)
	d.mu.Unlock()
	d.publish(d.prefix+"/update/"+id+"/state", s)
}

// check is one manifest check of its first entity finding version.
func (d *fakeESP) check(version string) {
	d.mu.Lock()
	d.installed, d.latest = d.project, version
	d.available = version != "" && version != d.project
	d.mu.Unlock()
	d.publishState(d.ids[0])
}

func (d *fakeESP) install(id string) {
	d.mu.Lock()
	acted := d.available && id == d.ids[0]
	d.installs = append(d.installs, acted)
	on := d.onInstall
	d.mu.Unlock()
	if !acted {
		return
	}
	d.publishState(id) // UPDATE_STATE_INSTALLING
	if on != nil {
		go on(d)
	}
}

// reboot shuts down cleanly ("offline", when still connected) and boots
// project.
func (d *fakeESP) reboot(project string) {
	d.mu.Lock()
	c := d.c
	d.mu.Unlock()
	if c.IsConnectionOpen() {
		d.publish(d.prefix+"/status", "offline")
	}
	d.mu.Lock()
	d.project, d.installed, d.latest, d.available = project, "", "", false
	d.mu.Unlock()
	c.Disconnect(50)
	d.connect()
}

func (d *fakeESP) installsSeen() []bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.installs)
}

// reports collects a watch's reports.
func kinds(rs []rollout.Report) []string {
	var out []string
	for _, r := range rs {
		out = append(out, string(r.Kind)+" "+r.Facts.Version)
	}
	return out
}

// spy records, as a second client, what is published under a filter:
// each message's topic and payload, its QoS and retained flag.
type spy struct {
	mu  sync.Mutex
	got []mqtt.Message
}

func startSpy(t *testing.T, b *testbroker.Broker, filter string) *spy {
	t.Helper()
	s := &spy{}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(fmt.Sprintf("spy%d", idN.Add(1))).SetCleanSession(true)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("spy: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		s.mu.Lock()
		s.got = append(s.got, m)
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("spy subscribe: %v", tok.Error())
	}
	// The marker: once it is back, the retained messages sent at the
	// subscribe have come.
	s.sync(t, c)
	return s
}

var markN atomic.Int32

// sync publishes a marker on the spy's own connection to a topic under
// its filter... or, when the filter cannot hold one, waits for the
// subscription's retained messages by a second subscription's marker.
func (s *spy) sync(t *testing.T, c mqtt.Client) {
	t.Helper()
	topic := fmt.Sprintf("zzmark%d", markN.Add(1))
	got := make(chan struct{}, 1)
	tok := c.Subscribe(topic, 1, func(mqtt.Client, mqtt.Message) { got <- struct{}{} })
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("spy marker: %v", tok.Error())
	}
	if tok := c.Publish(topic, 1, false, "mark"); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("spy marker: %v", tok.Error())
	}
	select {
	case <-got:
	case <-time.After(wait):
		t.Fatal("the spy's marker never came back")
	}
}

// atLeast waits until the spy has n messages, and returns them.
func (s *spy) atLeast(t *testing.T, n int) []mqtt.Message {
	t.Helper()
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		if ms := s.messages(); len(ms) >= n || time.Now().After(deadline) {
			return ms
		}
	}
}

func (s *spy) messages() []mqtt.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// noRetainedCommands asserts that a client subscribing now gets no
// retained message on any update command topic.
func noRetainedCommands(t *testing.T, b *testbroker.Broker) {
	t.Helper()
	late := startSpy(t, b, "+/update/+/command")
	if got := late.messages(); len(got) > 0 {
		t.Fatalf("retained on a command topic: %s %q", got[0].Topic(), got[0].Payload())
	}
}

// The whole update as an ESPHome node tells it: the read from the
// retained state, Ready waiting for the manifest's version, one INSTALL
// (QoS 1, not retained, acted on), started, the state of the install,
// offline, online, the empty state after the boot, booted on the new
// version; the read after from the retained state.
func TestUpdateReported(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t, testbroker.KeepLogs())
	cmds := startSpy(t, b, "+/update/+/command")
	dev := startESP(t, b, "kitchen", "1.0.0")
	dev.check("1.0.0")
	dev.onInstall = func(d *fakeESP) {
		d.publishState("firmware") // progress: the same JSON
		d.reboot("1.1.0")
		d.check("1.1.0")
	}
	var logs syncBuffer
	f := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: wait,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	d := rollout.Device{Name: "Kitchen", Topic: "kitchen"}
	rs := newReports()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := f.Watch(ctx, []rollout.Device{d}, rs.Add); err != nil {
		t.Fatal(err)
	}
	before, err := f.Preflight(ctxT(t), d)
	if want := (rollout.Facts{Version: "1.0.0", Release: "1.0.0", Latest: "1.0.0"}); err != nil || before != want {
		t.Fatalf("preflight: %+v %v", before, err)
	}

	ready := make(chan error, 1)
	go func() { ready <- f.Ready(ctxT(t), d) }()
	dev.check("1.0.0") // a check before the manifest changed
	select {
	case err := <-ready:
		t.Fatalf("ready before the device told the new version: %v", err)
	case <-time.After(200 * time.Millisecond): // gives a wrong Ready the time to answer
	}
	dev.check("1.1.0")
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	if err := f.Command(ctxT(t), d, imgURL); err != nil {
		t.Fatal(err)
	}
	got := rs.Until(t, "booted", hasKind(rollout.ReportBooted))
	want := []string{"status 1.0.0", "status 1.0.0", "started 1.0.0", "status 1.0.0", "offline ", "online ", "status ", "success ", "booted 1.1.0"}
	if !reflect.DeepEqual(kinds(got), want) {
		t.Fatalf("reports %q, want %q", kinds(got), want)
	}
	boot := got[len(got)-1]
	if wantF := (rollout.Facts{Version: "1.1.0", Release: "1.1.0", Latest: "1.1.0"}); boot.Facts != wantF || boot.Topic != "kitchen" || boot.Source != "state" {
		t.Fatalf("booted: %+v", boot)
	}
	if w := got[2].Words; w != "took INSTALL: installed_version 1.0.0, latest_version 1.1.0" {
		t.Fatalf("started words %q", w)
	}
	if w := got[7].Words; w != "installed_version 1.0.0 before its restart, 1.1.0 after" {
		t.Fatalf("success words %q", w)
	}
	after, err := f.Reread(ctxT(t), d)
	if err != nil || after.Release != "1.1.0" {
		t.Fatalf("reread: %+v %v", after, err)
	}
	if ins := dev.installsSeen(); !reflect.DeepEqual(ins, []bool{true}) {
		t.Fatalf("INSTALLs (acted on): %v", ins)
	}
	ms := cmds.atLeast(t, 1)
	if len(ms) != 1 || ms[0].Topic() != "kitchen/update/firmware/command" || string(ms[0].Payload()) != "INSTALL" || ms[0].Retained() || ms[0].Qos() != 1 {
		t.Fatalf("commands: %v", ms)
	}
	noRetainedCommands(t, b)
	if l := logs.String(); !strings.Contains(l, "commanded") {
		t.Errorf("no log of the command: %s", l)
	}
}

// Ready's errors say what the device told last, and name the wait's flag
// and the manifest.
func TestReadyTimesOut(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	old := startESP(t, b, "old", "1.0.0")
	old.check("1.0.0")
	startESP(t, b, "fresh", "1.0.0") // booted, no check yet
	gone := startESP(t, b, "gone", "1.0.0")
	gone.check("1.0.0")
	gone.publish("gone/status", "offline")
	f := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: 500 * time.Millisecond})
	var wg sync.WaitGroup
	for _, c := range []struct {
		d    rollout.Device
		want string
	}{
		{rollout.Device{Topic: "old"}, "still told latest 1.0.0 after 500ms (--check-wait): build it with a shorter update_interval, or check that it fetches manifest.json"},
		{rollout.Device{Topic: "old", Manifest: "canary.json"}, "still told latest 1.0.0 after 500ms (--check-wait): build it with a shorter update_interval, or check that it fetches canary.json"},
		{rollout.Device{Topic: "fresh"}, "told no latest version within 500ms (--check-wait): build it with a shorter update_interval, or check that it fetches manifest.json"},
		{rollout.Device{Topic: "gone"}, "still told latest 1.0.0 after 500ms (--check-wait): build it with a shorter update_interval, or check that it fetches manifest.json (its status says offline)"},
		{rollout.Device{Topic: "nobody"}, `told no update state within 500ms (--check-wait): is its MQTT topic prefix "nobody", with an update entity over MQTT?`},
	} {
		wg.Go(func() { // the waits at once: the test takes one
			if err := f.Ready(ctxT(t), c.d); err == nil || err.Error() != c.want {
				t.Errorf("%+v: %v\nwant %s", c.d, err, c.want)
			}
		})
	}
	wg.Wait()
	// On the version since the read (it installed on its own): the
	// announcement was its command, the engine only watches it.
	done := startESP(t, b, "done", "1.1.0")
	done.check("1.1.0")
	if err := f.Ready(ctxT(t), rollout.Device{Topic: "done"}); !errors.Is(err, rollout.ErrTookAnnouncement) {
		t.Fatalf("installed on its own: %v", err)
	}
	// Cut short by its context (a gate stopped the rollout).
	f2 := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: wait})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := f2.Ready(ctx, rollout.Device{Topic: "old"}); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("cut short: %v", err)
	}
}

// An INSTALL the device is sent only once it tells the new version:
// before that ESPHome ignores it (its tripwire here counts such).
func TestInstallOnlyAfterReady(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dev := startESP(t, b, "n1", "1.0.0")
	dev.check("1.0.0")
	f := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: wait})
	d := rollout.Device{Topic: "n1"}
	rs := newReports()
	if err := f.Watch(ctxT(t), []rollout.Device{d}, rs.Add); err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		err := f.Ready(ctxT(t), d)
		if err == nil {
			err = f.Command(ctxT(t), d, imgURL)
		}
		ready <- err
	}()
	time.Sleep(100 * time.Millisecond) // a wrong Ready would command now
	dev.check("1.1.0")
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	rs.Until(t, "started", hasKind(rollout.ReportStarted))
	if ins := dev.installsSeen(); !reflect.DeepEqual(ins, []bool{true}) {
		t.Fatalf("INSTALLs (acted on): %v", ins)
	}
}

// Two update entities and none named: refused (Ready's error names them,
// no INSTALL leaves); naming one works.
func TestTwoEntitiesRefused(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	cmds := startSpy(t, b, "+/update/+/command")
	dev := startESP(t, b, "two", "1.0.0", "firmware", "firmware_beta")
	dev.check("1.1.0")
	f := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: wait})
	d := rollout.Device{Name: "Two", Topic: "two"}
	// Both retained states in the cache before the read, however late a
	// loaded machine hands them over (settle is only a guess).
	if err := f.Watch(ctxT(t), []rollout.Device{d}, func(rollout.Report) {}); err != nil {
		t.Fatal(err)
	}
	entitiesSeen(t, f, "two", 2)
	if fa, err := f.Preflight(ctxT(t), d); err != nil || fa != (rollout.Facts{}) {
		t.Fatalf("preflight: %+v %v", fa, err)
	}
	want := "Two has 2 update entities (firmware, firmware_beta): name the one to install (the inventory's entity:)"
	if err := f.Ready(ctxT(t), d); err != nil { // for Command to refuse
		t.Fatalf("ready: %v", err)
	}
	if err := f.Command(ctxT(t), d, imgURL); !errors.Is(err, rollout.ErrNotSent) || err.Error() != want {
		t.Fatalf("command: %v", err)
	}
	d.Entity = "firmware"
	if err := readyChecking(t, f, d, dev, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if err := f.Command(ctxT(t), d, imgURL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(wait); len(dev.installsSeen()) == 0 || len(cmds.messages()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no INSTALL arrived")
		}
	}
	if ms := cmds.messages(); len(ms) != 1 || ms[0].Topic() != "two/update/firmware/command" {
		t.Fatalf("commands: %v", ms)
	}
}

// Discover lists the prefixes with a retained update state, leaving out
// those whose retained status says offline.
func TestDiscover(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	startESP(t, b, "a1", "1.0.0").check("1.0.0")
	startESP(t, b, "b2", "1.0.0")
	gone := startESP(t, b, "gone", "1.0.0")
	gone.check("1.0.0")
	gone.publish("gone/status", "offline")
	// A status but no update state: no ESPHome device with an update
	// entity over MQTT.
	startESP(t, b, "x", "1", "fw").publish("nostate/status", "online")
	f := newFamily(t, b, Config{})
	devs, err := f.Discover(ctxT(t), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []rollout.Device{{Name: "a1", Topic: "a1"}, {Name: "b2", Topic: "b2"}, {Name: "x", Topic: "x"}}
	if !reflect.DeepEqual(devs, want) {
		t.Fatalf("discovered %+v", devs)
	}
	if lo := f.LeftOut(); !reflect.DeepEqual(lo, []string{"gone"}) {
		t.Fatalf("left out %q", lo)
	}
}

// Retained messages are old news: neither at the subscribe nor after a
// broker restart (sessions kept) are they reports, though the reads
// take them.
func TestRetainedNeverReports(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t, testbroker.WithPersistence())
	dev := startESP(t, b, "ret", "1.0.0")
	dev.check("1.0.0")
	dev.reboot("1.1.0") // retained: offline then online, and the empty state
	dev.check("1.1.0")
	mark := startESP(t, b, "mark", "1")
	f := newFamily(t, b, Config{})
	rs := newReports()
	devs := []rollout.Device{{Topic: "ret"}, {Topic: "mark"}}
	if err := f.Watch(ctxT(t), devs, rs.Add); err != nil {
		t.Fatal(err)
	}
	onlyMarks := func(n int, when string) {
		t.Helper()
		mark.check(fmt.Sprint(n)) // a live state, behind the retained ones
		got := rs.Until(t, when, func(rs []rollout.Report) bool {
			return len(slices.DeleteFunc(slices.Clone(rs), func(r rollout.Report) bool { return r.Topic != "mark" })) >= n
		})
		for _, r := range got {
			if r.Topic != "mark" {
				t.Fatalf("%s: a retained message made a report: %+v", when, r)
			}
		}
	}
	onlyMarks(1, "at the subscribe")
	dev.c.Disconnect(50) // no will: its retained "online" stays, stale
	if fa, err := f.Preflight(ctxT(t), rollout.Device{Topic: "ret"}); err != nil || fa.Release != "1.1.0" {
		t.Fatalf("preflight: %+v %v", fa, err)
	}
	b.Restart()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if up, _ := f.Link(); up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the link never came back")
		}
	}
	mark.connect() // its own client does not reconnect
	onlyMarks(2, "after the broker restarted")
}

// Many devices: two wildcard subscriptions, not two per device; each
// device's reads and reports are its own.
func TestManyDevices(t *testing.T) {
	t.Parallel()
	const n = 250
	b := testbroker.Start(t)
	// One client publishes as the n devices do on connect.
	pub := connect(t, b)
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(fmt.Sprintf("many%d", idN.Add(1)))
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	var devs []rollout.Device
	var toks []mqtt.Token
	for i := range n {
		p := fmt.Sprintf("node-%03d", i)
		devs = append(devs, rollout.Device{Topic: p})
		toks = append(toks, c.Publish(p+"/status", 1, true, "online"), c.Publish(p+"/update/firmware/state", 1, true, st(fmt.Sprintf("1.0.%d", i), "1.0.0")))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	f := newFamily(t, b, Config{})
	rs := newReports()
	if err := f.Watch(ctxT(t), devs, rs.Add); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	filters := slices.Sorted(mapsKeys(f.filters))
	f.mu.Unlock()
	if !reflect.DeepEqual(filters, []string{wildStatus, wildStates}) {
		t.Fatalf("filters %q", filters)
	}
	for i, d := range devs {
		fa, err := f.Preflight(ctxT(t), d)
		if err != nil || fa.Release != fmt.Sprintf("1.0.%d", i) {
			t.Fatalf("%s: %+v %v", d.Topic, fa, err)
		}
	}
	// Live states of three devices, and of one not watched.
	for _, i := range []int{7, 123, 249} {
		if err := pub.Publish(ctxT(t), fmt.Sprintf("node-%03d/update/firmware/state", i), []byte(st("2.0.0", "2.0.0"))); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(ctxT(t), "stranger/update/firmware/state", []byte(st("2.0.0", "2.0.0"))); err != nil {
		t.Fatal(err)
	}
	got := rs.Until(t, "three boots", func(rs []rollout.Report) bool { return len(rs) >= 3 })
	var topics []string
	for _, r := range got {
		if r.Kind != rollout.ReportBooted || r.Facts.Release != "2.0.0" {
			t.Fatalf("report %+v", r)
		}
		topics = append(topics, r.Topic)
	}
	if !reflect.DeepEqual(topics, []string{"node-007", "node-123", "node-249"}) {
		t.Fatalf("topics %q", topics)
	}
}

// Reread takes the state the broker retains, through a subscription of
// its own that it ends (the next read makes another); no state retained:
// an error once ctx ends.
func TestReread(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dev := startESP(t, b, "rr", "1.0.0")
	dev.check("1.1.0")
	f := newFamily(t, b, Config{})
	d := rollout.Device{Topic: "rr"}
	fa, err := f.Reread(ctxT(t), d)
	if want := (rollout.Facts{Version: "1.0.0", Release: "1.0.0", Latest: "1.1.0"}); err != nil || fa != want {
		t.Fatalf("reread: %+v %v", fa, err)
	}
	dev.reboot("1.1.0")
	dev.check("1.1.0")
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		fa, err = f.Reread(ctxT(t), d)
		if err != nil || fa.Release == "1.1.0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reread never told the new version: %+v", fa)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	// A device that holds no retained state (named entity, never told).
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := f.Reread(ctx, rollout.Device{Name: "Ghost", Topic: "ghost", Entity: "fw"}); err == nil || !strings.HasPrefix(err.Error(), "Ghost told no update state on ghost/update/fw/state") {
		t.Fatalf("ghost: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if _, err := f.Preflight(ctx2, rollout.Device{Topic: "ghost"}); err == nil || !strings.Contains(err.Error(), `told no update state on ghost/update/+/state in time (is its MQTT topic prefix "ghost"`) {
		t.Fatalf("ghost preflight: %v", err)
	}
}

// An offline device (its retained status says so) is no device to read.
func TestPreflightOffline(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dev := startESP(t, b, "off", "1.0.0")
	dev.check("1.0.0")
	dev.publish("off/status", "offline")
	f := newFamily(t, b, Config{})
	if _, err := f.Preflight(ctxT(t), rollout.Device{Name: "Off", Topic: "off"}); err == nil || err.Error() != "Off is offline (its off/status says offline)" {
		t.Fatalf("preflight: %v", err)
	}
}

// The broker restarts (sessions lost): the family is a rollout.Linker
// that says so; once Link says up again its subscriptions are back, so a
// device's live state after it is reported, and the retained one sent
// again fills the reads without a report.
func TestLinkOutageResubscribes(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dev := startESP(t, b, "l1", "1.0.0")
	dev.check("1.0.0")
	f := newFamily(t, b, Config{})
	d := rollout.Device{Topic: "l1"}
	rs := newReports()
	if err := f.Watch(ctxT(t), []rollout.Device{d}, rs.Add); err != nil {
		t.Fatal(err)
	}
	var l rollout.Linker = f
	up, changed := l.Link()
	if !up {
		t.Fatal("down at the start")
	}
	b.Restart() // no persistence: the retained messages are gone too
	select {
	case <-changed:
	case <-time.After(wait):
		t.Fatal("no change when the broker went away")
	}
	for deadline := time.After(60 * time.Second); ; {
		if up, changed = l.Link(); up {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("the link never came back")
		}
	}
	// The device booted meanwhile: its connect retains "online" and "".
	dev.reboot("1.1.0")
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		if fa, err := f.Preflight(ctxT(t), d); err == nil && fa == (rollout.Facts{}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the retained empty state never reached the cache")
		}
	}
	dev.check("1.1.0")
	got := rs.Until(t, "booted", hasKind(rollout.ReportBooted))
	if last := got[len(got)-1]; last.Facts.Release != "1.1.0" {
		t.Fatalf("reports %q", kinds(got))
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// A device whose status says offline (the broker's will, or its clean
// shutdown, and it never came back) answers no read: its retained state
// is its last word from before, not an answer now.
func TestRereadOffline(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dev := startESP(t, b, "gone", "1.0.0")
	dev.check("1.0.0")
	d := rollout.Device{Name: "Gone", Topic: "gone"}
	want := "Gone is offline (its gone/status says offline)"

	// Watching as it goes away (live offline), as in a rollout.
	f := newFamily(t, b, Config{})
	rs := newReports()
	if err := f.Watch(ctxT(t), []rollout.Device{d}, rs.Add); err != nil {
		t.Fatal(err)
	}
	if fa, err := f.Reread(ctxT(t), d); err != nil || fa.Release != "1.0.0" {
		t.Fatalf("reread while online: %+v %v", fa, err)
	}
	dev.publish("gone/status", "offline")
	rs.Until(t, "offline", hasKind(rollout.ReportOffline))
	if fa, err := f.Reread(ctxT(t), d); err == nil || err.Error() != want {
		t.Fatalf("reread of an offline device: %+v %v", fa, err)
	}

	// A family that only finds the retained offline.
	f2 := newFamily(t, b, Config{})
	if fa, err := f2.Reread(ctxT(t), d); err == nil || err.Error() != want {
		t.Fatalf("reread of a retained offline: %+v %v", fa, err)
	}
	if fa, err := f2.Preflight(ctxT(t), d); err == nil || err.Error() != want {
		t.Fatalf("preflight of a retained offline: %+v %v", fa, err)
	}
}

// A device with two update entities, one named: the other's states (a
// boot's empty one, then its first check) make no report of the device.
func TestOtherEntityNoReports(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dev := startESP(t, b, "two", "1.0.0", "firmware", "beta")
	dev.check("1.0.0")
	f := newFamily(t, b, Config{Expect: "1.1.0"})
	d := rollout.Device{Topic: "two", Entity: "firmware"}
	rs := newReports()
	if err := f.Watch(ctxT(t), []rollout.Device{d}, rs.Add); err != nil {
		t.Fatal(err)
	}
	if fa, err := f.Preflight(ctxT(t), d); err != nil || fa.Release != "1.0.0" {
		t.Fatalf("preflight: %+v %v", fa, err)
	}
	dev.publish("two/update/beta/state", st("", ""))
	dev.publish("two/update/beta/state", st("1.0.0", "1.1.0"))
	dev.publish("two/update/beta/state", st("0.9.0", "1.1.0"))
	dev.check("1.1.0") // the named entity's, behind beta's on the same connection
	// Reports come in arrival order: beta's, published first on the
	// same connection, would be before it.
	got := rs.Until(t, "the named entity's state", func(rs []rollout.Report) bool {
		return slices.ContainsFunc(rs, func(r rollout.Report) bool { return r.Facts.Latest == "1.1.0" && r.Facts.Release == "1.0.0" })
	})
	if len(got) != 1 || got[0].Kind != rollout.ReportStatus || got[0].Facts != (rollout.Facts{Version: "1.0.0", Release: "1.0.0", Latest: "1.1.0"}) {
		t.Fatalf("reports %q: %+v", kinds(got), got)
	}
}

// Ready, once the device tells installed_version == Expect: already on
// it when the read before found no version and nothing since shows a
// restart; installed on its own when it restarted since, or told another
// version at the read. Command's refusal stays a fallback.
func TestReadyAlreadyOn(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	f := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: wait})
	readThen := func(dev *fakeESP, want rollout.Facts, then func()) error {
		t.Helper()
		d := rollout.Device{Name: dev.prefix, Topic: dev.prefix}
		if fa, err := f.Preflight(ctxT(t), d); err != nil || fa != want {
			t.Fatalf("%s: preflight %+v %v", dev.prefix, fa, err)
		}
		ready := make(chan error, 1)
		go func() { ready <- f.Ready(ctxT(t), d) }()
		then()
		return <-ready
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// Booted on 1.1.0, no check yet at the read.
		cur := startESP(t, b, "cur", "1.1.0")
		err := readThen(cur, rollout.Facts{}, func() { cur.check("1.1.0") })
		if !errors.Is(err, rollout.ErrAlreadyOn) || errors.Is(err, rollout.ErrTookAnnouncement) || err.Error() != "cur already runs 1.1.0 (told at its first update check since the read)" {
			t.Errorf("cur: %v", err)
		}
		// Had the engine commanded it anyway: refused, nothing sent.
		err = f.Command(ctxT(t), rollout.Device{Name: "cur", Topic: "cur"}, imgURL)
		if !errors.Is(err, rollout.ErrNotSent) || err.Error() != "cur: not sent INSTALL: it told installed 1.1.0 only after its wait for the manifest ended, so whether it ran it before is unknown" {
			t.Errorf("cur: command: %v", err)
		}
		if ins := cur.installsSeen(); len(ins) != 0 {
			t.Errorf("cur: INSTALLs %v", ins)
		}
	})
	wg.Go(func() {
		// No version at the read, then a restart into 1.1.0.
		self := startESP(t, b, "self", "1.0.0")
		err := readThen(self, rollout.Facts{}, func() { self.reboot("1.1.0"); self.check("1.1.0") })
		if !errors.Is(err, rollout.ErrTookAnnouncement) || errors.Is(err, rollout.ErrAlreadyOn) || err.Error() != "self installed 1.1.0 on its own" {
			t.Errorf("self: %v", err)
		}
	})
	wg.Go(func() {
		// 1.0.0 at the read, then 1.1.0 (its restart unseen).
		other := startESP(t, b, "other", "1.0.0")
		other.check("1.0.0")
		err := readThen(other, rollout.Facts{Version: "1.0.0", Release: "1.0.0", Latest: "1.0.0"}, func() {
			other.mu.Lock()
			other.project = "1.1.0"
			other.mu.Unlock()
			other.check("1.1.0")
		})
		if !errors.Is(err, rollout.ErrTookAnnouncement) {
			t.Errorf("other: %v", err)
		}
	})
	wg.Wait()
}

// A node that already tells latest == the target from an earlier
// manifest (a rollout a gate stopped, an older build in the store: another
// image under the same version) is not ready until it checks again after
// this announcement: its retained state, or a live one told before, may
// name the old image, which INSTALL would take.
func TestReadyOnlyAfterAnnouncement(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	cmds := startSpy(t, b, "+/update/+/command")
	f := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: wait})
	for _, live := range []bool{false, true} {
		prefix := fmt.Sprintf("stale%v", live)
		dev := startESP(t, b, prefix, "1.0.0")
		dev.check("1.1.0") // the old manifest, retained
		d := rollout.Device{Topic: prefix}
		if fa, err := f.Preflight(ctxT(t), d); err != nil || fa.Latest != "1.1.0" {
			t.Fatalf("%s: preflight %+v %v", prefix, fa, err)
		}
		if live {
			rs := newReports()
			if err := f.Watch(ctxT(t), []rollout.Device{d}, rs.Add); err != nil {
				t.Fatal(err)
			}
			dev.check("1.1.0") // still the old manifest, told live
			rs.Until(t, "the live state", hasKind(rollout.ReportStatus))
		}
		if _, err := f.Announce([]rollout.Device{d}, rollout.Image{Name: "fw.bin", Chip: "esp32"}, imgURL, strings.Repeat("a", 32)); err != nil {
			t.Fatal(err)
		}
		ready := make(chan error, 1)
		go func() {
			err := f.Ready(ctxT(t), d)
			if err == nil {
				err = f.Command(ctxT(t), d, imgURL)
			}
			ready <- err
		}()
		select {
		case err := <-ready:
			t.Fatalf("%s: ready (and commanded) on a state told before the announcement: %v", prefix, err)
		case <-time.After(300 * time.Millisecond): // gives a wrong Ready the time to answer
		}
		if ms := cmds.messages(); len(ms) != 0 {
			t.Fatalf("%s: commanded before its check: %v", prefix, ms)
		}
		dev.check("1.1.0") // the new manifest
		if err := <-ready; err != nil {
			t.Fatalf("%s: %v", prefix, err)
		}
		cmds.atLeast(t, 1)
		for deadline := time.Now().Add(wait); len(dev.installsSeen()) == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if ins := dev.installsSeen(); len(ins) != 1 || !ins[0] {
			t.Fatalf("%s: INSTALLs %v", prefix, ins)
		}
		cmds.mu.Lock()
		cmds.got = nil
		cmds.mu.Unlock()
	}
	// Its wait ends saying why.
	dev := startESP(t, b, "late", "1.0.0")
	dev.check("1.1.0")
	f2 := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: time.Second})
	want := "told latest 1.1.0 only before this announcement, and no update check since within 1s (--check-wait): build it with a shorter update_interval, or check that it fetches manifest.json"
	if err := f2.Ready(ctxT(t), rollout.Device{Topic: "late", Entity: "firmware"}); err == nil || err.Error() != want {
		t.Fatalf("late: %v", err)
	}
}

// entitiesSeen waits until the family's cache holds n update entities of
// prefix.
func entitiesSeen(t *testing.T, f *Family, prefix string, n int) {
	t.Helper()
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		f.mu.Lock()
		got := len(f.devLocked(prefix).entities)
		f.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d update entities seen, want %d", prefix, got, n)
		}
	}
}

// readyChecking runs Ready while the device checks the manifest (finding
// version) every 100 ms: Ready takes only a check after it began.
func readyChecking(t *testing.T, f *Family, d rollout.Device, dev *fakeESP, version string) error {
	t.Helper()
	ready := make(chan error, 1)
	go func() { ready <- f.Ready(ctxT(t), d) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-ready:
			return err
		case <-tick.C:
			dev.check(version)
		}
	}
}

// A node that restarted after Ready (while it waited for a slot) tells ""
// until its next check and would ignore INSTALL: Command sends nothing and
// says so (the engine waits for it again); after its check it is ready
// and commanded.
func TestCommandAfterRestartNotSent(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	cmds := startSpy(t, b, "+/update/+/command")
	dev := startESP(t, b, "boot", "1.0.0")
	dev.check("1.0.0")
	f := newFamily(t, b, Config{Expect: "1.1.0", CheckWait: wait})
	d := rollout.Device{Name: "Boot", Topic: "boot"}
	rs := newReports()
	if err := f.Watch(ctxT(t), []rollout.Device{d}, rs.Add); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Preflight(ctxT(t), d); err != nil {
		t.Fatal(err)
	}
	if err := readyChecking(t, f, d, dev, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	dev.reboot("1.0.0") // no check yet: "" versions
	rs.Until(t, "its empty state", func(rs []rollout.Report) bool {
		return slices.ContainsFunc(rs, func(r rollout.Report) bool { return r.Kind == rollout.ReportStatus && r.Facts == (rollout.Facts{}) })
	})
	err := f.Command(ctxT(t), d, imgURL)
	want := "Boot: not sent INSTALL: it tells no latest version now, not 1.1.0 (restarted since it saw the manifest?), so it would ignore it"
	if !errors.Is(err, rollout.ErrNotSent) || !errors.Is(err, rollout.ErrNotReady) || err.Error() != want {
		t.Fatalf("command: %v", err)
	}
	if err := readyChecking(t, f, d, dev, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if err := f.Command(ctxT(t), d, imgURL); err != nil {
		t.Fatal(err)
	}
	if ms := cmds.atLeast(t, 1); len(ms) != 1 {
		t.Fatalf("commands: %v", ms)
	}
	for deadline := time.Now().Add(wait); len(dev.installsSeen()) == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if ins := dev.installsSeen(); !reflect.DeepEqual(ins, []bool{true}) {
		t.Fatalf("INSTALLs (acted on): %v", ins)
	}
}
