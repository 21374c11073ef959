package tasmota

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ots-ota/ots-ota/rollout"
)

func i64(n int64) *int64   { return &n }
func str(s string) *string { return &s }

func TestParseReports(t *testing.T) {
	for _, tc := range []struct {
		sub, payload string
		want         told
	}{
		{"LWT", "Online", told{kind: rollout.ReportOnline}},
		{"LWT", "Offline", told{kind: rollout.ReportOffline}},
		{"LWT", " online\n", told{kind: rollout.ReportOnline}},
		{"LWT", "", told{}},
		{"LWT", "gone", told{}},
		{"RESULT", `{"Upgrade":"Version 14.2.0 from http://10.0.0.2:8070/t/fw.bin"}`, told{kind: rollout.ReportStarted, words: "Version 14.2.0 from http://10.0.0.2:8070/…/fw.bin"}},
		{"UPGRADE", `{"Upgrade":"Version 14.2.0 from http://h/fw.bin"}`, told{kind: rollout.ReportStarted, words: "Version 14.2.0 from http://h/…/fw.bin"}},
		// The URL's path holds the rollout's token: never kept.
		{"RESULT", `{"Upgrade":"Version 14.2.0(tasmota) from http://u:pw@10.0.0.2:8070/SECRETtoken/fw.bin?x=1"}`, told{kind: rollout.ReportStarted, words: "Version 14.2.0(tasmota) from http://10.0.0.2:8070/…/fw.bin"}},
		{"RESULT", `{"Upgrade":"Version 14.2.0 from SECRET token"}`, told{kind: rollout.ReportStarted, words: "Version 14.2.0 from …"}},
		{"RESULT", `{"Upgrade":"Version 14.2.0 from http://h"}`, told{kind: rollout.ReportStarted, words: "Version 14.2.0 from http://h/…"}},
		{"UPGRADE", `{"Upgrade":"Successful. Restarting"}`, told{kind: rollout.ReportSuccess, words: "Successful. Restarting"}},
		{"UPGRADE", `{"Upgrade":"Failed HTTP error: connection failed"}`, told{kind: rollout.ReportFailed, words: "Failed HTTP error: connection failed"}},
		{"UPGRADE", `{"upgrade":"Failed Wrong MD5\n\u001b[31m"}`, told{kind: rollout.ReportFailed, words: "Failed Wrong MD5 [31m"}},
		{"RESULT", `{"Upgrade":"1 or >14.2.0 to upgrade"}`, told{kind: rollout.ReportFailed, words: "it did not take the command: 1 or >14.2.0 to upgrade"}},
		{"RESULT", `{"Upgrade":"Safeboot"}`, told{}},
		{"RESULT", `{"POWER":"ON"}`, told{}},
		{"RESULT", `{"Command":"Unknown"}`, told{}},
		{"RESULT", `{"OtaUrl":"http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"}`, told{otaURL: str("http://ota.tasmota.com/tasmota/release/tasmota.bin.gz")}},
		{"OTAURL", `{"OtaUrl":""}`, told{otaURL: str("")}},
		{"RESULT", `not json`, told{}},
		{"INFO1", `{"Info1":{"Module":"Sonoff Basic","Version":"14.3.0(tasmota)","FallbackTopic":"cmnd/DVES_1A2B3C_fb/","GroupTopic":"cmnd/tasmotas/"}}`,
			told{info: 1, facts: rollout.Facts{Version: "14.3.0(tasmota)", Release: "14.3.0"}}},
		{"INFO1", `{"Module":"Generic","Version":"9.3.1(tasmota)","FallbackTopic":"cmnd/DVES_1A2B3C_fb/","GroupTopic":"cmnd/tasmotas/"}`,
			told{info: 1, facts: rollout.Facts{Version: "9.3.1(tasmota)", Release: "9.3.1"}}},
		{"INFO1", `{"Info1":{"Module":"Generic","Version":"14.3.0(minimal)"}}`,
			told{info: 1, facts: rollout.Facts{Version: "14.3.0(minimal)", Release: "14.3.0", Intermediate: "minimal"}}},
		{"INFO1", `{"Info1":{"Version":"15.0.1(release-tasmota32)single-core"}}`,
			told{info: 1, facts: rollout.Facts{Version: "15.0.1(release-tasmota32)single-core", Release: "15.0.1"}}},
		{"INFO1", `{"Info1":{"Version":"15.0.1(release-safeboot)"}}`,
			told{info: 1, facts: rollout.Facts{Version: "15.0.1(release-safeboot)", Release: "15.0.1", Intermediate: "safeboot"}}},
		{"INFO1", `{"Info1":{"Version":"14.3.0(safeboot)"}}`,
			told{info: 1, facts: rollout.Facts{Version: "14.3.0(safeboot)", Release: "14.3.0", Intermediate: "safeboot"}}},
		{"INFO1", `{"Info1":{"Module":"Generic"}}`, told{info: 1}},
		{"INFO1", `{"Info1":{"Version":14}}`, told{info: 1}},
		{"INFO1", `[1,2]`, told{}},
		{"INFO2", `{"Info2":{"WebServerMode":"Admin","Hostname":"dev-1234","IPAddress":"192.168.1.50"}}`, told{info: 2, facts: rollout.Facts{IP: "192.168.1.50"}}},
		{"INFO2", `{"WebServerMode":"Admin","Hostname":"dev-1234","IPAddress":"0.0.0.0"}`, told{info: 2}},
		{"INFO3", `{"Info3":{"RestartReason":"Software/System restart","BootCount":13}}`,
			told{info: 3, facts: rollout.Facts{RestartReason: "Software/System restart", BootCount: i64(13)}}},
		{"INFO3", `{"RestartReason":"Power On"}`, told{info: 3, facts: rollout.Facts{RestartReason: "Power On"}}},
		{"INFO3", `{"Info3":{"RestartReason":{"Exception":28,"Reason":"LoadProhibited","EPC":["4010f3c1"]},"BootCount":-1}}`,
			told{info: 3, facts: rollout.Facts{RestartReason: `crash: {"Exception":28,"Reason":"LoadProhibited","EPC":["4010f3c1"]}`}}},
		{"STATUS2", `{"StatusFWR":{"Version":"14.2.0(tasmota)"}}`, told{status: map[string]json.RawMessage{"StatusFWR": json.RawMessage(`{"Version":"14.2.0(tasmota)"}`)}, statusNo: 2}},
		{"STATUS", `{"Status":{"Topic":"dev"}}`, told{status: map[string]json.RawMessage{"Status": json.RawMessage(`{"Topic":"dev"}`)}, statusNo: -1}},
		{"STATUS123", `{"Status":{}}`, told{}},
		{"STATUSX", `{"Status":{}}`, told{}},
		{"SENSOR", `{"Time":"x"}`, told{}},
	} {
		got := parseMessage(tc.sub, []byte(tc.payload))
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %s:\n got %+v\nwant %+v", tc.sub, tc.payload, got, tc.want)
		}
	}
}

