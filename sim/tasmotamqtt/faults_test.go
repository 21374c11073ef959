package tasmotamqtt

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testbroker"
)

// faultRun is one device on a fresh broker with an image server, commanded
// once; what a subscriber saw is checked by the caller.
type faultRun struct {
	w     *watcher
	f     *Fleet
	ev    *events
	srv   *images
	start int // the index of the command's first message
	url   string
}

func runFault(t *testing.T, dev Device, cfg func(*Config), files map[string][]byte, path string) *faultRun {
	t.Helper()
	b := testbroker.Start(t)
	r := &faultRun{srv: serve(t, files)}
	r.w = watch(t, b, "#")
	c := testConfig(b, dev)
	if cfg != nil {
		cfg(&c)
	}
	r.f, r.ev = startFleet(t, c)
	d := r.f.Devices()[0]
	r.start = waitBoot(r.w, d.Topic, d.Chip, 0, d.Version+"("+d.Image+")") + 1
	r.url = r.srv.url(path)
	r.w.Publish("cmnd/"+d.Topic+"/Backlog", "OtaUrl "+r.url+"; Upgrade 1", false)
	return r
}

// commanded is what every run starts with.
func (r *faultRun) commanded() []string {
	return []string{"Backlog OtaUrl", `RESULT {"OtaUrl":"` + r.url + `"}`, `RESULT {"Upgrade":"Version `}
}

// waitEvent waits for the device's event of kind.
func (r *faultRun) waitEvent(t *testing.T, topic string, k EventKind) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !r.ev.has(topic, k) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s event; events %v; messages:\n%s", k, r.ev.kinds(topic), r.w.Dump())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFaultDownloadCut(t *testing.T) {
	t.Parallel()
	t.Run("esp32", func(t *testing.T) {
		img := buildImage(t, "esp32", "tasmota32", "15.5.0", 80<<10)
		r := runFault(t, Device{Topic: "cut", Faults: []Fault{FaultDownloadCut}}, nil, map[string][]byte{"/fw.bin": img}, "/fw.bin")
		r.w.WaitFor(r.start, "UPGRADE", is("stat/cut/UPGRADE", "Failed"))
		expectSeq(t, r.w, "cut", r.start, append(r.commanded(), `UPGRADE {"Upgrade":"Failed Update error: Stream Read Timeout"}`))
		if got := r.srv.requests(); len(got) != 4 {
			t.Fatalf("ESP32 tries OTA_ATTEMPTS-1 = 4 times; fetched %v", got)
		}
		if r.f.Running("cut") != "15.4.0(tasmota32)" || r.ev.has("cut", EventRestarting) {
			t.Fatalf("running %s, events %v", r.f.Running("cut"), r.ev.kinds("cut"))
		}
	})
	t.Run("esp8266", func(t *testing.T) {
		// Nine tries: five of fw.bin, each cut (the updater closes the MQTT
		// socket for the body: will, reconnect), then four of fw.bin.gz,
		// which is not there: the last try's words are the 404's.
		img := buildImage(t, "esp8266", "tasmota", "15.5.0", 40<<10)
		r := runFault(t, Device{Topic: "cut8", Chip: "esp8266", Faults: []Fault{FaultDownloadCut}}, nil, map[string][]byte{"/fw.bin": img}, "/fw.bin")
		r.w.WaitFor(r.start, "UPGRADE", is("stat/cut8/UPGRADE", "Failed"))
		want := r.commanded()
		for range 5 {
			want = append(want, "LWT Offline", "LWT Online", "POWER ")
		}
		want = append(want, `UPGRADE {"Upgrade":"Failed File Not Found (404)"}`)
		expectSeq(t, r.w, "cut8", r.start, want)
		got := r.srv.requests()
		if strings.Join(got, " ") != strings.Repeat("/fw.bin ", 5)+strings.TrimSpace(strings.Repeat("/fw.bin.gz ", 4)) {
			t.Fatalf("fetched %v", got)
		}
	})
}

func TestFaultMD5Mismatch(t *testing.T) {
	t.Parallel()
	img := buildImage(t, "esp32", "tasmota32", "15.5.0", 0)
	r := runFault(t, Device{Topic: "md5", Faults: []Fault{FaultMD5Mismatch}}, nil, map[string][]byte{"/fw.bin": img}, "/fw.bin")
	r.w.WaitFor(r.start, "UPGRADE", is("stat/md5/UPGRADE", "Failed"))
	expectSeq(t, r.w, "md5", r.start, append(r.commanded(), `UPGRADE {"Upgrade":"Failed Update error: MD5 Check Failed"}`))
	if r.f.Running("md5") != "15.4.0(tasmota32)" {
		t.Fatalf("running %s", r.f.Running("md5"))
	}
}

