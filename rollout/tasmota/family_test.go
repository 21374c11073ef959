package tasmota

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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

// newFamily connects a broker client and returns the family over it.
func newFamily(t *testing.T, b *testbroker.Broker, opts Options) *Family {
	t.Helper()
	c, err := broker.Connect(ctxT(t), broker.Config{URL: b.URL(), ClientID: fmt.Sprintf("otsota%d", idN.Add(1)), Logger: opts.Logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return New(c, opts)
}

// fakeDevice is a scripted Tasmota written here from the facts
// (docs/protocols/tasmota-mqtt.md): a plain MQTT client with a clean
// session and QoS 0 publishes, its will "Offline" on tele/<t>/LWT. It
// takes every command on cmnd/<t>/# and answers through onCmd.
type fakeDevice struct {
	t                *testing.T
	c                mqtt.Client
	cmnd, stat, tele string      // topic bases, ending in "/"
	old              atomic.Bool // a build before 9.5: Status0 answers in sections

	mu    sync.Mutex
	cmds  []string // "Command payload", in order
	onCmd func(d *fakeDevice, cmd, payload string)
}

func startDevice(t *testing.T, b *testbroker.Broker, cmnd, stat, tele string, onCmd func(d *fakeDevice, cmd, payload string)) *fakeDevice {
	t.Helper()
	d := &fakeDevice{t: t, cmnd: cmnd, stat: stat, tele: tele, onCmd: onCmd}
	o := mqtt.NewClientOptions().AddBroker("tcp://"+b.Addr()).SetClientID(fmt.Sprintf("DVES_%06X", idN.Add(1))).
		SetCleanSession(true).SetAutoReconnect(false).SetWill(tele+"LWT", "Offline", 1, true)
	d.c = mqtt.NewClient(o)
	if tok := d.c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device: %v", tok.Error())
	}
	t.Cleanup(func() { d.c.Disconnect(50) })
	d.pubRetained("LWT", "Online")
	tok := d.c.Subscribe(cmnd+"#", 0, func(_ mqtt.Client, m mqtt.Message) {
		cmd := strings.TrimPrefix(m.Topic(), cmnd)
		d.mu.Lock()
		d.cmds = append(d.cmds, cmd+" "+string(m.Payload()))
		on := d.onCmd
		d.mu.Unlock()
		if on != nil {
			go on(d, cmd, string(m.Payload()))
		}
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device subscribe: %v", tok.Error())
	}
	return d
}

func (d *fakeDevice) publish(topic, payload string, retained bool) {
	tok := d.c.Publish(topic, 0, retained, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		d.t.Errorf("device publish: %v", tok.Error())
	}
}

func (d *fakeDevice) pubRetained(sub, payload string) { d.publish(d.tele+sub, payload, true) }
func (d *fakeDevice) statPub(sub, payload string)     { d.publish(d.stat+sub, payload, false) }
func (d *fakeDevice) telePub(sub, payload string)     { d.publish(d.tele+sub, payload, false) }

func (d *fakeDevice) commands() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.cmds...)
}

// answerStatus answers Status0 with one STATUS0 message (Tasmota 9.5 and
// later) or, as older builds, with the split sections; Status 0 with the
// split sections; Status 2 with STATUS2.
func answerStatus(d *fakeDevice, cmd, payload string) bool {
	split := func() {
		for _, sub := range []string{"STATUS", "STATUS1", "STATUS2", "STATUS3", "STATUS4", "STATUS5", "STATUS6", "STATUS7", "STATUS10", "STATUS11"} {
			d.statPub(sub, status0Split[sub])
		}
	}
	switch {
	case strings.EqualFold(cmd, "Status0") && d.old.Load():
		split()
	case strings.EqualFold(cmd, "Status0"):
		var all []string
		for _, sub := range []string{"STATUS", "STATUS1", "STATUS2", "STATUS3", "STATUS4", "STATUS5", "STATUS6", "STATUS7", "STATUS10", "STATUS11"} {
			all = append(all, status0Split[sub])
		}
		// As Tasmota joins them: "}{" becomes ",".
		d.statPub("STATUS0", strings.ReplaceAll(strings.Join(all, ""), "}{", ","))
	case strings.EqualFold(cmd, "Status") && strings.TrimSpace(payload) == "0":
		split()
	case strings.EqualFold(cmd, "Status") && strings.TrimSpace(payload) == "2":
		d.statPub("STATUS2", `{"StatusFWR":{"Version":"14.3.0(tasmota)","BuildDateTime":"2024-10-08T10:00:00","Hardware":"ESP8266EX"}}`)
	default:
		return false
	}
	return true
}

