package rawhttp

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// The device shapes of issue 13, each driven by a plain client (net/http or
// raw TCP/UDP) and checked on the wire and in the device's state.

// statusKeys GETs a JSON status endpoint and returns its keys, or the
// status code when it is not 200.
func statusKeys(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	code, js, err := simtest.GetGo(t, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if code != 200 {
		return code, nil
	}
	m := map[string]any{}
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatalf("GET %s: %q: %v", url, js, err)
	}
	return code, m
}

func TestOmitFields(t *testing.T) {
	cases := []struct {
		name        string
		p           core.Personality
		apiUptime   bool
		omit        []string
		otaCode     int      // /ota/status answer
		otaAbsent   []string // keys missing from /ota/status
		apiCode     int      // /api/status answer (ots)
		apiAbsent   []string
		apiPresent  []string
		txtAbsent   []string // TXT keys missing from _ota._tcp
		txtPresent  []string
		otaPresent0 []string
	}{
		{name: "ots as shipped: /api/status without uptime", p: OTS, otaCode: 200, apiCode: 200,
			apiAbsent: []string{"uptime"}, apiPresent: []string{"firmwareVersion", "mode", "ip", "serialNumber", "ownerName"},
			txtPresent: []string{"version", "project", "chip"}, otaPresent0: otaStatusKeys},
		{name: "ots with uptime in /api/status", p: OTS, apiUptime: true, otaCode: 200, apiCode: 200,
			apiPresent: []string{"firmwareVersion", "uptime"}},
		{name: "each /ota/status key", p: Seed, omit: []string{"ota-status.uptime_s", "ota-status.elf_sha256", "ota-status.state", "ota-status.version"},
			otaCode: 200, otaAbsent: []string{"uptime_s", "elf_sha256", "state", "version"}, otaPresent0: []string{"project", "running", "boot", "slot_size"}},
		{name: "no /ota/status at all", p: Seed, omit: []string{"ota-status"}, otaCode: 404},
		{name: "api-status keys", p: OTS, apiUptime: true, omit: []string{"api-status.firmwareVersion", "api-status.uptime"}, otaCode: 200, apiCode: 200,
			apiAbsent: []string{"firmwareVersion", "uptime"}, apiPresent: []string{"mode", "serialNumber"}},
		{name: "no /api/status", p: OTS, omit: []string{"api-status"}, otaCode: 200, apiCode: 404},
		{name: "TXT without version", p: Seed, omit: []string{"txt.version"}, otaCode: 200,
			txtAbsent: []string{"version"}, txtPresent: []string{"project", "chip", "board", "auth", "path", "api"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := simtest.Config(c.p)
			cfg.Extensions, cfg.APIUptime, cfg.Omit = true, c.apiUptime, c.omit
			d := simtest.Start(t, cfg)
			code, m := statusKeys(t, "http://"+d.OTAAddr()+"/ota/status")
			if code != c.otaCode {
				t.Fatalf("/ota/status: %d, want %d", code, c.otaCode)
			}
			for _, k := range c.otaAbsent {
				if _, ok := m[k]; ok {
					t.Errorf("/ota/status tells %s: %v", k, m)
				}
			}
			for _, k := range c.otaPresent0 {
				if _, ok := m[k]; !ok {
					t.Errorf("/ota/status lacks %s: %v", k, m)
				}
			}
			if c.apiCode != 0 {
				code, m := statusKeys(t, "http://"+d.WebAddr()+"/api/status")
				if code != c.apiCode {
					t.Fatalf("/api/status: %d, want %d", code, c.apiCode)
				}
				for _, k := range c.apiAbsent {
					if _, ok := m[k]; ok {
						t.Errorf("/api/status tells %s: %v", k, m)
					}
				}
				for _, k := range c.apiPresent {
					if _, ok := m[k]; !ok {
						t.Errorf("/api/status lacks %s: %v", k, m)
					}
				}
			}
			var txt []string
			for _, s := range core.PeekAt(d).Services() {
				if s.Type == "_ota._tcp" {
					txt = s.TXT
				}
			}
			keys := map[string]bool{}
			for _, item := range txt {
				k, _, _ := strings.Cut(item, "=")
				keys[k] = true
			}
			for _, k := range c.txtAbsent {
				if keys[k] {
					t.Errorf("TXT tells %s: %v", k, txt)
				}
			}
			for _, k := range c.txtPresent {
				if !keys[k] {
					t.Errorf("TXT lacks %s: %v", k, txt)
				}
			}
		})
	}
}

// TestNoReboot: the upload is answered, the new image is the boot image,
// and the device keeps running the old one until something resets it.
func TestNoReboot(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Extensions = true
	cfg.Faults = []core.Fault{simtest.MustFault(t, "no-reboot")}
	d := simtest.Start(t, cfg)
	simtest.Push(t, d, "1.0.1")
	// Long past the reboot delay and the boot time of the fast timing.
	time.Sleep(10 * (cfg.Timing.RebootDelayMax + cfg.Timing.BootTime))
	s := simtest.OTAStatusOf(t, d)
	if st := d.State(); st.BootCount != 1 || s.Version != "1.0.0" || s.Running != "factory" || s.Boot != "ota_0" {
		t.Fatalf("after the 200: %+v, %d boots", s, st.BootCount)
	}
	if rec := simtest.LastUpload(t, d); rec.Outcome != "ok" || rec.Status != 200 || rec.Version != "1.0.1" {
		t.Errorf("record: %+v", rec)
	}
	d.Reboot()
	if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
		t.Fatal(err)
	}
}

