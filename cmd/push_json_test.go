package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
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

// summaryOf is the run's last line, the summary.
func summaryOf(t *testing.T, out string) map[string]any {
	t.Helper()
	lines := jsonLines(t, out)
	s := lines[len(lines)-1]
	if s["type"] != "summary" {
		t.Fatalf("the last line is no summary:\n%s", out)
	}
	return s
}

// checkImageKnown: a push summary tells the image once it was read.
func checkImageKnown(t *testing.T, s map[string]any, interrupted bool) {
	t.Helper()
	fw, _ := s["firmware"].(string)
	if !strings.HasSuffix(fw, "fw.bin") || s["version"] != "1.0.1" || s["size"] != float64(300_000) || s["interrupted"] != interrupted ||
		s["dry_run"] != false {
		t.Errorf("summary %v: want the image (fw.bin, 1.0.1, 300000 bytes), interrupted %v, dry_run false", s, interrupted)
	}
	if c, ok := s["counts"].(map[string]any); !ok || len(c) != 0 {
		t.Errorf("counts %v, want {}", s["counts"])
	}
	if d, ok := s["devices"].([]any); !ok || len(d) != 0 {
		t.Errorf("devices %v, want []", s["devices"])
	}
}

// TestPushJSONNoDevices: no device found, after the image was read: the
// summary tells the image (it said null for all of it), and the error
// line says no_devices. The same run of info says no_devices too.
func TestPushJSONNoDevices(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	code, out, errOut := runPushCmd(t, "", "--json", "--inventory-only", writeTestFirmware(t, "1.0.1"), "all")
	if code != ExitFailed || !strings.Contains(out, `{"type":"error","schema":2,"command":"push","error":{"code":"no_devices",`) {
		t.Fatalf("exit %d, want 1 and a no_devices error line:\n%s\n%s", code, out, errOut)
	}
	checkImageKnown(t, summaryOf(t, out), false)

	streams, iout, _ := TestStreams()
	code = Execute(context.Background(), []string{"info", "--json", "--all", "--inventory-only"}, streams)
	requireJSONRun(t, iout.Bytes(), code)
	if code != ExitFailed || !strings.Contains(iout.String(), `"error":{"code":"no_devices",`) {
		t.Errorf("info: exit %d, want 1 and a no_devices error line:\n%s", code, iout)
	}
}

// cancelOn is a writer that cancels once marker was written to it.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	cancel context.CancelFunc
}

func (w *cancelOn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.marker) {
		w.cancel()
	}
	return len(p), nil
}

// TestPushJSONInterruptedBrowse: Ctrl-C while mDNS browses for --all,
// after the image was read: exit 130, and the summary tells the image and
// interrupted true (it said null).
func TestPushJSONInterruptedBrowse(t *testing.T) {
	needMulticast(t)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streams, out, _ := TestStreams()
	errOut := &cancelOn{marker: "selecting devices: mDNS", cancel: cancel}
	streams.ErrOut = errOut
	code := Execute(ctx, []string{"push", "--json", "-v", "--interface", "lo", "--browse-timeout", "60s", writeTestFirmware(t, "1.0.1"), "all"}, streams)
	requireJSONRun(t, out.Bytes(), code)
	if code != ExitCancelled {
		t.Fatalf("exit %d, want 130\n%s\n%s", code, out, errOut.buf.String())
	}
	checkImageKnown(t, summaryOf(t, out.String()), true)
}

// TestSimPasswordRedacted: sim's --password is a secret of the run: what
// the devices say is printed without it, in JSON and on stderr (a version
// that holds it printed it).
func TestSimPasswordRedacted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.x loopback addresses (Linux)")
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	const secret = "s3cret-version-7"
	for i, json := range []bool{true, false} {
		args := []string{"sim", "-n", "1", "--no-mdns", "--fast", "--base-ip", fmt.Sprintf("127.47.2.%d", 2+i), "--web-port", "-1",
			"--duration", "200ms", "--password", secret, "--version", secret}
		if json {
			args = append(args, "--json")
		}
		streams, out, errOut := TestStreams()
		code := Execute(context.Background(), args, streams)
		if json {
			requireJSONRun(t, out.Bytes(), code)
		}
		all := out.String() + errOut.String()
		if code != ExitOK || strings.Contains(all, secret) || !strings.Contains(all, "[redacted]") {
			t.Errorf("json %v: exit %d, the secret printed or nothing redacted:\n%s", json, code, all)
		}
	}
}