// Status 0 as Tasmota sends it over MQTT: one message per section.
var status0Split = map[string]string{
	"STATUS":   `{"Status":{"Module":1,"DeviceName":"Tasmota","FriendlyName":["Tasmota"],"Topic":"dev1","ButtonTopic":"0","Power":"0","PowerOnState":3}}`,
	"STATUS1":  `{"StatusPRM":{"Baudrate":115200,"SerialConfig":"8N1","GroupTopic":"tasmotas","OtaUrl":"http://ota.tasmota.com/tasmota/release/tasmota.bin.gz","RestartReason":"Software/System restart","Uptime":"0T01:02:03","StartupUTC":"2024-10-08T09:00:00","Sleep":50,"CfgHolder":4617,"BootCount":12,"BCResetTime":"2024-01-01T00:00:00","SaveCount":30,"SaveAddress":"F9000"}}`,
	"STATUS2":  `{"StatusFWR":{"Version":"14.2.0(tasmota)","BuildDateTime":"2024-08-14T12:00:00","Boot":31,"Core":"2_7_7","SDK":"2.2.2-dev(38a443e)","CpuFrequency":80,"Hardware":"ESP8266EX","CR":"378/699"}}`,
	"STATUS3":  `{"StatusLOG":{"SerialLog":2,"WebLog":2,"MqttLog":0,"SysLog":0,"LogHost":"","LogPort":514,"SSId":["wifi",""],"TelePeriod":300,"Resolution":"558180C0","SetOption":["00008009"]}}`,
	"STATUS4":  `{"StatusMEM":{"ProgramSize":620,"Free":380,"Heap":25,"ProgramFlashSize":1024,"FlashSize":1024,"FlashChipId":"14405E","FlashFrequency":40,"FlashMode":"DOUT","Features":["00000809"],"Drivers":"1,2,3","Sensors":"1,2,3"}}`,
	"STATUS5":  `{"StatusNET":{"Hostname":"dev1-1234","IPAddress":"192.168.1.50","Gateway":"192.168.1.1","Subnetmask":"255.255.255.0","DNSServer1":"192.168.1.1","DNSServer2":"0.0.0.0","Mac":"aa:bb:cc:00:11:22","Webserver":2,"HTTP_API":1,"WifiConfig":4,"WifiPower":17.0}}`,
	"STATUS6":  `{"StatusMQT":{"MqttHost":"broker","MqttPort":1883,"MqttClientMask":"DVES_%06X","MqttClient":"DVES_001122","MqttUser":"DVES_USER","MqttCount":1,"MAX_PACKET_SIZE":1200,"KEEPALIVE":30,"SOCKET_TIMEOUT":4}}`,
	"STATUS7":  `{"StatusTIM":{"UTC":"2024-10-08T10:02:03Z","Local":"2024-10-08T11:02:03","StartDST":"2024-03-31T02:00:00","EndDST":"2024-10-27T03:00:00","Timezone":"+01:00","Sunrise":"07:30","Sunset":"18:45"}}`,
	"STATUS10": `{"StatusSNS":{"Time":"2024-10-08T11:02:03"}}`,
	"STATUS11": `{"StatusSTS":{"Time":"2024-10-08T11:02:03","Uptime":"0T01:02:03","UptimeSec":3723,"Heap":25,"SleepMode":"Dynamic","Sleep":50,"LoadAvg":19,"MqttCount":1,"POWER":"OFF","Wifi":{"AP":1,"SSId":"wifi","RSSI":70}}}`,
}

