package cmd

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/fakedev"
)

// Issue 14: secrets a device echoes, and one device under two names, on
// fake devices written apart from the client (internal/fakedev) and raw
// servers on 127.0.0.1.

// pushFast are push's flags with timings for fakedev's short boots.
var pushFast = []string{"--connect-timeout", "2s", "--idle-timeout", "3s", "--verify-timeout", "15s", "--stability-window", "2s", "--retries", "0"}

// runPushCmd runs push with an empty config file (the user's is never read)
// plus configYAML, and returns the exit code, stdout and stderr.
func runPushCmd(t *testing.T, configYAML string, args ...string) (int, string, string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "cfg.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	streams, out, errOut := TestStreams()
	code := Execute(context.Background(), append([]string{"--config", cfg, "push"}, args...), streams)
	if slices.Contains(args, "--json") {
		requireJSONRun(t, out.Bytes(), code)
	}
	return code, out.String(), errOut.String()
}

func startFake(t *testing.T, cfg fakedev.HTTPConfig) *fakedev.HTTPDevice {
	t.Helper()
	d, err := fakedev.StartHTTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func reversed(s string) string {
	b := []byte(s)
	slices.Reverse(b)
	return string(b)
}

// noLeak fails when any form of secret is in the output.
func noLeak(t *testing.T, what, output string, forms ...string) {
	t.Helper()
	for _, f := range forms {
		if strings.Contains(strings.ToLower(output), strings.ToLower(f)) {
			t.Errorf("%s holds %q:\n%s", what, f, output)
		}
	}
}

// TestPushRedactsVersionEcho: a device whose version strings hold the
// token (as it was sent, and lower-cased) gets them printed redacted in
// from, running and the message, in the table and in --json, while the
// verdict still tells the other image apart.
func TestPushRedactsVersionEcho(t *testing.T) {
	const token = "Tok3n-Echo-4242"
	fw := writeTestFirmware(t, "1.0.1")
	for _, mode := range []string{"table", "json", "vv"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			d := startFake(t, fakedev.HTTPConfig{
				Token: token, OTAStatus: true, BootTime: 1500 * time.Millisecond,
				Running: fakedev.Build{Project: "ots-fw-main", Version: "1.0.0+" + token, ELF: fakedev.ELFOf("old")},
				// It comes back on another build whose version echoes the
				// token lower-cased.
				After:   fakedev.RunsForeign,
				Foreign: fakedev.Build{Project: "ots-fw-main", Version: "1.0.1-" + strings.ToLower(token), ELF: fakedev.ELFOf("foreign")},
			})
			args := append(slices.Clone(pushFast), "--token", token, fw, net.JoinHostPort(d.Host(), strconv.Itoa(d.Port())))
			switch mode {
			case "json":
				args = append([]string{"--json"}, args...)
			case "vv":
				args = append([]string{"-vv"}, args...)
			}
			code, out, errOut := runPushCmd(t, "", args...)
			if code != ExitFailed {
				t.Errorf("exit %d, want 1 (another image runs)\n%s\n%s", code, out, errOut)
			}
			if d.Uploads() != 1 {
				t.Errorf("%d uploads, want 1", d.Uploads())
			}
			noLeak(t, "stdout", out, token)
			noLeak(t, "stderr", errOut, token)
			if !strings.Contains(out, "1.0.0+[redacted]") || !strings.Contains(out, "1.0.1-[redacted]") {
				t.Errorf("from and running are not shown redacted:\n%s", out)
			}
		})
	}
}

// TestPushRedactsEchoedBasicCredentials: a 403 body that quotes the Basic
// credentials URL-encoded, lower-cased, reversed or in base64 is printed
// with each form redacted.
func TestPushRedactsEchoedBasicCredentials(t *testing.T) {
	const user, pw = "admin", "Pa55/Word+Echo"
	pair := user + ":" + pw
	fw := writeTestFirmware(t, "1.0.1")
	for name, echo := range map[string]string{
		"url-encoded":            "you sent " + url.QueryEscape(pair),
		"lower-cased":            "bad password " + strings.ToLower(pw),
		"reversed":               "bad pair " + reversed(pair),
		"base64":                 "bad header Basic " + base64.StdEncoding.EncodeToString([]byte(pair)),
		"base64 of the password": "bad password " + base64.StdEncoding.EncodeToString([]byte(pw)),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost {
					http.NotFound(w, r)
					return
				}
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprint(w, echo)
			})}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { srv.Close() })
			for _, args := range [][]string{
				{"--user", user, "--password", pw},
				{"--json", "-vv", "--user", user, "--password", pw},
			} {
				args = append(append(args, pushFast...), "--protocol", "http", fw, ln.Addr().String())
				code, out, errOut := runPushCmd(t, "", args...)
				if code != ExitFailed {
					t.Errorf("exit %d, want 1\n%s\n%s", code, out, errOut)
				}
				forms := []string{pw, url.QueryEscape(pw), reversed(pw), base64.StdEncoding.EncodeToString([]byte(pair)), base64.StdEncoding.EncodeToString([]byte(pw))}
				noLeak(t, "stdout", out, forms...)
				noLeak(t, "stderr", errOut, forms...)
				if !strings.Contains(out, "[redacted]") {
					t.Errorf("the device's words are not shown redacted:\n%s", out)
				}
			}
		})
	}
}

