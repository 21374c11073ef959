package form

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

type espeasyJSON struct {
	System map[string]any `json:"System"`
	WiFi   map[string]any `json:"WiFi"`
	TTL    int            `json:"TTL"`
}

func readJSON(t *testing.T, addr, query string) espeasyJSON {
	t.Helper()
	code, body, err := simtest.GetGo(t, "http://"+addr+"/json"+query)
	if err != nil || code != 200 {
		t.Fatalf("/json: %d %v", code, err)
	}
	var j espeasyJSON
	if err := json.Unmarshal([]byte(body), &j); err != nil {
		t.Fatalf("/json is no JSON: %v\n%s", err, body)
	}
	return j
}

// TestESPEasyJSON: /json tells Git Build (the running image's version),
// Build Time as __DATE__ __TIME__ (another for every build) and the uptime
// since the reset; ?view=sensorupdate leaves System out.
func TestESPEasyJSON(t *testing.T) {
	for _, v := range variants[2:] {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			before := readJSON(t, d.OTAAddr(), "")
			if before.System["Git Build"] != "1.0.0" || before.TTL != 60000 {
				t.Fatalf("before: %+v", before)
			}
			bt, _ := before.System["Build Time"].(string)
			if !regexp.MustCompile(`^[A-Z][a-z]{2} [ 123]\d \d{4} \d\d:\d\d:\d\d$`).MatchString(bt) {
				t.Errorf("Build Time %q is not __DATE__ __TIME__", bt)
			}
			if _, ok := before.System["Build"].(float64); !ok {
				t.Errorf("Build %v is not a number", before.System["Build"])
			}
			time.Sleep(20 * time.Millisecond)
			if r := upload(t, d, "firmware", v.image(t, "1.0.1"), nil); r.Body != textSuccess {
				t.Fatalf("upload: %d %q", r.Status, r.Body)
			}
			if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
				t.Fatal(err)
			}
			after := readJSON(t, d.OTAAddr(), "")
			if after.System["Git Build"] != "1.0.1" || after.System["Build Time"] == bt ||
				after.System["Last Boot Cause"] != "Soft Reboot" || before.System["Last Boot Cause"] != "Cold Boot" {
				t.Errorf("after: %+v (before %+v)", after.System, before.System)
			}
			if a, b := after.System["Uptime (ms)"].(float64), before.System["Uptime (ms)"].(float64); a >= b+20 {
				t.Errorf("uptime did not restart: %v then %v", b, a)
			}
			if s := readJSON(t, d.OTAAddr(), "?view=sensorupdate"); s.System != nil || s.WiFi != nil {
				t.Errorf("sensorupdate view: %+v", s)
			}
			if h, _ := after.WiFi["Hostname"].(string); !strings.HasPrefix(h, "ots-sim") {
				t.Errorf("WiFi: %+v", after.WiFi)
			}
		})
	}
}
