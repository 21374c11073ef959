package tasmotamqtt

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testbroker"
)

// bootSeq is what a subscriber sees when a device comes up after a boot
// (the Sonoff Basic module of an ESP8266 adds its relay's state).
func bootSeq(chip string) []string {
	s := []string{"LWT Online", "POWER ", "INFO1 {\"Info1\":", "INFO2 {\"Info2\":", "INFO3 {\"Info3\":"}
	if chip == "esp8266" {
		s = append(s, `RESULT {"POWER":"OFF"}`, "POWER OFF")
	}
	return s
}

// waitBoot waits for the INFO3 of a boot that runs version (its INFO1
// first) and returns the index of the boot's last message.
func waitBoot(w *watcher, topic, chip string, from int, version string) int {
	i := w.WaitFor(from, "INFO1 with "+version, is("tele/"+topic+"/INFO1", `"Version":"`+version+`"`))
	if chip == "esp8266" {
		return w.WaitFor(i, "the relay's state", func(m msg) bool { return m.Topic == "stat/"+topic+"/POWER" && m.Payload == "OFF" })
	}
	return w.WaitFor(i, "INFO3", is("tele/"+topic+"/INFO3", "BootCount"))
}

func TestUpgrade(t *testing.T) {
	t.Parallel()
	for _, chip := range []string{"esp32", "esp8266"} {
		t.Run(chip, func(t *testing.T) {
			b := testbroker.Start(t)
			name := "tasmota32"
			if chip == "esp8266" {
				name = "tasmota"
			}
			img := buildImage(t, chip, name, "15.5.0", 80<<10)
			srv := serve(t, map[string][]byte{"/fw.bin": img})
			w := watch(t, b, "#")
			f, ev := startFleet(t, testConfig(b, Device{Topic: "plug1", Chip: chip, Version: "15.4.0", BootCount: 6}))
			start := waitBoot(w, "plug1", chip, 0, "15.4.0("+name+")")
			if got := f.Running("plug1"); got != "15.4.0("+name+")" {
				t.Fatalf("running %q", got)
			}
			w.Publish("cmnd/plug1/Backlog", "OtaUrl "+srv.url("/fw.bin")+"; Upgrade 1", false)
			end := waitBoot(w, "plug1", chip, start+1, "15.5.0("+name+")")
			want := []string{
				"Backlog OtaUrl",
				`RESULT {"OtaUrl":"` + srv.url("/fw.bin") + `"}`,
				`RESULT {"Upgrade":"Version 15.4.0 from ` + srv.url("/fw.bin") + `"}`,
			}
			if chip == "esp8266" {
				// The updater closes the MQTT socket for the download: the
				// will, then the reconnect (no INFO) before UPGRADE.
				want = append(want, "LWT Offline", "LWT Online", "POWER ")
			}
			want = append(want, `UPGRADE {"Upgrade":"Successful. Restarting"}`)
			want = append(want, bootSeq(chip)...)
			expectSeq(t, w, "plug1", start+1, want)
			var info3 string
			for _, m := range w.All()[:end+1] {
				if m.Topic == "tele/plug1/INFO3" {
					info3 = m.Payload
				}
			}
			reason := "Software reset CPU"
			if chip == "esp8266" {
				reason = "Software/System restart"
			}
			if v := field(t, info3, "Info3.RestartReason"); v != reason {
				t.Fatalf("INFO3 RestartReason %v", v)
			}
			if v := field(t, info3, "Info3.BootCount"); v != float64(7) && v != float64(8) {
				t.Fatalf("INFO3 BootCount %v after 6 before the sim", v) // 7: the first boot ran under BOOT_LOOP_TIME
			}
			if f.Commands("plug1") != 1 || f.Running("plug1") != "15.5.0("+name+")" {
				t.Fatalf("commands %d, running %q", f.Commands("plug1"), f.Running("plug1"))
			}
			if got := srv.requests(); len(got) != 1 {
				t.Fatalf("fetched %v", got)
			}
			if !ev.has("plug1", EventFetched) || !ev.has("plug1", EventRestarting) {
				t.Fatalf("events %v", ev.kinds("plug1"))
			}
			if chip == "esp32" {
				// A clean restart leaves no "Offline" anywhere.
				for _, m := range w.All() {
					if m.Payload == "Offline" {
						t.Fatalf("the will was published: %s", m)
					}
				}
			}
		})
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	w := watch(t, b, "stat/#")
	startFleet(t, testConfig(b, Device{Topic: "s1", Chip: "esp8266", Version: "14.2.0", FreeKiB: 300}))
	up := w.WaitFor(0, "the relay's state", is("stat/s1/POWER", "OFF")) + 1
	w.Publish("cmnd/s1/Status", "0", false)
	last := w.WaitFor(up, "STATUS11", is("stat/s1/STATUS11", `"StatusSTS"`))
	expectSeq(t, w, "s1", up, []string{"STATUS {\"Status\":{\"Module\"", "STATUS1 {\"StatusPRM\":", "STATUS2 {\"StatusFWR\":{\"Version\":\"14.2.0(tasmota)\"",
		"STATUS3 {\"StatusLOG\"", "STATUS4 {\"StatusMEM\"", "STATUS5 {\"StatusNET\"", "STATUS6 {\"StatusMQT\"", "STATUS7 {\"StatusTIM\"",
		"STATUS10 {\"StatusSNS\"", "STATUS11 {\"StatusSTS\""})
	all := w.All()
	if v := field(t, all[up+4].Payload, "StatusMEM.Free"); v != float64(300) {
		t.Fatalf("Free %v", v)
	}
	if v := field(t, all[up+1].Payload, "StatusPRM.OtaUrl"); v != "http://ota.tasmota.com/tasmota/release/tasmota.bin.gz" {
		t.Fatalf("OtaUrl %v", v)
	}
	w.Publish("cmnd/s1/Status0", "", false)
	i := w.WaitFor(last+1, "STATUS0", is("stat/s1/STATUS0", `"StatusFWR"`))
	for _, k := range []string{"Status.Topic", "StatusPRM.OtaUrl", "StatusFWR.Version", "StatusMEM.Free", "StatusSTS.UptimeSec"} {
		if field(t, w.All()[i].Payload, k) == nil {
			t.Fatalf("STATUS0 lacks %s: %s", k, w.All()[i].Payload)
		}
	}
	w.Publish("cmnd/s1/Status", "2", false)
	w.WaitFor(i+1, "STATUS2", is("stat/s1/STATUS2", `{"StatusFWR":{"Version":"14.2.0(tasmota)"`))
}

func TestFullTopicAndOption4(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	w := watch(t, b, "#")
	startFleet(t, testConfig(b, Device{Topic: "lamp", FullTopic: "tasmota/%topic%/%prefix%/", SetOption4: true}))
	w.WaitFor(0, "INFO1", is("tasmota/lamp/tele/INFO1", "Version"))
	w.Publish("tasmota/lamp/cmnd/OtaUrl", "http://127.0.0.1:1/x.bin", false)
	w.WaitFor(0, "the OtaUrl reply on its own topic", is("tasmota/lamp/stat/OTAURL", `{"OtaUrl":"http://127.0.0.1:1/x.bin"}`))
	// The group topic reaches it too.
	w.Publish("tasmota/tasmotas/cmnd/Upgrade", "0.1", false)
	w.WaitFor(0, "the Upgrade refusal", is("tasmota/lamp/stat/UPGRADE", `{"Upgrade":"1 or >15.4.0 to upgrade"}`))
}

func TestRetainedUpgradeRunsAgain(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	img := buildImage(t, "esp32", "tasmota32", "15.5.0", 0)
	srv := serve(t, map[string][]byte{"/fw.bin": img})
	w := watch(t, b, "#")
	f, _ := startFleet(t, testConfig(b, Device{Topic: "r1"}))
	w.WaitFor(0, "INFO3", is("tele/r1/INFO3", "BootCount"))
	w.Publish("cmnd/r1/Backlog", "OtaUrl "+srv.url("/fw.bin")+"; Upgrade 1", true)
	// The retained command runs again after every restart's resubscribe:
	// the device reflashes in a loop (and, each boot shorter than
	// BOOT_LOOP_TIME, its boot count stands still).
	i := 0
	for range 3 {
		i = w.WaitFor(i, "another boot", is("tele/r1/INFO1", "15.5.0(tasmota32)")) + 1
	}
	w.Publish("cmnd/r1/Backlog", "", true) // clear it
	if n := f.Commands("r1"); n < 3 {
		t.Fatalf("a retained Upgrade was taken %d times", n)
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	l := testbroker.Start(t) // a port that then closes
	addr := l.Addr()
	_ = addr
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Broker: "mqtts://127.0.0.1:8883", Devices: []Device{{}}}, "plain MQTT"},
		{Config{Broker: "mqtt://u:p@127.0.0.1", Devices: []Device{{}}}, "apart from the broker URL"},
		{Config{Broker: "mqtt://127.0.0.1:1", Devices: []Device{{}}}, "127.0.0.1:1"},
		{Config{Broker: "mqtt://192.0.2.1:1883", Devices: []Device{{}}}, "loopback only"},
		{Config{Broker: l.URL(), Devices: []Device{{Chip: "esp32", Faults: []Fault{FaultTwoStep}}}}, "ESP8266"},
		{Config{Broker: l.URL(), Devices: []Device{{Chip: "esp8266", Faults: []Fault{FaultCrashOnBoot}}}}, "no rollback"},
		{Config{Broker: l.URL(), Devices: []Device{{Topic: "a"}, {Topic: "a"}}}, "taken"},
	} {
		_, err := Start(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg.Broker, err, tc.want)
		}
	}
}