// TestPushMergesNamesOfOneDevice: localhost and 127.0.0.1 on one port are
// one device: one upload, one result, one line that says so; a name that
// does not resolve stays a device of its own. (A .local name: under the
// test guard it is asked on loopback only; a DNS name would send a query
// off the machine.)
func TestPushMergesNamesOfOneDevice(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	d := startFake(t, fakedev.HTTPConfig{OTAStatus: true, BootTime: 1500 * time.Millisecond})
	port := strconv.Itoa(d.Port())
	code, out, errOut := runPushCmd(t, "", append(slices.Clone(pushFast), "--json", fw,
		"localhost:"+port, "127.0.0.1:"+port, "no-such-device.local:"+port)...)
	if d.Uploads() != 1 {
		t.Errorf("%d uploads to one device, want 1\n%s\n%s", d.Uploads(), out, errOut)
	}
	want := fmt.Sprintf("ots-ota: localhost:%s and 127.0.0.1:%s are the same device (127.0.0.1:%s): updating it once as localhost:%s\n", port, port, port, port)
	if strings.Count(errOut, " are the same device ") != 1 || !strings.Contains(errOut, want) {
		t.Errorf("stderr does not say the merge once, as %q:\n%s", want, errOut)
	}
	if !strings.Contains(out, `"counts":{"unreachable":1,"updated":1}`) && !strings.Contains(out, `"counts":{"failed":1,"updated":1}`) {
		t.Errorf("want one device updated and the unresolvable one failing on its own:\n%s", out)
	}
	if code != ExitFailed {
		t.Errorf("exit %d, want 1 (the unresolvable device)", code)
	}
}

// TestPushMergedDevicesDifferentAuth: two inventory entries for one device
// with different auth: exit 2, nothing sent.
func TestPushMergedDevicesDifferentAuth(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	d := startFake(t, fakedev.HTTPConfig{OTAStatus: true})
	t.Setenv("OTS_TEST_AUTH_A", "secret-aaaaaa")
	t.Setenv("OTS_TEST_AUTH_B", "secret-bbbbbb")
	inv := fmt.Sprintf(`inventory:
  devices:
    - {name: front, address: 127.0.0.1, port: %[1]d, auth: {env: OTS_TEST_AUTH_A}}
    - {name: back, address: localhost, port: %[1]d, auth: {env: OTS_TEST_AUTH_B}}
    - {name: same, address: localhost, port: %[1]d, auth: {env: OTS_TEST_AUTH_A}}`, d.Port())
	code, out, errOut := runPushCmd(t, inv, append(slices.Clone(pushFast), "--inventory-only", fw, "front", "back")...)
	if code != ExitUsage || d.Uploads() != 0 {
		t.Errorf("exit %d with %d uploads, want 2 and none\n%s\n%s", code, d.Uploads(), out, errOut)
	}
	if !strings.Contains(errOut, "front and back are the same device") || !strings.Contains(errOut, "different credentials") {
		t.Errorf("stderr:\n%s", errOut)
	}
	noLeak(t, "stderr", errOut, "secret-aaaaaa", "secret-bbbbbb")
	// The same auth twice is one device, updated once.
	code, out, errOut = runPushCmd(t, inv, append(slices.Clone(pushFast), "--inventory-only", "--dry-run", fw, "front", "same")...)
	if code != ExitOK || !strings.Contains(errOut, "front and same are the same device") || !strings.Contains(out, "1 device(s): 1 planned") {
		t.Errorf("same auth: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestInfoRedactsVersionEcho: info shows a device's version redacted when
// it holds a secret push would send it ($OTS_OTA_TOKEN), as text and JSON.
func TestInfoRedactsVersionEcho(t *testing.T) {
	const token = `Info"Tok3n\Echo`
	t.Setenv("OTS_OTA_TOKEN", token)
	d := startFake(t, fakedev.HTTPConfig{OTAStatus: true,
		Running: fakedev.Build{Project: "ots-fw-main", Version: "2.0.0+" + token, ELF: fakedev.ELFOf("old")}})
	cfg := filepath.Join(t.TempDir(), "cfg.yaml")
	if err := os.WriteFile(cfg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, json := range []bool{false, true} {
		streams, out, errOut := TestStreams()
		args := []string{"--config", cfg, "info", "--inventory-only", net.JoinHostPort(d.Host(), strconv.Itoa(d.Port()))}
		if json {
			args = append([]string{"--json"}, args...)
		}
		if code := Execute(context.Background(), args, streams); code != ExitOK {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		if json {
			requireJSONRun(t, out.Bytes(), ExitOK)
		}
		noLeak(t, "stdout", out.String(), "Tok3n", token)
		if !strings.Contains(out.String(), "2.0.0+[redacted]") {
			t.Errorf("version not shown redacted:\n%s", out)
		}
	}
}