func TestStatusFacts(t *testing.T) {
	sections := map[string]json.RawMessage{}
	for sub, p := range status0Split {
		for k, v := range parseMessage(sub, []byte(p)).status {
			sections[k] = v
		}
	}
	got, ok := statusFacts(sections)
	want := rollout.Facts{
		Version: "14.2.0(tasmota)", Release: "14.2.0",
		OtaURL:  str("http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"),
		UptimeS: i64(3723), BootCount: i64(12), Chip: "esp8266", FreeKiB: i64(380),
		RestartReason: "Software/System restart", MAC: "AA:BB:CC:00:11:22", IP: "192.168.1.50",
	}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}

	// Told as "": told empty, never nil. Not told: nil.
	f, _ := statusFacts(map[string]json.RawMessage{"StatusPRM": json.RawMessage(`{"OtaUrl":""}`)})
	if f.OtaURL == nil || *f.OtaURL != "" {
		t.Errorf("empty OtaUrl: %v", f.OtaURL)
	}
	f, _ = statusFacts(map[string]json.RawMessage{"StatusFWR": json.RawMessage(`{"Version":"14.2.0(tasmota)","Hardware":"ESP32-S3"}`)})
	if f.OtaURL != nil || f.BootCount != nil || f.UptimeS != nil || f.FreeKiB != nil || f.Chip != "esp32s3" {
		t.Errorf("Status 2 alone: %+v", f)
	}
	// A long OtaUrl comes back whole (devinfo cuts what it shows).
	long := "http://example.com/" + strings.Repeat("a", 200) + ".bin"
	b, _ := json.Marshal(map[string]any{"OtaUrl": long})
	f, _ = statusFacts(map[string]json.RawMessage{"StatusPRM": b})
	if f.OtaURL == nil || *f.OtaURL != long {
		t.Errorf("long OtaUrl: %v", f.OtaURL)
	}
	// A wrongly typed field leaves only itself unknown.
	f, ok = statusFacts(map[string]json.RawMessage{"StatusFWR": json.RawMessage(`{"Version":"14.2.0(tasmota)"}`), "StatusPRM": json.RawMessage(`{"BootCount":"many"}`)})
	if !ok || f.Version != "14.2.0(tasmota)" || f.BootCount != nil {
		t.Errorf("wrong type: %+v %v", f, ok)
	}
	if _, ok := statusFacts(map[string]json.RawMessage{"Status": json.RawMessage(`{}`)}); ok {
		t.Error("no FWR nor PRM taken")
	}
}

