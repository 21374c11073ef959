package cmd

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
)

func TestPushExitCode(t *testing.T) {
	res := func(os ...upload.Outcome) []upload.Result {
		var out []upload.Result
		for _, o := range os {
			out = append(out, upload.Result{Outcome: o})
		}
		return out
	}
	cases := []struct {
		name        string
		results     []upload.Result
		interrupted bool
		require     bool
		want        int
	}{
		{"all updated", res(upload.OutcomeUpdated, upload.OutcomeSkipped, upload.OutcomeAccepted), false, false, 0},
		{"unverified is fine", res(upload.OutcomeUpdated, upload.OutcomeUnverified), false, false, 0},
		{"unverified required", res(upload.OutcomeUpdated, upload.OutcomeUnverified), false, true, 3},
		{"1 beats 3", res(upload.OutcomeUnverified, upload.OutcomeRolledBack), false, true, 1},
		{"failed", res(upload.OutcomeFailed), false, false, 1},
		{"refused", res(upload.OutcomeRefused), false, false, 1},
		{"unchanged", res(upload.OutcomeUnchanged), false, false, 1},
		{"unreachable", res(upload.OutcomeUnreachable), false, false, 1},
		{"interrupted", res(upload.OutcomeCancelled, upload.OutcomeFailed), true, true, 130},
	}
	for _, c := range cases {
		if got := pushExitCode(c.results, c.interrupted, c.require); got != c.want {
			t.Errorf("%s: exit %d, want %d", c.name, got, c.want)
		}
	}
}

