package devinfo

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
)

// Status 0 as Tasmota 14.3 writes it on an ESP8266 (sections trimmed to
// what is read, plus neighbours that must be skipped).
const tasmotaStatus0 = `{"Status":{"Module":1,"DeviceName":"Tasmota","FriendlyName":["Tasmota"]},` +
	`"StatusPRM":{"Baudrate":115200,"SerialConfig":"8N1","GroupTopic":"tasmotas","OtaUrl":"http://ota.tasmota.com/tasmota/release/tasmota.bin.gz","RestartReason":"Software/System restart","Uptime":"1T02:03:04","StartupUTC":"2024-10-08T09:00:00","Sleep":50,"CfgHolder":4617,"BootCount":17,"BCResetTime":"2024-01-01T00:00:00","SaveCount":40,"SaveAddress":"F9000"},` +
	`"StatusFWR":{"Version":"14.3.0(tasmota)","BuildDateTime":"2024-10-08T10:00:00","Boot":31,"Core":"2_7_7","SDK":"2.2.2-dev(38a443e)","CpuFrequency":80,"Hardware":"ESP8266EX","CR":"374/699"},` +
	`"StatusMEM":{"ProgramSize":629,"Free":372,"Heap":25,"ProgramFlashSize":1024,"FlashSize":4096,"FlashChipId":"1640EF","FlashFrequency":40,"FlashMode":"DOUT"},` +
	`"StatusNET":{"Hostname":"tasmota-ABCDEF-1234","IPAddress":"192.168.1.20","Mac":"AA:BB:CC:DD:EE:FF"},` +
	`"StatusSTS":{"Time":"2024-10-09T11:03:04","Uptime":"1T02:03:04","UptimeSec":93784}}`

func TestParseTasmotaStatus(t *testing.T) {
	i := func(n int64) *int64 { return &n }
	for _, tc := range []struct {
		name, body               string
		err                      string
		version, release, image  string
		inter, chip, ota, hwname string
		otaTold                  bool
		up, boots, free          *int64
	}{
		{name: "Status 0 ESP8266", body: tasmotaStatus0, version: "14.3.0(tasmota)", release: "14.3.0", image: "tasmota", chip: "esp8266",
			ota: "http://ota.tasmota.com/tasmota/release/tasmota.bin.gz", otaTold: true, up: i(93784), boots: i(17), free: i(372), hwname: "tasmota-ABCDEF-1234"},
		{name: "Status 2 only", body: `{"StatusFWR":{"Version":"15.0.1(release-tasmota32)","Hardware":"ESP32-D0WD-V3"}}`, version: "15.0.1(release-tasmota32)", release: "15.0.1", image: "release-tasmota32", chip: "esp32"},
		{name: "ESP32-S3", body: `{"StatusFWR":{"Version":"14.3.0(tasmota32s3)","Hardware":"ESP32-S3"}}`, release: "14.3.0", version: "14.3.0(tasmota32s3)", image: "tasmota32s3", chip: "esp32s3"},
		{name: "ESP32-C3 revision", body: `{"StatusFWR":{"Version":"14.3.0(tasmota32c3)","Hardware":"ESP32-C3 rev.4"}}`, release: "14.3.0", version: "14.3.0(tasmota32c3)", image: "tasmota32c3", chip: "esp32c3"},
		{name: "minimal", body: `{"StatusFWR":{"Version":"14.3.0(minimal)","Hardware":"ESP8266EX"}}`, version: "14.3.0(minimal)", release: "14.3.0", image: "minimal", inter: "minimal", chip: "esp8266"},
		{name: "safeboot", body: `{"StatusFWR":{"Version":"14.3.0(safeboot)","Hardware":"ESP32-C3"}}`, version: "14.3.0(safeboot)", release: "14.3.0", image: "safeboot", inter: "safeboot", chip: "esp32c3"},
		{name: "uptime text only", body: `{"StatusPRM":{"Uptime":"0T00:00:07","BootCount":3}}`, up: i(7), boots: i(3)},
		{name: "uptime unreadable", body: `{"StatusPRM":{"Uptime":"7 minutes"}}`},
		{name: "OtaUrl told empty", body: `{"StatusPRM":{"OtaUrl":""}}`, otaTold: true},
		{name: "OtaUrl not told", body: `{"StatusPRM":{"BootCount":1}}`, boots: i(1)},
		{name: "unknown hardware", body: `{"StatusFWR":{"Version":"v9(x)","Hardware":"BK7231N"}}`, version: "v9(x)", image: "x"},
		{name: "no status", body: `{"POWER":"ON"}`, err: "not Tasmota"},
		{name: "401 WARNING", body: `{"WARNING":"Need user=<username>&password=<password>"}`, err: "not Tasmota"},
		{name: "HTML", body: `<html>`, err: "not a JSON object"},
		{name: "wrong type", body: `{"StatusPRM":{"BootCount":"x"}}`, err: "BootCount"},
		{name: "negative", body: `{"StatusPRM":{"BootCount":-1}}`, err: "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseTasmotaStatus([]byte(tc.body))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			eq := func(what, got, want string) {
				if got != want {
					t.Errorf("%s %q, want %q", what, got, want)
				}
			}
			eq("version", s.Version, tc.version)
			eq("release", s.Release(), tc.release)
			eq("image", s.Image(), tc.image)
			eq("intermediate", s.Intermediate(), tc.inter)
			eq("chip", s.Chip(), tc.chip)
			eq("ota url", s.OtaURL, tc.ota)
			eq("hostname", s.Hostname, tc.hwname)
			if s.OtaURLTold != tc.otaTold {
				t.Errorf("OtaURLTold %v", s.OtaURLTold)
			}
			num := func(what string, got, want *int64) {
				if (got == nil) != (want == nil) || got != nil && *got != *want {
					t.Errorf("%s %v, want %v", what, got, want)
				}
			}
			num("uptime", s.UptimeS, tc.up)
			num("boot count", s.BootCount, tc.boots)
			num("free", s.FreeKiB, tc.free)
		})
	}
}