// reports collects a watch's reports.
func kinds(rs []rollout.Report) []rollout.ReportKind {
	var out []rollout.ReportKind
	for _, r := range rs {
		out = append(out, r.Kind)
	}
	return out
}

// cmndMonitor subscribes to cmnd/# as a second client: it records every
// command published and whether the broker marked it retained.
type cmndMonitor struct {
	mu       sync.Mutex
	got      []string
	retained int
}

func monitor(t *testing.T, b *testbroker.Broker, filter string) *cmndMonitor {
	t.Helper()
	m, _ := monitorClient(t, b, filter)
	return m
}

func monitorClient(t *testing.T, b *testbroker.Broker, filter string) (*cmndMonitor, *broker.Client) {
	t.Helper()
	m := &cmndMonitor{}
	c, err := broker.Connect(ctxT(t), broker.Config{URL: b.URL(), ClientID: fmt.Sprintf("mon%d", idN.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Subscribe(ctxT(t), filter, func(msg broker.Message) {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.got = append(m.got, msg.Topic+" "+string(msg.Payload))
		if msg.Retained {
			m.retained++
		}
	}); err != nil {
		t.Fatal(err)
	}
	return m, c
}

// seen is what the monitor got, markers left out, and how many were
// retained.
func (m *cmndMonitor) seen() ([]string, int) {
	got, retained := m.seenAll()
	return slices.DeleteFunc(got, func(s string) bool { return strings.HasPrefix(s, markerTopic+" ") }), retained
}

func (m *cmndMonitor) seenAll() ([]string, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.got...), m.retained
}

// markerTopic is where markers go (no device has this topic).
const markerTopic = "cmnd/zz/marker"

var markerN atomic.Int32

// sync publishes a marker from c and waits until m saw it: the broker
// delivers in order, so what it sent m before (retained messages at the
// subscribe, and whatever c published before) has arrived by then. A
// negative assertion made after it needs no sleep.
func (m *cmndMonitor) sync(t *testing.T, c *broker.Client) {
	t.Helper()
	payload := fmt.Sprintf("marker %d", markerN.Add(1))
	if err := c.Publish(ctxT(t), markerTopic, []byte(payload)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		got, _ := m.seenAll()
		if slices.Contains(got, markerTopic+" "+payload) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the marker never came back: %q", got)
		}
		time.Sleep(10 * time.Millisecond) // polls a condition
	}
}

// noRetainedCommands asserts that a client subscribing now gets no
// retained message under cmnd/#.
func noRetainedCommands(t *testing.T, b *testbroker.Broker) {
	t.Helper()
	late, c := monitorClient(t, b, "cmnd/#")
	late.sync(t, c) // retained messages come at the subscribe, before it
	if got, _ := late.seen(); len(got) > 0 {
		t.Fatalf("retained under cmnd/#: %q", got)
	}
}

// The whole upgrade as Tasmota reports it: preflight, one command,
// started, success, offline, online, one booted report from INFO1..3,
// the reread, and OtaUrl put back.
func TestUpgradeReported(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t, testbroker.KeepLogs())
	mon := monitor(t, b, "cmnd/#")
	const url = "http://10.0.0.2:8070/Zm9vYmFy/fw.bin"
	var otaURL atomic.Value
	otaURL.Store("http://ota.tasmota.com/tasmota/release/tasmota.bin.gz")
	dev := startDevice(t, b, "cmnd/dev1/", "stat/dev1/", "tele/dev1/", func(d *fakeDevice, cmd, payload string) {
		if answerStatus(d, cmd, payload) {
			return
		}
		switch cmd {
		case "Backlog":
			d.statPub("RESULT", `{"OtaUrl":"`+url+`"}`)
			d.statPub("RESULT", `{"Upgrade":"Version 14.2.0(tasmota) from `+url+`"}`)
			d.statPub("UPGRADE", `{"Upgrade":"Successful. Restarting"}`)
			d.pubRetained("LWT", "Offline")
			d.pubRetained("LWT", "Online")
			d.statPub("POWER", "OFF")
			d.telePub("INFO1", `{"Info1":{"Module":"Sonoff Basic","Version":"14.3.0(tasmota)","FallbackTopic":"cmnd/DVES_001122_fb/","GroupTopic":"cmnd/tasmotas/"}}`)
			d.telePub("INFO2", `{"Info2":{"WebServerMode":"Admin","Hostname":"dev1-1234","IPAddress":"192.168.1.50"}}`)
			d.telePub("INFO3", `{"Info3":{"RestartReason":"Software/System restart","BootCount":13}}`)
		case "OtaUrl":
			if payload != "" {
				otaURL.Store(payload)
			}
			d.statPub("RESULT", `{"OtaUrl":"`+otaURL.Load().(string)+`"}`)
		}
	})
	var logs syncBuffer
	f := newFamily(t, b, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	d := rollout.Device{Name: "kitchen", Topic: "dev1"}

	rs := newReports()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := f.Watch(ctx, []rollout.Device{d}, rs.Add); err != nil {
		t.Fatal(err)
	}
	rs.Until(t, "retained LWT", hasKind(rollout.ReportOnline))

	before, err := f.Preflight(ctxT(t), d)
	if err != nil {
		t.Fatal(err)
	}
	if before.Version != "14.2.0(tasmota)" || before.Release != "14.2.0" || before.OtaURL == nil ||
		*before.OtaURL != "http://ota.tasmota.com/tasmota/release/tasmota.bin.gz" || before.BootCount == nil || *before.BootCount != 12 ||
		before.FreeKiB == nil || *before.FreeKiB != 380 || before.Chip != "esp8266" || before.UptimeS == nil || *before.UptimeS != 3723 {
		t.Fatalf("preflight: %+v", before)
	}

	if err := f.Command(ctxT(t), d, url); err != nil {
		t.Fatal(err)
	}
	got := rs.Until(t, "booted", hasKind(rollout.ReportBooted))
	want := []rollout.ReportKind{rollout.ReportOnline, rollout.ReportStarted, rollout.ReportSuccess, rollout.ReportOffline, rollout.ReportOnline, rollout.ReportBooted}
	if !reflect.DeepEqual(kinds(got), want) {
		t.Fatalf("kinds %v, want %v", kinds(got), want)
	}
	boot := got[len(got)-1]
	wantFacts := rollout.Facts{Version: "14.3.0(tasmota)", Release: "14.3.0", RestartReason: "Software/System restart", BootCount: i64(13), IP: "192.168.1.50"}
	if boot.Topic != "dev1" || boot.Source != "INFO1" || !reflect.DeepEqual(boot.Facts, wantFacts) || boot.At.IsZero() {
		t.Fatalf("booted: %+v", boot)
	}
	if got[1].Words != "Version 14.2.0(tasmota) from http://10.0.0.2:8070/…/fw.bin" || got[2].Words != "Successful. Restarting" {
		t.Fatalf("words: %q %q", got[1].Words, got[2].Words)
	}
	// The URL's token is a capability: in no report and no log line.
	const token = "Zm9vYmFy"
	for _, r := range got {
		if s := fmt.Sprintf("%+v", r); strings.Contains(s, token) {
			t.Errorf("the token in a report: %s", s)
		}
	}
	if l := logs.String(); strings.Contains(l, token) || !strings.Contains(l, "commanded") {
		t.Errorf("the token in the log, or no log: %s", l)
	}

	after, err := f.Reread(ctxT(t), d)
	if err != nil || after.Release != "14.3.0" || after.Intermediate != "" || after.Chip != "esp8266" {
		t.Fatalf("reread: %+v %v", after, err)
	}
	if err := f.Restore(ctxT(t), d, *before.OtaURL); err != nil {
		t.Fatal(err)
	}

	// One command to the device's own topic, and never retained.
	cmds := dev.commands()
	backlogs := 0
	for _, c := range cmds {
		if strings.HasPrefix(c, "Backlog ") {
			backlogs++
			if c != "Backlog OtaUrl "+url+"; Upgrade 1" {
				t.Errorf("command %q", c)
			}
		}
	}
	wantCmds := []string{"Status0 0", "Backlog OtaUrl " + url + "; Upgrade 1", "Status 2", "OtaUrl http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"}
	if backlogs != 1 || !reflect.DeepEqual(cmds, wantCmds) {
		t.Fatalf("commands %q", cmds)
	}
	seen, retained := mon.seen()
	if retained != 0 || len(seen) != len(wantCmds) {
		t.Fatalf("monitor saw %q, %d retained", seen, retained)
	}
	for _, s := range seen {
		if !strings.HasPrefix(s, "cmnd/dev1/") {
			t.Errorf("a command to %q", s)
		}
	}
	noRetainedCommands(t, b)
}

// A failed download is reported with the device's words; the old payload
// shapes (no Info wrapper) are read; INFO1 without INFO3 still gives one
// booted report.
func TestFailedAndOldShapes(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	dev := startDevice(t, b, "cmnd/old/", "stat/old/", "tele/old/", func(d *fakeDevice, cmd, payload string) {
		if cmd == "Backlog" {
			d.statPub("RESULT", `{"Upgrade":"Version 9.3.1 from http://h/fw.bin"}`)
			d.statPub("UPGRADE", `{"Upgrade":"Failed Wrong MD5"}`)
		}
	})
	f := newFamily(t, b, Options{})
	d := rollout.Device{Topic: "old"}
	rs := newReports()
	if err := f.Watch(ctxT(t), []rollout.Device{d}, rs.Add); err != nil {
		t.Fatal(err)
	}
	if err := f.Command(ctxT(t), d, "http://h/fw.bin"); err != nil {
		t.Fatal(err)
	}
	got := rs.Until(t, "failed", hasKind(rollout.ReportFailed))
	last := got[len(got)-1]
	if last.Words != "Failed Wrong MD5" || last.Topic != "old" || last.Source != "UPGRADE" {
		t.Fatalf("failed: %+v", last)
	}
	dev.telePub("INFO1", `{"Module":"Generic","Version":"9.3.1(minimal)","FallbackTopic":"x","GroupTopic":"y"}`)
	got = rs.Until(t, "booted", hasKind(rollout.ReportBooted))
	boot := got[len(got)-1]
	if boot.Facts.Version != "9.3.1(minimal)" || boot.Facts.Intermediate != "minimal" || boot.Facts.RestartReason != "" {
		t.Fatalf("booted: %+v", boot)
	}
	// INFO3 alone (its INFO1 lost): a boot that told no version.
	dev.telePub("INFO3", `{"RestartReason":"Power On"}`)
	got = rs.Until(t, "second booted", func(rs []rollout.Report) bool { return len(kinds(rs)) > 0 && rs[len(rs)-1].Source == "INFO3" })
	if b := got[len(got)-1]; b.Kind != rollout.ReportBooted || b.Facts.Version != "" || b.Facts.RestartReason != "Power On" {
		t.Fatalf("INFO3 alone: %+v", b)
	}
}

// Devices under their own FullTopic, and the default one, side by side.
func TestOwnFullTopic(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	own := startDevice(t, b, "home/lamp/cmnd/", "home/lamp/stat/", "home/lamp/tele/", func(d *fakeDevice, cmd, payload string) {
		answerStatus(d, cmd, payload)
		if cmd == "Backlog" {
			d.statPub("RESULT", `{"Upgrade":"Version 14.2.0 from http://h/fw.bin"}`)
		}
	})
	own.old.Store(true)
	def := startDevice(t, b, "cmnd/plug/", "stat/plug/", "tele/plug/", answerStatusOnly)
	f := newFamily(t, b, Options{})
	lamp := rollout.Device{Topic: "lamp", FullTopic: "home/%topic%/%prefix%/"}
	plug := rollout.Device{Topic: "plug"}
	rs := newReports()
	if err := f.Watch(ctxT(t), []rollout.Device{lamp, plug}, rs.Add); err != nil {
		t.Fatal(err)
	}
	rs.Until(t, "two LWTs", func(rs []rollout.Report) bool { return len(rs) >= 2 })
	for _, d := range []rollout.Device{lamp, plug} {
		if facts, err := f.Preflight(ctxT(t), d); err != nil || facts.Release != "14.2.0" {
			t.Fatalf("%s: %+v %v", d.Topic, facts, err)
		}
	}
	if err := f.Command(ctxT(t), lamp, "http://h/fw.bin"); err != nil {
		t.Fatal(err)
	}
	got := rs.Until(t, "started", hasKind(rollout.ReportStarted))
	if got[len(got)-1].Topic != "lamp" {
		t.Fatalf("%+v", got)
	}
	if c := own.commands(); len(c) != 2 || c[1] != "Backlog OtaUrl http://h/fw.bin; Upgrade 1" {
		t.Fatalf("lamp: %q", c)
	}
	if c := def.commands(); len(c) != 1 || c[0] != "Status0 0" {
		t.Fatalf("plug: %q", c)
	}
}

func answerStatusOnly(d *fakeDevice, cmd, payload string) { answerStatus(d, cmd, payload) }

// Discover lists the devices whose retained LWT says Online and leaves
// out those that say Offline; a Watch after it is told the LWTs known.
func TestDiscover(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	startDevice(t, b, "cmnd/a1/", "stat/a1/", "tele/a1/", nil)
	startDevice(t, b, "cmnd/b2/", "stat/b2/", "tele/b2/", nil)
	gone := startDevice(t, b, "cmnd/gone/", "stat/gone/", "tele/gone/", nil)
	gone.pubRetained("LWT", "Offline")
	f := newFamily(t, b, Options{})
	devs, err := f.Discover(ctxT(t), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []rollout.Device{{Name: "a1", Topic: "a1"}, {Name: "b2", Topic: "b2"}}
	if !reflect.DeepEqual(devs, want) {
		t.Fatalf("discovered %+v", devs)
	}
	rs := newReports()
	if err := f.Watch(ctxT(t), devs, rs.Add); err != nil {
		t.Fatal(err)
	}
	got := rs.Until(t, "known LWTs", func(rs []rollout.Report) bool { return len(rs) >= 2 })
	if got[0].Topic != "a1" || got[1].Topic != "b2" || got[0].Kind != rollout.ReportOnline {
		t.Fatalf("%+v", got)
	}
}

func TestNoAnswer(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	f := newFamily(t, b, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := f.Preflight(ctx, rollout.Device{Name: "attic", Topic: "nobody"})
	if err == nil || !strings.Contains(err.Error(), "attic did not answer Status 0") {
		t.Fatalf("err = %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	err = f.Restore(ctx2, rollout.Device{Topic: "nobody"}, "http://user:pw-secret@h/fw.bin")
	if err == nil || strings.Contains(err.Error(), "pw-secret") || !strings.Contains(err.Error(), "did not confirm") {
		t.Fatalf("err = %v", err)
	}
}

func TestRestoreEmptySendsNothing(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	mon := monitor(t, b, "cmnd/#")
	f := newFamily(t, b, Options{})
	err := f.Restore(ctxT(t), rollout.Device{Topic: "dev"}, "")
	if !errors.Is(err, ErrEmptyOtaURL) {
		t.Fatalf("err = %v", err)
	}
	if err := f.Command(ctxT(t), rollout.Device{Topic: "dev"}, "http://h/x;Restart 1"); err == nil {
		t.Fatal("a URL with ; taken")
	}
	if err := f.Command(ctxT(t), rollout.Device{Topic: "tasmotas/#"}, "http://h/fw.bin"); err == nil {
		t.Fatal("a wildcard topic taken")
	}
	mon.sync(t, f.c) // after anything the family published
	if seen, _ := mon.seen(); len(seen) != 0 {
		t.Fatalf("sent %q", seen)
	}
}

// The broker restarts while a rollout watches: with its sessions kept
// (persistence) or forgotten (none). Either way the client subscribes
// again, and a boot reported after the restart arrives.
func TestWatchAcrossBrokerRestart(t *testing.T) {
	t.Parallel()
	for _, persist := range []bool{true, false} {
		t.Run(fmt.Sprintf("persistence=%v", persist), func(t *testing.T) {
			var opts []testbroker.Option
			if persist {
				opts = append(opts, testbroker.WithPersistence())
			}
			b := testbroker.Start(t, opts...)
			startDevice(t, b, "cmnd/r1/", "stat/r1/", "tele/r1/", nil)
			f := newFamily(t, b, Options{})
			rs := newReports()
			if err := f.Watch(ctxT(t), []rollout.Device{{Topic: "r1"}}, rs.Add); err != nil {
				t.Fatal(err)
			}
			rs.Until(t, "LWT", hasKind(rollout.ReportOnline))
			b.Restart()
			// The device comes back as Tasmota does after a boot: LWT
			// Online (retained), INFO1, INFO3. The family's client may
			// not be back yet (QoS 0 is not kept for it): send until seen.
			dev := startDevice(t, b, "cmnd/r1/", "stat/r1/", "tele/r1/", nil)
			deadline := time.Now().Add(wait)
			for {
				dev.telePub("INFO1", `{"Info1":{"Version":"14.3.0(tasmota)"}}`)
				dev.telePub("INFO3", `{"Info3":{"RestartReason":"Software/System restart","BootCount":2}}`)
				select {
				case <-time.After(500 * time.Millisecond):
				case <-rs.Arrived():
				}
				if hasKind(rollout.ReportBooted)(rs.Snapshot()) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no booted report after the broker restarted: %+v", rs.Snapshot())
				}
			}
		})
	}
}

// status0All is a Status0 answer in one message, as Tasmota 9.5 and later
// send it.
func status0All() string {
	var all []string
	for _, sub := range []string{"STATUS", "STATUS1", "STATUS2", "STATUS3", "STATUS4", "STATUS5", "STATUS6", "STATUS7", "STATUS10", "STATUS11"} {
		all = append(all, status0Split[sub])
	}
	return strings.ReplaceAll(strings.Join(all, ""), "}{", ",")
}

// Retained INFO1..3 (InfoRetain 1), and a retained RESULT, UPGRADE and
// STATUS0 (anyone's), are sent again by the broker on each subscribe,
// after a broker restart too: none is a report, and none answers a read.
// Only the LWT is taken from a retained message.
func TestRetainedAreNotEvents(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t, testbroker.WithPersistence(), testbroker.KeepLogs())
	dev := startDevice(t, b, "cmnd/ret/", "stat/ret/", "tele/ret/", nil)
	dev.pubRetained("INFO1", `{"Info1":{"Module":"Generic","Version":"14.1.0(tasmota)"}}`)
	dev.pubRetained("INFO2", `{"Info2":{"IPAddress":"192.168.1.9"}}`)
	dev.pubRetained("INFO3", `{"Info3":{"RestartReason":"Power On","BootCount":3}}`)
	dev.publish("stat/ret/RESULT", `{"Upgrade":"Version 14.1.0(tasmota) from http://h/fw.bin"}`, true)
	dev.publish("stat/ret/UPGRADE", `{"Upgrade":"Failed Wrong MD5"}`, true)
	dev.publish("stat/ret/STATUS0", status0All(), true)
	// A retained marker on a filter subscribed after the family's: the
	// broker sends it, on the first subscribe and after each reconnect,
	// only once every retained message of the family's filters was sent.
	dev.publish("zz/marker", "retained", true)

	f := newFamily(t, b, Options{})
	d := rollout.Device{Topic: "ret"}
	rs := newReports()
	// "mark" only ever sends live LWTs: a report of it, in order behind
	// whatever the messages before it made.
	if err := f.Watch(ctxT(t), []rollout.Device{d, {Topic: "mark"}}, rs.Add); err != nil {
		t.Fatal(err)
	}
	p, _, err := f.target(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.ensure(ctxT(t), p, readSubs); err != nil {
		t.Fatal(err)
	}
	marks := make(chan struct{}, 10)
	if err := f.c.Subscribe(ctxT(t), "zz/marker", func(broker.Message) { marks <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	awaitMark := func() {
		t.Helper()
		select {
		case <-marks:
		case <-time.After(wait):
			t.Fatal("no retained marker")
		}
	}
	// onlyLWT sends the n-th live marker and, once it is reported,
	// asserts that the device has only LWT reports.
	onlyLWT := func(from *fakeDevice, n int, when string) {
		t.Helper()
		from.publish("tele/mark/LWT", "Online", false)
		got := rs.Until(t, fmt.Sprint("marker ", n), func(rs []rollout.Report) bool {
			c := 0
			for _, r := range rs {
				if r.Topic == "mark" {
					c++
				}
			}
			return c >= n
		})
		lwt := 0
		for _, r := range got {
			if r.Topic == "ret" && r.Source != "LWT" {
				t.Fatalf("%s: a retained message made a report: %+v", when, r)
			}
			if r.Topic == "ret" {
				lwt++
			}
		}
		if lwt == 0 {
			t.Fatalf("%s: not even the retained LWT was reported", when)
		}
	}
	awaitMark()
	onlyLWT(dev, 1, "at the subscribe")

	// A read waiting while the broker restarts: the retained STATUS0 sent
	// again at the resubscribe is no answer.
	pctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	type result struct {
		f   rollout.Facts
		err error
	}
	pre := make(chan result, 1)
	go func() {
		fa, err := f.Preflight(pctx, d)
		pre <- result{fa, err}
	}()
	for deadline := time.Now().Add(wait); !slices.Contains(dev.commands(), "Status0 0"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the read was not sent")
		}
	}
	b.Restart()
	awaitMark() // every filter subscribed again, retained messages sent again
	// The device comes back (its client does not reconnect by itself).
	dev2 := startDevice(t, b, "cmnd/ret/", "stat/ret/", "tele/ret/", nil)
	onlyLWT(dev2, 2, "after the broker restarted")
	cancel()
	if r := <-pre; r.err == nil {
		t.Fatalf("a retained STATUS0 answered the read: %+v", r.f)
	}
}

// muteProxy forwards TCP to the broker; once muted it drops what the
// broker sends (its acknowledgements among them).
type muteProxy struct {
	addr  string
	muted atomic.Bool
}

func startMuteProxy(t *testing.T, upstream string) *muteProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &muteProxy{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); u.Close() })
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := u.Read(buf)
					if n > 0 && !p.muted.Load() {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// Command's errors tell a command that may have left (no acknowledgement
// in time: broker.ErrMaybeSent) from one that surely did not (the link
// down: rollout.ErrNotSent), for the engine to leave the device pending.
func TestCommandSentOrNot(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	px := startMuteProxy(t, b.Addr())
	c, err := broker.Connect(ctxT(t), broker.Config{URL: "mqtt://" + px.addr, ClientID: fmt.Sprintf("otsota%d", idN.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	f := New(c, Options{})
	d := rollout.Device{Name: "kitchen", Topic: "dev"}
	const u = "http://10.0.0.2:8070/Zm9vYmFy/fw.bin"
	if err := f.Command(ctxT(t), d, u); err != nil {
		t.Fatal(err)
	}
	px.muted.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err = f.Command(ctx, d, u)
	if !errors.Is(err, broker.ErrMaybeSent) || errors.Is(err, rollout.ErrNotSent) {
		t.Fatalf("no acknowledgement: %v", err)
	}
	b.Stop()
	for deadline := time.Now().Add(wait); c.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the link never went down")
		}
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	err = f.Command(ctx2, d, u)
	if !errors.Is(err, rollout.ErrNotSent) || errors.Is(err, broker.ErrMaybeSent) || strings.Contains(err.Error(), "Zm9vYmFy") ||
		!strings.HasPrefix(err.Error(), "kitchen: ") {
		t.Fatalf("link down: %v", err)
	}
}

// The family is a rollout.Linker over its broker client: a restart of the
// broker (sessions lost) is a change, and once Link says up again the
// subscriptions are back, so a read made then is answered.
func TestLinkAcrossBrokerRestart(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	startDevice(t, b, "cmnd/l1/", "stat/l1/", "tele/l1/", answerStatusOnly)
	f := newFamily(t, b, Options{})
	d := rollout.Device{Topic: "l1"}
	if _, err := f.Preflight(ctxT(t), d); err != nil {
		t.Fatal(err)
	}
	var l rollout.Linker = f
	up, changed := l.Link()
	if !up {
		t.Fatal("down at the start")
	}
	b.Restart()
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
	startDevice(t, b, "cmnd/l1/", "stat/l1/", "tele/l1/", answerStatusOnly) // its own client does not reconnect
	if fa, err := f.Preflight(ctxT(t), d); err != nil || fa.Release != "14.2.0" {
		t.Fatalf("read after the link came back: %+v %v", fa, err)
	}
}