// TestStatusError: the first reads of each status endpoint answer 500,
// then they answer normally.
func TestStatusError(t *testing.T) {
	for _, c := range []struct {
		spec string
		n    int
	}{{"status-error", 1}, {"status-error:2", 2}} {
		t.Run(c.spec, func(t *testing.T) {
			cfg := simtest.Config(OTS)
			cfg.Extensions = true
			cfg.Faults = []core.Fault{simtest.MustFault(t, c.spec)}
			d := simtest.Start(t, cfg)
			for _, url := range []string{"http://" + d.OTAAddr() + "/ota/status", "http://" + d.WebAddr() + "/api/status"} {
				for i := range c.n {
					code, body, err := simtest.GetGo(t, url)
					if err != nil || code != 500 || body != core.ErrText(500) {
						t.Fatalf("%s read %d: %d %q %v", url, i+1, code, body, err)
					}
				}
				if code, _, err := simtest.GetGo(t, url); err != nil || code != 200 {
					t.Fatalf("%s after the failures: %d %v", url, code, err)
				}
			}
		})
	}
}

// earlyClient sends the request headers and the first n bytes of body,
// then reads the answer: a device that answers early answers while the
// client still holds the rest. The connection is returned for the rest.
func earlyClient(t *testing.T, addr string, body []byte, n int) (*http.Response, string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", addr, len(body))
	if _, err := c.Write(body[:n]); err != nil {
		t.Fatalf("write %d bytes: %v", n, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer after %d of %d bytes: %v", n, len(body), err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), c
}

func TestEarlyAnswer(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
	cases := []struct {
		spec    string
		send    int    // bytes sent before waiting for the answer
		version string // what the device runs in the end
		outcome string
	}{
		{"early-answer@0%", 0, "1.0.1", "ok"},
		{"early-answer@30%", len(img) / 2, "1.0.1", "ok"},
		{"early-answer@30%:discard", len(img) / 2, "1.0.0", "discarded"},
		{"early-answer@0%:close", 0, "1.0.0", "aborted"},
		{"early-answer@30%:close", len(img) / 2, "1.0.0", "aborted"},
	}
	for _, c := range cases {
		t.Run(c.spec, func(t *testing.T) {
			cfg := simtest.Config(Seed)
			cfg.Extensions = true
			cfg.Timing.ErrorCloseDelay = 200 * time.Millisecond // so the close mode's answer is read before the RST
			cfg.Faults = []core.Fault{simtest.MustFault(t, c.spec)}
			d := simtest.Start(t, cfg)
			resp, text, conn := earlyClient(t, d.OTAAddr(), img, c.send)
			if resp.StatusCode != 200 || text != textSeedOK {
				t.Fatalf("early answer: %d %q", resp.StatusCode, text)
			}
			if !strings.HasSuffix(c.spec, ":close") {
				if _, err := conn.Write(img[c.send:]); err != nil {
					t.Fatalf("the rest: %v", err)
				}
			}
			st := simtest.WaitUploads(t, d, 1)
			rec := st.Uploads[0]
			if rec.Outcome != c.outcome || rec.Status != 200 {
				t.Errorf("record: %+v", rec)
			}
			if c.version == "1.0.1" {
				if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
					t.Fatal(err)
				}
				return
			}
			time.Sleep(10 * (cfg.Timing.RebootDelayMax + cfg.Timing.BootTime))
			if st := d.State(); st.Version != "1.0.0" || st.BootCount != 1 || !st.Up {
				t.Errorf("after: %s, %d boots, up %v", st.Version, st.BootCount, st.Up)
			}
		})
	}
}

// TestLoseAnswer: the device installs and restarts, and the client never
// gets the 200: the connection goes silent (then is reset when the device
// is back), or is reset at once.
func TestLoseAnswer(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
	for _, spec := range []string{"lose-answer", "lose-answer:reset"} {
		t.Run(spec, func(t *testing.T) {
			cfg := simtest.Config(Seed)
			cfg.Extensions = true
			cfg.Faults = []core.Fault{simtest.MustFault(t, spec)}
			d := simtest.Start(t, cfg)
			r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, img)
			if r.ReadErr == nil || r.Status != 0 {
				t.Fatalf("an answer came: %d %q", r.Status, r.Body)
			}
			if spec == "lose-answer:reset" && !errors.Is(r.ReadErr, io.ErrUnexpectedEOF) && !isReset(r.ReadErr) {
				t.Errorf("read: %v, want a reset", r.ReadErr)
			}
			if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
				t.Fatal(err)
			}
			if rec := simtest.LastUpload(t, d); rec.Outcome != "ok" || rec.Status != 0 || rec.Version != "1.0.1" {
				t.Errorf("record: %+v", rec)
			}
		})
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset") || errors.Is(err, io.EOF))
}

// TestTrickleHTTP: the device reads the body a few bytes at a time; the
// upload cannot take less than size ÷ rate.
func TestTrickleHTTP(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Faults = []core.Fault{simtest.MustFault(t, "trickle:2KB/s")}
	d := simtest.Start(t, cfg)
	body := make([]byte, 3000)
	body[0] = 0xE9
	r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, body)
	if r.Status != 500 || r.Body != textEndFailed {
		t.Fatalf("answer: %d %q %v", r.Status, r.Body, r.ReadErr)
	}
	// 3000 bytes at 2000 B/s in reads of 500: the last read starts 1.25 s in.
	if rec := simtest.LastUpload(t, d); rec.Bytes != 3000 || rec.Duration < time.Second {
		t.Errorf("record: %d bytes in %v", rec.Bytes, rec.Duration)
	}
}