func TestFaultCrashOnBoot(t *testing.T) {
	t.Parallel()
	img := buildImage(t, "esp32", "tasmota32", "15.5.0", 0)
	r := runFault(t, Device{Topic: "crash", Faults: []Fault{FaultCrashOnBoot}}, nil, map[string][]byte{"/fw.bin": img}, "/fw.bin")
	end := waitBoot(r.w, "crash", "esp32", r.start, "15.4.0(tasmota32)")
	expectSeq(t, r.w, "crash", r.start, append(append(r.commanded(), `UPGRADE {"Upgrade":"Successful. Restarting"}`), bootSeq("esp32")...))
	// ESP32: a panic resets through a software CPU reset, as any restart.
	if v := field(t, r.w.All()[end].Payload, "Info3.RestartReason"); v != "Software reset CPU" {
		t.Fatalf("RestartReason %v", v)
	}
	if !r.ev.has("crash", EventRolledBack) || r.f.Running("crash") != "15.4.0(tasmota32)" {
		t.Fatalf("running %s, events %v", r.f.Running("crash"), r.ev.kinds("crash"))
	}
}

func TestFaultNeverComesBack(t *testing.T) {
	t.Parallel()
	img := buildImage(t, "esp32", "tasmota32", "15.5.0", 0)
	b := testbroker.Start(t)
	srv := serve(t, map[string][]byte{"/fw.bin": img})
	w := watch(t, b, "#")
	f, ev := startFleet(t, testConfig(b, Device{Topic: "gone", Faults: []Fault{FaultNeverComesBack}}))
	start := waitBoot(w, "gone", "esp32", 0, "15.4.0(tasmota32)") + 1
	w.Publish("cmnd/gone/Backlog", "OtaUrl "+srv.url("/fw.bin")+"; Upgrade 1", false)
	r := &faultRun{w: w, ev: ev, url: srv.url("/fw.bin")}
	r.waitEvent(t, "gone", EventGone)
	time.Sleep(20 * f.cfg.Tick)
	expectSeq(t, w, "gone", start, append(r.commanded(), `UPGRADE {"Upgrade":"Successful. Restarting"}`))
	// The restart was a clean DISCONNECT: no will, and the retained LWT a
	// newcomer reads still says Online.
	late := watch(t, b, "tele/gone/LWT")
	late.WaitFor(0, "the retained LWT", func(m msg) bool { return m.Retained && m.Payload == "Online" })
}

func TestFaultTwoStep(t *testing.T) {
	// The loader image may tell its build as the firmware does ("minimal")
	// or by Tasmota's file name ("tasmota-minimal"): it runs as "(minimal)".
	for _, project := range []string{"minimal", "tasmota-minimal"} {
		t.Run(project, func(t *testing.T) { testTwoStep(t, project) })
	}
}

func testTwoStep(t *testing.T, project string) {
	// 64 KiB free: the 96 KiB full image does not fit, the 40 KiB minimal
	// one does, and once it runs the full one fits.
	full := buildImage(t, "esp8266", "tasmota", "15.5.0", 96<<10)
	minimal := buildImage(t, "esp8266", project, "15.5.0", 40<<10)
	r := runFault(t, Device{Topic: "two", Chip: "esp8266", Faults: []Fault{FaultTwoStep}}, nil,
		map[string][]byte{"/fw.bin": full, "/fw-minimal.bin": minimal}, "/fw.bin")
	waitBoot(r.w, "two", "esp8266", r.start, "15.5.0(tasmota)")
	fetch := []string{"LWT Offline", "LWT Online", "POWER ", `UPGRADE {"Upgrade":"Successful. Restarting"}`}
	want := append(r.commanded(), fetch...)
	want = append(want, bootSeq("esp8266")...) // (minimal)
	want = append(want, fetch...)
	want = append(want, bootSeq("esp8266")...)
	expectSeq(t, r.w, "two", r.start, want)
	var versions []string
	for _, m := range r.w.All()[r.start:] {
		if m.Topic == "tele/two/INFO1" {
			versions = append(versions, field(t, m.Payload, "Info1.Version").(string))
		}
	}
	if !slices.Equal(versions, []string{"15.5.0(minimal)", "15.5.0(tasmota)"}) {
		t.Fatalf("booted %v", versions)
	}
	// Every boot counts: the power-on, the loader's, the final image's.
	var counts []float64
	for _, m := range r.w.All() {
		if m.Topic == "tele/two/INFO3" {
			counts = append(counts, field(t, m.Payload, "Info3.BootCount").(float64))
		}
	}
	if len(counts) != 3 || !(counts[0] < counts[1] && counts[1] < counts[2]) {
		t.Fatalf("BootCount over the boots %v, want 3 rising", counts)
	}
	if got := r.srv.requests(); !slices.Equal(got, []string{"/fw.bin", "/fw-minimal.bin", "/fw.bin"}) {
		t.Fatalf("fetched %v", got)
	}
	if r.f.Commands("two") != 1 {
		t.Fatalf("commands %d", r.f.Commands("two"))
	}
}

