package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testbroker"
	"github.com/ots-ota/ots-ota/sim/tasmotamqtt"
)

// TestSimPullFlags: tasmota-mqtt's flags as sim checks them before any
// device connects.
func TestSimPullFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--personality", "tasmota-mqtt"}, "needs --broker mqtt://HOST[:PORT]"},
		{[]string{"--personality", "tasmota-mqtt", "--broker", "mqtts://127.0.0.1"}, "plain MQTT only"},
		{[]string{"--personality", "tasmota-mqtt", "--broker", "mqtt://127.0.0.1", "--base-ip", "127.0.0.9"}, "--base-ip does not apply to --personality tasmota-mqtt"},
		{[]string{"--personality", "seed", "--broker", "mqtt://127.0.0.1"}, "--broker applies to --personality tasmota-mqtt or esphome-pull only"},
		{[]string{"--personality", "tasmota-mqtt", "--broker", "mqtt://127.0.0.1", "--fault", "two-step"}, "add --chip esp8266"},
		{[]string{"--personality", "tasmota-mqtt", "--broker", "mqtt://127.0.0.1", "--chip", "esp8266", "--fault", "crash-on-boot"}, "no rollback"},
		{[]string{"--personality", "tasmota-mqtt", "--broker", "mqtt://127.0.0.1", "--fault", "explode"}, `unknown fault "explode"`},
		{[]string{"--personality", "tasmota-mqtt", "--broker", "mqtt://127.0.0.1", "--count", "2", "--fault", "silent:3"}, "only 2 of 2 devices"},
		{[]string{"--personality", "tasmota-mqtt", "--broker", "mqtt://127.0.0.1", "--count", "0"}, "need at least 1 device"},
		{[]string{"--personality", "tasmota-mqtt", "--broker", "mqtt://127.0.0.1", "--full-topic", "%prefix%/x/"}, "must hold %topic%"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) { simUsage(t, c.args, c.want) })
	}
}

// simUsage runs `sim args` and wants a usage error whose words hold want.
func simUsage(t *testing.T, args []string, want string) {
	t.Helper()
	streams, out, errOut := TestStreams()
	code := Execute(context.Background(), append([]string{"sim"}, args...), streams)
	if code != ExitUsage || !strings.Contains(errOut.String(), want) {
		t.Fatalf("exit %d, want %d and %q\nstdout: %s\nstderr: %s", code, ExitUsage, want, out, errOut)
	}
}

// TestSimPullJSON: every tasmota-mqtt event fits sim.json.
func TestSimPullJSON(t *testing.T) {
	for _, e := range []tasmotamqtt.Event{
		{Event: tasmotamqtt.EventBooted, Time: time.Now(), Device: "tasmota_1A2B3C", Version: "15.4.0(tasmota)", BootCount: 3},
		{Event: tasmotamqtt.EventFetching, Time: time.Now(), Device: "t", URL: "http://127.0.0.1:8080/x/fw.bin", Attempt: 2},
		{Event: tasmotamqtt.EventFetched, Time: time.Now(), Device: "t", Bytes: 1 << 20, Version: "15.5.0(tasmota32)"},
		{Event: tasmotamqtt.EventUpgradeFailed, Time: time.Now(), Device: "t", Text: "Failed File Not Found (404)"},
		{Event: tasmotamqtt.EventStopped, Time: time.Now(), Device: "t"},
	} {
		if err := checkLine("sim.json", []byte(mustLine(t, pullLineOf(e)))); err != nil {
			t.Errorf("%s: %v", e.Event, err)
		}
	}
}

// TestSimPullRun: three devices on a broker, --json: their boots, then the
// summary; every line fits sim.json.
func TestSimPullRun(t *testing.T) {
	url := testbroker.Start(t).URL()
	streams, out, errOut := TestStreams()
	args := []string{"sim", "--personality", "tasmota-mqtt", "--broker", url, "--count", "3", "--chip", "esp8266",
		"--fault", "no-info:1", "--fast", "--duration", "500ms", "--json"}
	if code := Execute(context.Background(), args, streams); code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	booted, faults := 0, 0
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
			if !strings.HasPrefix(fmt.Sprint(last["device"]), "tasmota_") || last["version"] != "15.4.0(tasmota)" {
				t.Errorf("booted: %s", sc.Text())
			}
		case "fault":
			faults++
		}
	}
	if booted != 3 || faults != 1 || last["type"] != "summary" || last["count"] != float64(3) {
		t.Fatalf("%d booted, %d faults; output:\n%s", booted, faults, out)
	}
}