func FuzzParseTasmotaStatus(f *testing.F) {
	for _, s := range []string{tasmotaStatus0, `{"StatusFWR":{"Version":"14.3.0(minimal)"}}`, `{"StatusPRM":{"Uptime":"99999999999T99:99:99"}}`,
		`{"StatusFWR":5}`, `{"StatusFWR":{"Version":"\u001b[2J"}}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseTasmotaStatus(b)
		for _, v := range []string{s.Version, s.BuildDateTime, s.Hardware, s.OtaURL, s.Uptime, s.Hostname, s.Mac, s.Release(), s.Image(), s.Chip()} {
			checkClean(t, "tasmota status", v)
		}
		for _, n := range []*int64{s.UptimeS, s.BootCount, s.FreeKiB} {
			if n != nil && *n < 0 {
				t.Fatalf("negative number in %+v", s)
			}
		}
		if err == nil && s.Intermediate() != "" && s.Image() == "" {
			t.Fatalf("intermediate without an image name: %+v", s)
		}
		if r := s.Release(); r != "" && !strings.HasPrefix(s.Version, r) {
			t.Fatalf("release %q not the start of %q", r, s.Version)
		}
	})
}

// TestQueryTasmota: Status 0 is asked with the Referer and the
// credentials; a missing Referer gets silence, as from Tasmota.
func TestQueryTasmota(t *testing.T) {
	var gotAuth, gotPath string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Referer(), "http://127.0.0.1") {
			// Tasmota's Referer check answers nothing.
			hj, _ := w.(http.Hijacker)
			c, _, _ := hj.Hijack()
			c.Close()
			return
		}
		gotAuth, gotPath = r.Header.Get("Authorization"), r.URL.RequestURI()
		if gotAuth == "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"WARNING":"Need user=<username>&password=<password>"}`))
			return
		}
		_, _ = w.Write([]byte(tasmotaStatus0))
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	var p int
	for _, c := range port {
		p = p*10 + int(c-'0')
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := Query(ctx, Target{Host: host, Port: p, Tasmota: true, Authorization: auth.NewSecret("Basic YWRtaW46cw==")}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if gotPath != TasmotaStatusPath || gotAuth != "Basic YWRtaW46cw==" {
		t.Fatalf("asked %q with %q", gotPath, gotAuth)
	}
	if f.Version != (Fact{"14.3.0", FromTasmota}) || f.Chip.Value != "esp8266" || f.Uptime.Value != "93784" || !f.Reachable || f.Tasmota == nil {
		t.Fatalf("facts %+v", f)
	}
	f, _ = Query(ctx, Target{Host: host, Port: p, Tasmota: true}, Options{})
	if !f.Reachable || f.Version.Known() || !strings.Contains(strings.Join(f.Notes, " "), "401") {
		t.Fatalf("401: %+v", f)
	}
}