func TestFaultBrokerDrop(t *testing.T) {
	t.Parallel()
	// The link breaks halfway through the download and the first reconnect
	// fails: UPGRADE is published while down and lost; the restart comes
	// first, and the new boot tells all.
	img := buildImage(t, "esp32", "tasmota32", "15.5.0", 0)
	r := runFault(t, Device{Topic: "drop", Faults: []Fault{FaultBrokerDrop}}, nil, map[string][]byte{"/fw.bin": img}, "/fw.bin")
	waitBoot(r.w, "drop", "esp32", r.start, "15.5.0(tasmota32)")
	expectSeq(t, r.w, "drop", r.start, append(append(r.commanded(), "LWT Offline"), bootSeq("esp32")...))
	if r.f.Commands("drop") != 1 {
		t.Fatalf("commands %d", r.f.Commands("drop"))
	}
}

func TestKeepaliveDuringLongDownload(t *testing.T) {
	t.Parallel()
	// An ESP32 keeps its MQTT socket during the download but does not
	// service it: past 1.5 × keepalive the broker drops it; afterwards the
	// device reconnects (no INFO) before UPGRADE.
	img := buildImage(t, "esp32", "tasmota32", "15.5.0", 0)
	r := runFault(t, Device{Topic: "slow", FlashRate: int64(len(img)) / 2}, func(c *Config) { c.KeepAlive = time.Second },
		map[string][]byte{"/fw.bin": img}, "/fw.bin")
	waitBoot(r.w, "slow", "esp32", r.start, "15.5.0(tasmota32)")
	expectSeq(t, r.w, "slow", r.start, append(append(r.commanded(), "LWT Offline", "LWT Online", "POWER ",
		`UPGRADE {"Upgrade":"Successful. Restarting"}`), bootSeq("esp32")...))
}

func TestFaultSilentAndNoInfo(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	w := watch(t, b, "#")
	startFleet(t, testConfig(b, Device{Topic: "quiet", Faults: []Fault{FaultSilent}}, Device{Topic: "blank", Faults: []Fault{FaultNoInfo}}))
	i := w.WaitFor(0, "INFO1 without Version", is("tele/blank/INFO1", `{"Info1":{"Module":"ESP32-DevKit","FallbackTopic"`))
	waitBoot(w, "quiet", "esp32", 0, "15.4.0(tasmota32)")
	w.Publish("cmnd/quiet/Status", "0", false)
	w.Publish("cmnd/quiet/Status", "2", false)
	w.Publish("cmnd/quiet/OtaUrl", "", false)
	j := w.WaitFor(i, "the OtaUrl reply", is("stat/quiet/RESULT", "OtaUrl"))
	for _, m := range w.All()[:j] {
		if strings.HasPrefix(m.Topic, "stat/quiet/STATUS") {
			t.Fatalf("a silent device answered %s", m)
		}
	}
	w.Publish("cmnd/blank/Status", "2", false)
	w.WaitFor(i, "STATUS2 of the no-info device", is("stat/blank/STATUS2", `"Version":"15.4.0(tasmota32)"`))
}

func TestWrongChip(t *testing.T) {
	t.Parallel()
	t.Run("esp32 image on esp8266", func(t *testing.T) {
		// The ESP8266 updater checks the first byte and the flash size only:
		// an ESP32 image is written, and the device never boots again.
		img := buildImage(t, "esp32", "tasmota32", "15.5.0", 0)
		r := runFault(t, Device{Topic: "brick", Chip: "esp8266"}, nil, map[string][]byte{"/fw.bin": img}, "/fw.bin")
		r.waitEvent(t, "brick", EventGone)
		expectSeq(t, r.w, "brick", r.start, append(r.commanded(), "LWT Offline", "LWT Online", "POWER ", `UPGRADE {"Upgrade":"Successful. Restarting"}`))
	})
	t.Run("esp32s3 image on esp32", func(t *testing.T) {
		img := buildImage(t, "esp32s3", "tasmota32", "15.5.0", 0)
		r := runFault(t, Device{Topic: "wrong"}, nil, map[string][]byte{"/fw.bin": img}, "/fw.bin")
		r.w.WaitFor(r.start, "UPGRADE", is("stat/wrong/UPGRADE", "Failed"))
		expectSeq(t, r.w, "wrong", r.start, append(r.commanded(), `UPGRADE {"Upgrade":"Failed Update error: Could Not Activate The Firmware"}`))
	})
}