func TestParseTarget(t *testing.T) {
	cases := []struct {
		in         string
		host       string
		port       int
		path       string
		proto      upload.Protocol
		wantErr    bool
		givenProto upload.Protocol
		user, pw   string
	}{
		{in: "192.168.1.40", host: "192.168.1.40", proto: upload.Auto},
		{in: "192.168.1.40:8266", host: "192.168.1.40", port: 8266, proto: upload.Auto},
		{in: "ots-fw-main.local", host: "ots-fw-main.local", proto: upload.Auto},
		{in: "[fe80::1]:3232", host: "fe80::1", port: 3232, proto: upload.Auto},
		{in: "fe80::1", host: "fe80::1", proto: upload.Auto},
		{in: "http://host:3232/update", host: "host", port: 3232, path: "/update", proto: upload.HTTP},
		{in: "http://host/ota/upload", host: "host", port: 80, path: "/ota/upload", proto: upload.HTTP},
		{in: "https://host/update", wantErr: true},
		{in: "http://user:pw@host/update", host: "host", port: 80, path: "/update", proto: upload.HTTP, user: "user", pw: "pw"},
		{in: "http://:tok@host/update", host: "host", port: 80, path: "/update", proto: upload.HTTP, pw: "tok"},
		{in: "http://user@host/update", wantErr: true},
		{in: "user:pw@host", wantErr: true},
		{in: "http://host/update", givenProto: upload.Espota, wantErr: true},
		{in: "host:0", wantErr: true},
		{in: "host:x", wantErr: true},
		{in: "a b", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, c := range cases {
		gp := c.givenProto
		if gp == "" {
			gp = upload.Auto
		}
		got, cred, err := parseTarget(c.in, 0, 0, gp)
		if c.wantErr {
			if err == nil {
				t.Errorf("%q: accepted as %+v", c.in, got)
			}
			continue
		}
		if err != nil || got.Host != c.host || got.Port != c.port || got.Path != c.path || got.Protocol != c.proto {
			t.Errorf("%q: %+v %v", c.in, got, err)
		}
		if (cred != nil) != (c.pw != "") || cred != nil && (cred.User != c.user || cred.Password.Reveal() != c.pw) {
			t.Errorf("%q: credentials %+v, want user %q password %q", c.in, cred, c.user, c.pw)
		}
		if strings.Contains(got.Name, "@") {
			t.Errorf("%q: label %q holds the URL's credentials", c.in, got.Name)
		}
	}
}

// TestPushInterrupted: Ctrl-C (the context ends) during an upload stops
// the run, still prints the summary, and exits 130; with --json, the lines
// keep the contract, the cancelled device tells the bytes it took, and the
// summary says interrupted.
func TestPushInterrupted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.x loopback addresses (Linux)")
	}
	for _, mode := range []struct {
		name string
		base [4]byte
		json bool
	}{{"table", [4]byte{127, 0, 72, 2}, false}, {"json", [4]byte{127, 47, 1, 2}, true}} {
		t.Run(mode.name, func(t *testing.T) {
			tm := sim.FastTiming()
			tm.WriteRate = 50 << 10 // 300 KB take 6 s
			started := make(chan struct{}, 10)
			fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{N: 3, BaseIP: netip.AddrFrom4(mode.base), WebPort: 18080,
				Template: sim.Config{Timing: &tm, Extensions: true, Project: "ots-fw-main"},
				OnEvent: func(e sim.Event) {
					if e.Event == sim.EventUploadStarted {
						select {
						case started <- struct{}{}:
						default:
						}
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			fw := writeTestFirmware(t, "1.0.1")
			streams, out, errOut := TestStreams()
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				// Interrupt once an upload is under way.
				select {
				case <-started:
				case <-time.After(10 * time.Second):
				}
				time.Sleep(300 * time.Millisecond)
				cancel()
			}()
			args := []string{"push", "--parallel", "1", fw}
			if mode.json {
				args = append(args, "--json")
			}
			for _, d := range fl.Devices() {
				args = append(args, d.OTAAddr())
			}
			start := time.Now()
			code := Execute(ctx, args, streams)
			if code != ExitCancelled {
				t.Fatalf("exit %d, want 130\n%s\n%s", code, out, errOut)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("took %v to stop", time.Since(start))
			}
			s := out.String()
			if mode.json {
				requireJSONRun(t, out.Bytes(), code)
				if !strings.Contains(s, `"code":"interrupted"`) || !strings.Contains(s, `"interrupted":true`) {
					t.Errorf("no interrupted error line or summary:\n%s", s)
				}
				cancelled := 0
				for _, r := range linesOf(jsonLines(t, s), "result") {
					if r["outcome"] != "cancelled" {
						continue
					}
					cancelled++
					if b, ok := r["bytes"].(float64); !ok || b <= 0 {
						t.Errorf("the cancelled device took %v bytes, want some: %v", r["bytes"], r)
					}
				}
				if cancelled != 1 {
					t.Errorf("%d cancelled devices, want 1:\n%s", cancelled, s)
				}
			} else if !strings.Contains(s, "DEVICE") || !strings.Contains(s, "cancelled") || !strings.Contains(s, "not-started") {
				t.Errorf("summary:\n%s", s)
			}
			for _, d := range fl.Devices() {
				if v := d.State().Version; v != "1.0.0" {
					t.Errorf("%s runs %s after an interrupted upload", d.Name(), v)
				}
			}
		})
	}
}

// writeTestFirmware writes an ESP32-S3 ots-fw-main image of version v.
func writeTestFirmware(t *testing.T, v string) string {
	t.Helper()
	return writeTestFirmwareSize(t, v, 300_000)
}

// writeTestFirmwareSize writes an ESP32-S3 image of version v, size bytes.
func writeTestFirmwareSize(t *testing.T, v string, size int) string {
	t.Helper()
	data, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "ots-fw-main", Version: v, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	fw := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(fw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return fw
}

// TestPushLinesEveryFailureOneLine: off a terminal (and with -v) a device
// that fails before the run (its inventory secret cannot be read) gets its
// line as one that fails in it does, and what a user or device supplied is
// shown on one line: a name with a newline and an escape does not break the
// lines nor reach the terminal.
func TestPushLinesEveryFailureOneLine(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	d := startFake(t, fakedev.HTTPConfig{OTAStatus: true})
	inv := fmt.Sprintf(`inventory:
  devices:
    - {name: "kitchen\e[2J\nstove", address: 127.0.0.1, port: %d}
    - {name: ghost, address: 127.0.0.1, port: %d, auth: {env: OTS_TEST_NEVER_SET}}`, d.Port(), d.Port()+1)
	code, out, errOut := runPushCmd(t, inv, append(slices.Clone(pushFast), "-v", "--inventory-only", fw, "kitchen\x1b[2J\nstove", "ghost")...)
	if code != ExitFailed {
		t.Errorf("exit %d, want 1 (ghost)\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"\nghost: failed: nothing sent: the inventory's auth for this device: $OTS_TEST_NEVER_SET is not set\n",
		"\nkitchen [2J stove: checking ", "\nkitchen [2J stove: updated: "} {
		if !strings.Contains("\n"+errOut, want) {
			t.Errorf("stderr has no line %q:\n%s", strings.Trim(want, "\n"), errOut)
		}
	}
	if strings.ContainsAny(errOut, "\x1b\r") || strings.Contains(errOut, "\nstove") {
		t.Errorf("a name breaks the lines, or an escape reaches the terminal:\n%q", errOut)
	}
}
