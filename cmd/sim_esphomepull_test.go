package cmd

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testbroker"
	"github.com/ots-ota/ots-ota/sim/esphomepull"
)

// TestSimESPHomePullFlags: esphome-pull's flags as sim checks them before
// any node connects.
func TestSimESPHomePullFlags(t *testing.T) {
	base := []string{"--personality", "esphome-pull", "--broker", "mqtt://127.0.0.1"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--personality", "esphome-pull", "--manifest-url", "http://127.0.0.1/m.json"}, "needs --broker mqtt://HOST[:PORT]"},
		{base, "needs --manifest-url"},
		{append(base, "--manifest-url", "ftp://127.0.0.1/m.json"), "give http://HOST[:PORT]/PATH"},
		{append(base, "--manifest-url", "http://127.0.0.1/m.json", "--cohorts", "a:1"), "holds no {cohort}"},
		{append(base, "--manifest-url", "http://127.0.0.1/{cohort}.json"), "needs --cohorts"},
		{append(base, "--manifest-url", "http://127.0.0.1/{cohort}.json", "--count", "3", "--cohorts", "a:1,b:1"), "hold 2 of the 3 nodes"},
		{append(base, "--manifest-url", "http://127.0.0.1/{cohort}.json", "--count", "3", "--cohorts", "a:4"), "more than the 3 node(s)"},
		{append(base, "--manifest-url", "http://127.0.0.1/{cohort}.json", "--cohorts", "a:rest,b:1"), "only the last cohort takes the rest"},
		{append(base, "--manifest-url", "http://127.0.0.1/{cohort}.json", "--cohorts", "a/b:rest"), "no '/'"},
		{append(base, "--manifest-url", "http://127.0.0.1/m.json", "--node-name", "kitchen"), "one %d"},
		{append(base, "--manifest-url", "http://127.0.0.1/m.json", "--chip", "esp99"), "--chip-family"},
		{append(base, "--manifest-url", "http://127.0.0.1/m.json", "--fault", "two-step"), `unknown fault "two-step"`},
		{append(base, "--manifest-url", "http://127.0.0.1/m.json", "--count", "2", "--fault", "silent:3"), "only 2 of 2 are left"},
		{append(base, "--manifest-url", "http://127.0.0.1/m.json", "--update-interval", "0s"), "must be above 0"},
		{append(base, "--manifest-url", "http://127.0.0.1/m.json", "--full-topic", "%topic%/"), "--full-topic does not apply to --personality esphome-pull (it applies to --personality tasmota-mqtt)"},
		{append(base, "--manifest-url", "http://127.0.0.1/m.json", "--base-ip", "127.0.0.9"), "--base-ip does not apply to --personality esphome-pull"},
		{[]string{"--personality", "tasmota-mqtt", "--broker", "mqtt://127.0.0.1", "--manifest-url", "http://127.0.0.1/m.json"}, "--manifest-url does not apply to --personality tasmota-mqtt (it applies to --personality esphome-pull)"},
		{[]string{"--personality", "seed", "--cohorts", "a:1"}, "--cohorts applies to --personality esphome-pull only"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) { simUsage(t, c.args, c.want) })
	}
}

// TestSimESPHomePullJSON: every esphome-pull event fits sim.json.
func TestSimESPHomePullJSON(t *testing.T) {
	for _, e := range []esphomepull.Event{
		{Event: esphomepull.EventBooted, Time: time.Now(), Device: "esphome-001", Version: "1.0.0", BootCount: 1},
		{Event: esphomepull.EventChecked, Time: time.Now(), Device: "esphome-001", Version: "2.0.0", Text: "available"},
		{Event: esphomepull.EventCheckFailed, Time: time.Now(), Device: "esphome-001", URL: "http://127.0.0.1:1/m.json", Text: "cannot fetch the manifest: connection refused"},
		{Event: esphomepull.EventFetched, Time: time.Now(), Device: "e", Bytes: 1 << 20, Version: "2.0.0"},
		{Event: esphomepull.EventStopped, Time: time.Now(), Device: "e"},
	} {
		if err := checkLine("sim.json", []byte(mustLine(t, esphomePullLineOf(e)))); err != nil {
			t.Errorf("%s: %v", e.Event, err)
		}
	}
}

// TestSimESPHomePullRun: three nodes in two cohorts, --json: their boots
// and first checks (the canary's manifest tells 2.0.0, the rest's the
// running 1.0.0), then the summary; every line fits sim.json.
func TestSimESPHomePullRun(t *testing.T) {
	url := testbroker.Start(t).URL()
	sum := md5.Sum([]byte("x"))
	manifest := func(v string) string {
		return fmt.Sprintf(`{"name":"n","version":%q,"builds":[{"chipFamily":"ESP32-S3","ota":{"path":"http://127.0.0.1:1/fw.bin","md5":%q}}]}`, v, hex.EncodeToString(sum[:]))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/canary.json":
			fmt.Fprint(w, manifest("2.0.0"))
		case "/manifest.json":
			fmt.Fprint(w, manifest("1.0.0"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	streams, out, errOut := TestStreams()
	args := []string{"sim", "--personality", "esphome-pull", "--broker", url, "--count", "3", "--node-name", "n-%d",
		"--manifest-url", srv.URL + "/{cohort}.json", "--cohorts", "canary:1,manifest:rest", "--fault", "silent:1",
		"--fast", "--duration", "1s", "--json"}
	if code := Execute(context.Background(), args, streams); code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	booted := 0
	checked := map[string]string{}
	var last map[string]any
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		if err := checkLine("sim.json", sc.Bytes()); err != nil {
			t.Errorf("%s: %v", sc.Text(), err)
		}
		last = map[string]any{}
		_ = json.Unmarshal(sc.Bytes(), &last)
		switch last["type"] {
		case "booted":
			booted++
			if last["version"] != "1.0.0" || last["personality"] != "esphome-pull" {
				t.Errorf("booted: %s", sc.Text())
			}
		case "checked":
			checked[fmt.Sprint(last["device"])] = fmt.Sprint(last["text"])
		}
	}
	if booted != 3 || checked["n-1"] != "available" || checked["n-2"] != "no update" || checked["n-3"] != "no update" ||
		last["type"] != "summary" || last["count"] != float64(3) {
		t.Fatalf("%d booted, checks %v; output:\n%s", booted, checked, out)
	}
}
