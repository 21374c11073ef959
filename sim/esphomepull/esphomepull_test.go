package esphomepull

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ots-ota/ots-ota/internal/testbroker"
)

// TestFirmwareURL: ota.path as http_request_update.cpp resolves it, the
// "http" anywhere quirk included.
func TestFirmwareURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ source, path, want string }{
		{"http://10.0.0.1:8070/fw/manifest.json", "http://cdn.example/x/fw.bin", "http://cdn.example/x/fw.bin"},
		{"http://10.0.0.1:8070/fw/manifest.json", "https://cdn.example/fw.bin", "https://cdn.example/fw.bin"},
		{"http://10.0.0.1:8070/fw/manifest.json", "/img/fw.bin", "http://10.0.0.1:8070/img/fw.bin"},
		{"http://10.0.0.1:8070/fw/manifest.json", "img/fw.bin", "http://10.0.0.1:8070/fw/img/fw.bin"},
		{"http://10.0.0.1:8070/manifest.json", "fw.bin", "http://10.0.0.1:8070/fw.bin"},
		// "http" anywhere: taken as a whole URL (and then refused as one).
		{"http://10.0.0.1:8070/fw/manifest.json", "/fw/http-light.bin", "/fw/http-light.bin"},
		{"http://10.0.0.1:8070/fw/manifest.json", "my-http.bin", "my-http.bin"},
		// No '/' after the host: the whole source is the base.
		{"http://10.0.0.1:8070", "/fw.bin", "http://10.0.0.1:8070/fw.bin"},
		{"https://h.example/a/b/m.json", "/c.bin", "https://h.example/c.bin"},
	} {
		if got := FirmwareURL(c.source, c.path); got != c.want {
			t.Errorf("FirmwareURL(%q, %q) = %q, want %q", c.source, c.path, got, c.want)
		}
	}
}

func TestParseFaultAndAssign(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want FaultSpec
		err  string
	}{
		{"silent", FaultSpec{Kind: FaultSilent}, ""},
		{"Download-Cut:3", FaultSpec{Kind: FaultDownloadCut, Count: 3}, ""},
		{"auto-install:10%", FaultSpec{Kind: FaultAutoInstall, Percent: 10}, ""},
		{"silent:0", FaultSpec{}, "N is a count"},
		{"silent:150%", FaultSpec{}, "share of the fleet"},
		{"explode", FaultSpec{}, `unknown fault "explode"`},
	} {
		got, err := ParseFault(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v", c.in, got, err)
		}
	}
	devs := make([]Device, 20)
	if err := AssignFaults(devs, []FaultSpec{{Kind: FaultSilent, Count: 2}, {Kind: FaultWrongVersion, Percent: 10}, {Kind: FaultAutoInstall}}); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, d := range devs[:5] {
		var s []string
		for _, f := range d.Faults {
			s = append(s, string(f))
		}
		kinds = append(kinds, strings.Join(s, "+"))
	}
	if got := strings.Join(kinds, ","); got != "silent+auto-install,silent+auto-install,wrong-version+auto-install,wrong-version+auto-install,auto-install" {
		t.Errorf("assigned %s", got)
	}
	if err := AssignFaults(make([]Device, 2), []FaultSpec{{Kind: FaultSilent, Count: 3}}); err == nil {
		t.Error("3 of 2 devices assigned")
	}
}