func TestFleet200(t *testing.T) {
	t.Parallel()
	b := testbroker.Start(t)
	img := buildImage(t, "esp32", "tasmota32", "15.5.0", 96<<10)
	srv := serve(t, map[string][]byte{"/fw.bin": img})
	devs := make([]Device, 200)
	cfg := testConfig(b, devs...)
	cfg.Tick = 50 * time.Millisecond
	w := watch(t, b, "tele/+/INFO1")
	f, _ := startFleet(t, cfg)
	topics := f.Topics()
	if len(topics) != 200 {
		t.Fatalf("%d topics", len(topics))
	}
	w.Publish("cmnd/tasmotas/Backlog", "OtaUrl "+srv.url("/fw.bin")+"; Upgrade 1", false)
	deadline := time.Now().Add(2 * time.Minute)
	for _, tp := range topics {
		for f.Running(tp) != "15.5.0(tasmota32)" {
			if time.Now().After(deadline) {
				t.Fatalf("%s runs %s; fleet: %v", tp, f.Running(tp), f.Counts())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if n := f.Commands(tp); n != 1 {
			t.Fatalf("%s took %d commands", tp, n)
		}
	}
	if n := len(srv.requests()); n != 200 {
		t.Fatalf("%d fetches", n)
	}
	f.store.mu.Lock()
	held, infos := len(f.store.sectors), len(f.store.infos)
	f.store.mu.Unlock()
	if held != 0 || infos != 1 {
		t.Fatalf("after the fleet's downloads the store holds %d sectors and %d images", held, infos)
	}
	t.Logf("goroutines: %d", runtime.NumGoroutine())
}

func TestBrokerRestart(t *testing.T) {
	t.Parallel()
	// A broker restart is a lost link, not a boot: the device reconnects at
	// once and says Online, with no INFO.
	b := testbroker.Start(t)
	w := watch(t, b, "tele/#")
	_, ev := startFleet(t, testConfig(b, Device{Topic: "br"}))
	n := w.WaitFor(0, "INFO3", is("tele/br/INFO3", "BootCount")) + 1
	b.Restart()
	// Live, or retained when the watcher resubscribed after the device.
	i := w.WaitFor(n, "LWT Online after the restart", is("tele/br/LWT", "Online"))
	time.Sleep(10 * 20 * time.Millisecond)
	for _, m := range w.All()[i:] {
		if strings.Contains(m.Topic, "/INFO") {
			t.Fatalf("INFO after a reconnect: %s", m)
		}
	}
	if !ev.has("br", EventLinkDown) {
		t.Fatalf("events %v", ev.kinds("br"))
	}
}
