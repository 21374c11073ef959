package devinfo

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// wledInfoBody is GET /json/info as WLED 0.15.x writes it (fields in its
// order; the ones ots-ota does not read trimmed).
const wledInfoBody = `{"ver":"0.15.5","vid":2508290,"cn":"Kösen","release":"ESP32","repo":"wled/WLED",
"leds":{"count":30,"pwr":0},"str":false,"name":"Desk","udpport":21324,"live":false,
"arch":"esp32","core":"v3.3.6-16-gcc5440f6a2","clock":240,"flash":4,"lwip":0,
"freeheap":198000,"uptime":1234,"time":"2025-9-1, 10:00:00","opt":79,
"brand":"WLED","product":"FOSS","mac":"a842e3aabbcc","ip":"10.0.0.7"}`

func TestParseWLEDInfo(t *testing.T) {
	full := WLEDInfo{Ver: "0.15.5", VID: "2508290", Release: "ESP32", Arch: "esp32", UptimeS: i64(1234),
		MAC: "a842e3aabbcc", Name: "Desk", Brand: "WLED"}
	tests := []struct {
		name    string
		in      string
		want    WLEDInfo
		wantErr string
	}{
		{"0.15.5", wledInfoBody, full, ""},
		{"16.x S3", `{"ver":"16.0.1","vid":2601150,"release":"ESP32-S3_8MB_opi","arch":"ESP32-S3","uptime":0,"brand":"WLED"}`,
			WLEDInfo{Ver: "16.0.1", VID: "2601150", Release: "ESP32-S3_8MB_opi", Arch: "ESP32-S3", UptimeS: i64(0), Brand: "WLED"}, ""},
		// WLED before 0.15.0 tells no release: unknown, not "".
		{"0.14 has no release", `{"ver":"0.14.4","vid":2405180,"arch":"esp8266","uptime":5,"brand":"WLED"}`,
			WLEDInfo{Ver: "0.14.4", VID: "2405180", Arch: "esp8266", UptimeS: i64(5), Brand: "WLED"}, ""},
		{"brand only", `{"brand":"WLED"}`, WLEDInfo{Brand: "WLED"}, ""},
		{"no uptime is unknown", `{"ver":"0.15.5"}`, WLEDInfo{Ver: "0.15.5"}, ""},
		{"escape cleaned", `{"ver":"0.15\u001b[2J"}`, WLEDInfo{Ver: "0.15\uFFFD[2J"}, ""},
		{"another server's JSON", `{"temperature":21.5}`, WLEDInfo{}, "not WLED's /json/info"},
		{"negative uptime", `{"ver":"1","uptime":-1}`, WLEDInfo{}, "uptime: negative"},
		{"uptime a word", `{"ver":"1","uptime":"soon"}`, WLEDInfo{}, "uptime: not a number"},
		{"release a number", `{"ver":"1","release":5}`, WLEDInfo{}, "release: not a string"},
		{"array", `[1]`, WLEDInfo{}, "not a JSON object"},
		{"page", `<html>Not found</html>`, WLEDInfo{}, "not a JSON object"},
		{"truncated", `{"ver":"0.15`, WLEDInfo{}, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWLEDInfo([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %s\nwant %s", dump(got), dump(tt.want))
			}
		})
	}
}

func TestWLEDChip(t *testing.T) {
	for arch, want := range map[string]string{"esp32": "esp32", "esp8266": "esp8266", "ESP32-S3": "esp32s3", "ESP32-C3": "esp32c3", "": ""} {
		if got := (WLEDInfo{Arch: arch}).Chip(); got != want {
			t.Errorf("Chip(%q) = %q, want %q", arch, got, want)
		}
	}
}

// TestQueryWLED: with Target.WLED only /json/info on the web port is
// asked, and it tells version, chip and uptime; a device that answers
// something else is reachable with a note; a closed port is unreachable.
func TestQueryWLED(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	body, status := wledInfoBody, 200
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Method+" "+r.URL.String())
		mu.Unlock()
		if r.URL.Path == "/json/info" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write([]byte(body))
			return
		}
		http.Error(w, "Not found", http.StatusNotFound)
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	tgt := Target{Host: ap.Addr().String(), Port: 3232, WebPort: int(ap.Port()), WLED: true}

	f, err := Query(context.Background(), tgt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"GET /json/info"}; !reflect.DeepEqual(asked, want) {
		t.Errorf("asked %q, want %q", asked, want)
	}
	if f.Version != (Fact{"0.15.5", FromJSONInfo}) || f.Chip != (Fact{"esp32", FromJSONInfo}) || f.Uptime != (Fact{"1234", FromJSONInfo}) ||
		!f.Reachable || f.VersionNote != "" || f.WLED == nil || f.WLED.Release != "ESP32" || f.Address != srv.Listener.Addr().String() {
		t.Errorf("facts %s", dump(f))
	}

	body = `{"brand":"WLED"}`
	f, _ = Query(context.Background(), tgt, Options{})
	if f.Version.Known() || f.Uptime.Known() || f.Chip.Known() || !f.Reachable || !strings.Contains(f.VersionNote, "told no ver") {
		t.Errorf("no ver: %s", dump(f))
	}

	body, status = "Not found", 404
	f, _ = Query(context.Background(), tgt, Options{})
	if f.WLED != nil || !f.Reachable || !strings.Contains(strings.Join(f.Notes, "|"), "GET /json/info: not served (HTTP 404)") {
		t.Errorf("404: %s", dump(f))
	}

	// A port nothing listens on: unreachable, with the connect's error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	f, _ = Query(context.Background(), Target{Host: "127.0.0.1", WebPort: int(closed.Port()), WLED: true}, Options{})
	if f.Reachable || f.WLED != nil || f.Version.Known() || !strings.Contains(f.VersionNote, "did not answer") {
		t.Errorf("closed port: %s", dump(f))
	}
}

func FuzzParseWLEDInfo(f *testing.F) {
	for _, s := range []string{wledInfoBody, `{"ver":1,"vid":"x","uptime":"5"}`, `{"brand":null}`, `{"ver":"\u001b","uptime":1e400}`, `{`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseWLEDInfo(b)
		if err != nil && s != (WLEDInfo{}) && !strings.HasPrefix(err.Error(), "wled info:") {
			t.Fatalf("partial result with unexpected error %v", err)
		}
		for _, v := range []string{s.Ver, s.VID, s.Release, s.Arch, s.MAC, s.Name, s.Brand, s.Chip()} {
			checkClean(t, "wled info", v)
		}
		if s.UptimeS != nil && *s.UptimeS < 0 {
			t.Fatal("negative uptime")
		}
	})
}