// TestBootSequence: what the broker sees of a node from its power-on
// through an install: online, the empty state, the first check's state;
// INSTALL, the state once (installing: the same JSON), the shutdown
// message offline, online after the boot, the empty state, then the new
// installed_version. The image is fetched once, whole.
func TestBootSequence(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	srv := serve(t)
	img := buildImage(t, "2.0.0", 80<<10)
	srv.put("/fw/app.bin", img)
	srv.put("/fw/manifest.json", manifestFor("2.0.0", "ESP32-S3", "app.bin", img))
	w := watch(t, b, "#")
	f, ev := startFleet(t, Config{Broker: b.URL(), Devices: fast(Device{Name: "kitchen", ManifestURL: srv.url("/fw/manifest.json")})})
	if c := ev.wait(t, "kitchen", EventChecked, 1); c.Version != "2.0.0" || c.Text != "available" {
		t.Fatalf("first check: %+v", c)
	}
	expectNode(t, w, "kitchen", "online", "/", "1.0.0/2.0.0")
	w.Publish("kitchen/update/firmware/command", "INSTALL", false)
	ev.wait(t, "kitchen", EventChecked, 2) // the new boot's first check
	expectNode(t, w, "kitchen", "online", "/", "1.0.0/2.0.0", "1.0.0/2.0.0", "offline", "online", "/", "2.0.0/2.0.0")
	if got := f.Running("kitchen"); got != "2.0.0" {
		t.Errorf("runs %q", got)
	}
	if n := srv.count("/fw/app.bin"); n != 1 {
		t.Errorf("%d GETs of the image", n)
	}
	if bt := ev.wait(t, "kitchen", EventBooted, 2); bt.BootCount != 2 || bt.Version != "2.0.0" {
		t.Errorf("second boot %+v", bt)
	}
	// Every state the node publishes is retained, and so are online and
	// offline; the state JSON has the summary the manifest gave.
	for _, m := range w.All() {
		if strings.HasPrefix(m.Topic, "kitchen/update/firmware/state") && strings.Contains(m.Payload, `"latest_version":"2.0.0"`) &&
			!strings.Contains(m.Payload, `"title":"sim","release_summary":"s"`) {
			t.Errorf("state %s", m.Payload)
		}
	}
	r := watch(t, b, "kitchen/#") // a late subscriber gets the retained copies
	deadline := time.Now().Add(10 * time.Second)
	for len(r.All()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := strings.Join(nodeMsgs(r, "kitchen"), " | "); got != "online | 2.0.0/2.0.0" {
		t.Errorf("retained: %s", got)
	}
	for _, m := range r.All() {
		if !m.Retained {
			t.Errorf("not retained: %s", m)
		}
	}
}

// TestInstallIgnored: INSTALL does nothing unless the state is AVAILABLE:
// not when the manifest tells the running version, not before the boot's
// first check, not as a retained command; an unknown payload neither.
func TestInstallIgnored(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	srv := serve(t)
	img := buildImage(t, "1.0.0", 80<<10)
	srv.put("/fw.bin", img)
	srv.put("/same.json", manifestFor("1.0.0", "ESP32-S3", "/fw.bin", img))
	w := watch(t, b, "#")
	// A retained INSTALL waits for the node on the broker.
	w.Publish("retained/update/firmware/command", "INSTALL", true)
	devs := fast(
		Device{Name: "same", ManifestURL: srv.url("/same.json")},
		Device{Name: "early", ManifestURL: srv.url("/same.json"), FirstCheck: time.Hour},
		Device{Name: "retained", ManifestURL: srv.url("/same.json")},
	)
	f, ev := startFleet(t, Config{Broker: b.URL(), Devices: devs})
	if c := ev.wait(t, "same", EventChecked, 1); c.Text != "no update" {
		t.Fatalf("check: %+v", c)
	}
	w.Publish("same/update/firmware/command", "INSTALL", false)
	w.Publish("same/update/firmware/command", "install", false)
	w.Publish("early/update/firmware/command", "INSTALL", false)
	if c := ev.wait(t, "same", EventCommand, 1); !strings.Contains(c.Text, "ignored: the state is no update") {
		t.Errorf("same: %+v", c)
	}
	if c := ev.wait(t, "same", EventCommand, 2); !strings.Contains(c.Text, "unknown update payload") {
		t.Errorf("same: %+v", c)
	}
	if c := ev.wait(t, "early", EventCommand, 1); !strings.Contains(c.Text, "ignored: the state is unknown") {
		t.Errorf("early: %+v", c)
	}
	if c := ev.wait(t, "retained", EventCommand, 1); !strings.Contains(c.Text, "ignored: the state is unknown") {
		t.Errorf("retained: %+v", c)
	}
	expectNode(t, w, "same", "online", "/", "1.0.0/1.0.0")
	expectNode(t, w, "early", "online", "/")
	for _, n := range []string{"same", "early", "retained"} {
		if f.Installs(n) != 0 || ev.has(n, EventUpgrade) || ev.has(n, EventRestarting) {
			t.Errorf("%s installed: %d", n, f.Installs(n))
		}
	}
	if n := srv.count("/fw.bin"); n != 0 {
		t.Errorf("%d GETs of the image", n)
	}
}

// TestCohortsAtScale: 500 nodes in one process, split over two manifests;
// each is told INSTALL once it sees the update; all run the new version.
// Every node makes its own GETs (32 connections at most at once); the
// fleet holds the image once.
func TestCohortsAtScale(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("500 nodes")
	}
	const n = 500
	b := testbroker.Start(t)
	srv := serve(t)
	img := buildImage(t, "2.0.0", 80<<10)
	srv.put("/fw.bin", img)
	srv.put("/canary.json", manifestFor("2.0.0", "ESP32-S3", "/fw.bin", img))
	srv.put("/manifest.json", manifestFor("1.0.0", "ESP32-S3", "/fw.bin", img))
	w := watch(t, b, "+/status") // and the one that publishes INSTALL
	var devs []Device
	for i := range n {
		m := "/manifest.json"
		if i < 50 {
			m = "/canary.json"
		}
		devs = append(devs, Device{Name: fmt.Sprintf("node-%03d", i), ManifestURL: srv.url(m), UpdateInterval: time.Second,
			FlashRate: -1, RebootTime: 50 * time.Millisecond})
	}
	start := time.Now()
	before := runtime.NumGoroutine()
	// MaxConns well below the fleet: nodes wait for a connection.
	f, ev := startFleet(t, Config{Broker: b.URL(), Devices: devs, MaxConns: 32})
	t.Logf("%d goroutines for %d nodes (%.1f each)", runtime.NumGoroutine()-before, n, float64(runtime.NumGoroutine()-before)/n)
	// The canary cohort sees the update; the rest do not.
	for i := range n {
		want := "no update"
		if i < 50 {
			want = "available"
		}
		if c := ev.wait(t, devs[i].Name, EventChecked, 1); c.Text != want {
			t.Fatalf("%s: %+v", devs[i].Name, c)
		}
	}
	t.Logf("%v: every node checked once", time.Since(start).Round(time.Millisecond))
	// The wave: the rest's manifest tells 2.0.0 too, then everyone is told.
	srv.put("/manifest.json", manifestFor("2.0.0", "ESP32-S3", "/fw.bin", img))
	for i := range n {
		name := devs[i].Name
		ev.waitFor(t, name, "check that sees 2.0.0", func(e Event) bool {
			return e.Event == EventChecked && e.Version == "2.0.0" && e.Text == "available"
		})
	}
	var toks []mqtt.Token
	for _, d := range devs {
		toks = append(toks, w.Client().Publish(d.Name+"/update/firmware/command", 1, false, "INSTALL"))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("INSTALL: %v", tok.Error())
		}
	}
	t.Logf("%v: every node told INSTALL", time.Since(start).Round(time.Millisecond))
	deadline := time.Now().Add(60 * time.Second)
	for {
		done := 0
		for _, d := range devs {
			if f.Running(d.Name) == "2.0.0" {
				done++
			}
		}
		if done == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d nodes run 2.0.0: %v", done, n, f.Counts())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%v: every node runs 2.0.0", time.Since(start).Round(time.Millisecond))
	if got := srv.count("/fw.bin"); got != n {
		t.Errorf("%d GETs of the image, want one per node (%d)", got, n)
	}
	f.images.mu.Lock()
	held := len(f.images.byURL)
	f.images.mu.Unlock()
	if held != 1 {
		t.Errorf("the fleet holds %d images, want 1", held)
	}
}

// TestStartErrors: a broker nobody runs, and bad devices, are one error
// each before anything runs.
func TestStartErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Broker: "mqtts://127.0.0.1"}, "plain MQTT only"},
		{Config{Broker: "mqtt://127.0.0.1:1"}, "no devices"},
		{Config{Broker: "mqtt://127.0.0.1:1", Devices: []Device{{Name: "a/b", ManifestURL: "http://127.0.0.1/m.json"}}}, "no '/'"},
		{Config{Broker: "mqtt://127.0.0.1:1", Devices: []Device{{Name: "a", ManifestURL: "ftp://127.0.0.1/m.json"}}}, "give http://"},
		{Config{Broker: "mqtt://127.0.0.1:1", Devices: []Device{{Name: "a", ManifestURL: "http://127.0.0.1/m.json"}, {Name: "a", ManifestURL: "http://127.0.0.1/m.json"}}}, "taken by another device"},
		{Config{Broker: "mqtt://127.0.0.1:1", Devices: []Device{{Name: "a", ManifestURL: "http://127.0.0.1/m.json"}}}, "cannot connect to the broker at 127.0.0.1:1"},
	} {
		_, err := Start(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}