func TestCompanions(t *testing.T) {
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"fw.bin", []string{"fw-minimal.bin", "fw.bin.gz", "fw-minimal.bin.gz"}},
		{"tasmota-DE.bin", []string{"tasmota-minimal.bin", "tasmota-DE.bin.gz", "tasmota-minimal.bin.gz"}},
		{"fw.bin.gz", []string{"fw-minimal.bin.gz"}},
		{"fw.ino.bin", []string{"fw-minimal.ino.bin", "fw.ino.bin.gz", "fw-minimal.ino.bin.gz"}},
		{"firmware", []string{"firmware-minimal", "firmware.gz", "firmware-minimal.gz"}},
		// Tasmota cuts at the last "-" even past the first ".".
		{"fw-1.2.bin", []string{"fw-minimal.2.bin", "fw-1.2.bin.gz", "fw-minimal.2.bin.gz"}},
		{"", nil},
	} {
		f := &Family{}
		if got := f.Companions(tc.name); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestScreen(t *testing.T) {
	f := &Family{}
	img := rollout.Image{Name: "fw.bin", Size: 600 * 1024, Chip: "esp8266"}
	for _, tc := range []struct {
		name  string
		facts rollout.Facts
		img   rollout.Image
		have  []string
		want  string // "" or a part of the reason
	}{
		{"fits", rollout.Facts{Chip: "esp8266", FreeKiB: i64(700)}, img, nil, ""},
		{"unknown chip", rollout.Facts{}, img, nil, ""},
		{"unknown image chip", rollout.Facts{Chip: "esp32"}, rollout.Image{Name: "fw.bin", Size: 1}, nil, ""},
		{"other chip", rollout.Facts{Chip: "esp32s3"}, img, nil, "the device is an esp32s3 and the image is for an esp8266"},
		{"no room, no minimal", rollout.Facts{Chip: "esp8266", FreeKiB: i64(380)}, img, []string{"fw.bin.gz"}, "380 KiB free for a 600 KiB image, and no fw-minimal.bin"},
		{"no room, minimal beside", rollout.Facts{Chip: "esp8266", FreeKiB: i64(380)}, img, []string{"fw-minimal.bin"}, ""},
		{"free not told", rollout.Facts{Chip: "esp8266"}, img, nil, ""},
		{"esp32 small free is no matter", rollout.Facts{Chip: "esp32", FreeKiB: i64(10)}, rollout.Image{Name: "fw.bin", Size: 1 << 20, Chip: "esp32"}, nil, ""},
	} {
		got := f.Screen(tc.facts, tc.img, tc.have)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCheckOtaURL(t *testing.T) {
	for _, u := range []string{"http://10.0.0.2:8070/abcdef/fw.bin", "https://cdn.example.com/x/fw.bin.gz"} {
		if err := checkOtaURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"", "ftp://h/fw.bin", "http:///fw.bin", "http://h/a b.bin", "http://h/fw.bin;Restart 1", "http://h/%d.bin", "http://h/" + strings.Repeat("a", 150)} {
		if err := checkOtaURL(u); err == nil {
			t.Errorf("%q taken", u)
		}
	}
}

// FuzzParseReport feeds every parser of device payloads (by subtopic)
// with anything: it never panics, and what it reports is one clean line.
func FuzzParseReport(f *testing.F) {
	for sub, p := range status0Split {
		f.Add(sub, []byte(p))
	}
	for _, s := range []struct{ sub, p string }{
		{"LWT", "Online"}, {"RESULT", `{"Upgrade":"Version 1 from u"}`}, {"UPGRADE", `{"Upgrade":"Failed x"}`},
		{"INFO1", `{"Info1":{"Version":"14.3.0(minimal)"}}`}, {"INFO2", `{"IPAddress":"::1"}`},
		{"INFO3", `{"Info3":{"RestartReason":{"a":[1,{"b":null}]},"BootCount":1e3}}`}, {"OTAURL", `{"OtaUrl":"\u0000"}`},
	} {
		f.Add(s.sub, []byte(s.p))
	}
	f.Fuzz(func(t *testing.T, sub string, payload []byte) {
		got := parseMessage(sub, payload)
		for _, s := range []string{got.words, got.facts.Version, got.facts.RestartReason, got.facts.IP} {
			if strings.ContainsAny(s, "\n\r\x1b") || !utf8.ValidString(s) {
				t.Fatalf("not one clean line: %q", s)
			}
		}
		if got.facts.Release != "" && !strings.HasPrefix(got.facts.Version, got.facts.Release) {
			t.Fatalf("release %q of %q", got.facts.Release, got.facts.Version)
		}
		if got.facts.BootCount != nil && *got.facts.BootCount < 0 {
			t.Fatal("negative boot count")
		}
		if got.status != nil {
			f, _ := statusFacts(got.status)
			if f.UptimeS != nil && *f.UptimeS < 0 || f.FreeKiB != nil && *f.FreeKiB < 0 {
				t.Fatalf("negative: %+v", f)
			}
		}
	})
}
