package devinfo

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// espeasyBody is GET /json as ESPEasy (mega-20241019) writes it: the
// System labels in its order, numbers bare, the rest after System.
const espeasyBody = `{"System":{
"Load":12.5,
"Load LC":8123,
"Build":20241019,
"Git Build":"mega-20241019",
"System Libraries":"ESP32 SDK 4.4.7",
"Plugin Count":89,
"Plugin Description":"[Normal]",
"Build Time":"Oct 19 2024 22:36:19",
"Binary Filename":"ESP_Easy_mega_20241019_normal_ESP32_4M316k",
"Local Time":"2024-10-20 10:00:00",
"Unit Number":3,
"Unit Name":"kitchen",
"Uptime":42,
"Uptime (ms)":2520345,
"Last Boot Cause":"Soft Reboot",
"Reset Reason":"Software/System restart",
"ESP Chip Model":"ESP32-D0WD-V3"
},
"WiFi":{"Hostname":"kitchen-3","IP Address":"10.0.0.5"},
"Sensors":[],
"TTL":60000
}`

func TestParseESPEasyJSON(t *testing.T) {
	full := ESPEasyJSON{Build: "20241019", GitBuild: "mega-20241019", BuildTime: "Oct 19 2024 22:36:19",
		BinaryFilename: "ESP_Easy_mega_20241019_normal_ESP32_4M316k", UnitName: "kitchen", UnitNumber: i64(3),
		ChipModel: "ESP32-D0WD-V3", LastBootCause: "Soft Reboot", ResetReason: "Software/System restart",
		UptimeMin: i64(42), UptimeMS: i64(2520345)}
	tests := []struct {
		name    string
		in      string
		want    ESPEasyJSON
		wantErr string
	}{
		{"mega-20241019", espeasyBody, full, ""},
		{"cut after System", espeasyBody[:strings.Index(espeasyBody, `"WiFi"`)+10], full, ""},
		{"System not first", `{"TTL":1,"Sensors":[{"x":[1,{"y":2}]}],"System":{"Git Build":"(custom)"}}`, ESPEasyJSON{GitBuild: "(custom)"}, ""},
		// Before ESPEasy wrote numbers bare it quoted every value.
		{"quoted numbers", `{"System":{"Build":"20117","Uptime":"5","Uptime (ms)":"300123","Unit Number":"0"}}`,
			ESPEasyJSON{Build: "20117", UptimeMin: i64(5), UptimeMS: i64(300123), UnitNumber: i64(0)}, ""},
		{"a numeric Git Build", `{"System":{"Git Build":20241019}}`, ESPEasyJSON{GitBuild: "20241019"}, ""},
		// Absent fields are unknown: no uptime is nil, never 0.
		{"build only", `{"System":{"Build":20241019}}`, ESPEasyJSON{Build: "20241019"}, ""},
		{"uptime 0 is a fact", `{"System":{"Build":1,"Uptime (ms)":0}}`, ESPEasyJSON{Build: "1", UptimeMS: i64(0)}, ""},
		{"empty strings unknown", `{"System":{"Git Build":"","Uptime (ms)":""}}`, ESPEasyJSON{}, ""},
		{"escape cleaned", `{"System":{"Git Build":"mega\u001b[2J"}}`, ESPEasyJSON{GitBuild: "mega\uFFFD[2J"}, ""},
		{"a sketch's own /json", `{"temperature":21.5}`, ESPEasyJSON{}, "not ESPEasy's JSON"},
		{"System without a build", `{"System":{"Uptime":5}}`, ESPEasyJSON{}, "not ESPEasy's JSON"},
		{"System null", `{"System":null}`, ESPEasyJSON{}, "not ESPEasy's JSON"},
		{"System an array", `{"System":[1]}`, ESPEasyJSON{}, "System: not an object"},
		{"negative uptime", `{"System":{"Build":1,"Uptime (ms)":-5}}`, ESPEasyJSON{}, "Uptime (ms): negative"},
		{"uptime not a number", `{"System":{"Build":1,"Uptime (ms)":"soon"}}`, ESPEasyJSON{}, "Uptime (ms): not a number"},
		{"build an object", `{"System":{"Build":{"n":1}}}`, ESPEasyJSON{}, "Build: not a string"},
		{"array", `[1]`, ESPEasyJSON{}, "not a JSON object"},
		{"404 page", `Not found: /json`, ESPEasyJSON{}, "not a JSON object"},
		{"truncated in System", `{"System":{"Build":2024`, ESPEasyJSON{}, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseESPEasyJSON([]byte(tt.in))
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

// TestQueryESPEasy: with ReadJSON the web port's /json tells the version
// (Git Build) and the uptime (Uptime (ms), in whole seconds), each from
// /json; without it /json is never asked.
func TestQueryESPEasy(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	body := espeasyBody
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Method+" "+r.URL.String())
		mu.Unlock()
		if r.URL.Path == "/json" {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(body))
			return
		}
		http.Error(w, "Not found", http.StatusNotFound)
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	tgt := Target{Host: ap.Addr().String(), Port: int(ap.Port()), WebPort: int(ap.Port()), Protocol: ProtoHTTP}

	f, err := Query(context.Background(), tgt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.ESPEasy != nil || f.Version.Known() || len(asked) != 2 {
		t.Fatalf("without ReadJSON: espeasy %+v version %+v, asked %q", f.ESPEasy, f.Version, asked)
	}

	asked = nil
	tgt.ReadJSON = true
	f, err = Query(context.Background(), tgt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"GET /ota/status", "GET /api/status", "GET /json"}; !reflect.DeepEqual(asked, want) {
		t.Errorf("asked %q, want %q", asked, want)
	}
	if f.Version != (Fact{"mega-20241019", FromJSON}) || f.Uptime != (Fact{"2520", FromJSON}) || !f.Reachable || f.VersionNote != "" {
		t.Errorf("version %+v uptime %+v reachable %v note %q", f.Version, f.Uptime, f.Reachable, f.VersionNote)
	}
	if f.ESPEasy == nil || f.ESPEasy.BuildTime != "Oct 19 2024 22:36:19" {
		t.Errorf("espeasy %+v", f.ESPEasy)
	}

	// Minutes alone are no uptime fact; an absent Git Build no version.
	body = `{"System":{"Build":20241019,"Uptime":42}}`
	f, err = Query(context.Background(), tgt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Uptime.Known() || f.Version.Known() || !strings.Contains(f.VersionNote, "ESPEasy /json") {
		t.Errorf("uptime %+v version %+v note %q", f.Uptime, f.Version, f.VersionNote)
	}

	// A long /json is cut, not refused: System comes first.
	body = espeasyBody[:len(espeasyBody)-1] + `,"pad":"` + strings.Repeat("x", 2*maxBody) + `"}`
	f, err = Query(context.Background(), tgt, Options{})
	if err != nil || f.Version.Value != "mega-20241019" {
		t.Errorf("long body: version %+v, %v (notes %q)", f.Version, err, f.Notes)
	}

	// A sketch's own /json is a note, not a fact.
	body = `{"temperature":21.5}`
	f, err = Query(context.Background(), tgt, Options{})
	if err != nil || f.ESPEasy != nil || f.Version.Known() || !f.Reachable || !strings.Contains(strings.Join(f.Notes, "|"), "GET /json: unreadable answer: not ESPEasy's JSON") {
		t.Errorf("sketch /json: %+v notes %q", f.ESPEasy, f.Notes)
	}
}
