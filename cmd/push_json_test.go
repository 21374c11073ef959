package cmd

import (
	"context"
	"encoding/json"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/sim"
)

// jsonLines parses NDJSON output into objects, failing t on a bad line.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %v: %s", err, l)
		}
		lines = append(lines, m)
	}
	return lines
}

// linesOf are the lines of one type.
func linesOf(lines []map[string]any, typ string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["type"] == typ {
			out = append(out, l)
		}
	}
	return out
}

// TestPushJSONBytesOfFailedTry: a device that took half the image and then
// failed reports the bytes it took (it said 0: only an accepted image set
// them), within the TCP window of what its handler read.
func TestPushJSONBytesOfFailedTry(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.x loopback addresses (Linux)")
	}
	fault, err := sim.ParseFault("error@50%")
	if err != nil {
		t.Fatal(err)
	}
	tm := sim.FastTiming()
	fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{N: 1, BaseIP: netip.AddrFrom4([4]byte{127, 47, 0, 2}), WebPort: 18080,
		Template: sim.Config{Timing: &tm, Extensions: true, Project: "ots-fw-main", Faults: []sim.Fault{fault}}})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	code, out, errOut := runPushCmd(t, "", "--json", "--retries", "0", writeTestFirmware(t, "1.0.1"), "127.47.0.2")
	if code != ExitFailed {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	results := linesOf(jsonLines(t, out), "result")
	if len(results) != 1 || results[0]["outcome"] != "failed" {
		t.Fatalf("want one failed result:\n%s", out)
	}
	ups := fl.Devices()[0].State().Uploads
	if len(ups) != 1 {
		t.Fatalf("the device saw %d uploads, want 1", len(ups))
	}
	read := float64(ups[0].Bytes)
	if b, ok := results[0]["bytes"].(float64); !ok || read == 0 || b < read || b-read > 16<<10 {
		t.Errorf("bytes %v, the device read %v:\n%s", results[0]["bytes"], read, out)
	}
}
