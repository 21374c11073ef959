package cmd

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ots-ota/ots-ota/detect"
	"github.com/ots-ota/ots-ota/sim"
)

// webUploader is a loopback fake of an ESP8266HTTPUpdateServer sketch (its
// GET form, its OPTIONS route, 200 "Update error" to anything posted)
// that records every request.
type webUploader struct {
	mu   sync.Mutex
	reqs []string // "METHOD target"
	refs []bool   // each request carried a Referer
	auth []string // Authorization headers seen
	body int64    // bytes of request bodies received
	port int
}

func startWebUploader(t *testing.T) *webUploader {
	t.Helper()
	u := &webUploader{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Method+" "+r.RequestURI)
		u.refs = append(u.refs, r.Header.Get("Referer") != "")
		if a := r.Header.Get("Authorization"); a != "" {
			u.auth = append(u.auth, a)
		}
		u.body += n
		u.mu.Unlock()
		switch r.Method + " " + r.URL.Path {
		case "GET /update":
			_, _ = io.WriteString(w, "<form method='POST' action='' enctype='multipart/form-data'>Firmware:<br><input type='file' accept='.bin,.bin.gz' name='firmware'><input type='submit' value='Update Firmware'></form>")
		case "OPTIONS /update":
			w.Header().Set("Access-Control-Allow-Origin", "*")
			_, _ = io.WriteString(w, "y")
		case "POST /update":
			_, _ = io.WriteString(w, "Update error: ERROR[13]: No data supplied\n")
		default:
			http.NotFound(w, r)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return u
}

func (u *webUploader) seen() (reqs []string, refs []bool, auth []string, body int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.reqs...), append([]bool(nil), u.refs...), append([]string(nil), u.auth...), u.body
}

// TestPushRefusesUnspokenFamily: push to an ESP8266HTTPUpdateServer, as a
// URL, as HOST:PORT, with --protocol http and with the inventory's
// protocol: http, never sends a raw body (issue 17; before, push sent the
// raw image and then claimed the device "may have rebooted into it").
// Since issue 18 the family is spoken (protocol form) and its OPTIONS
// /update tells the chip: the ESP32-S3 image is refused for that ESP8266
// before anything is sent: no POST, no body, no credentials on the
// probes; outcome refused, exit 1.
func TestPushRefusesUnspokenFamily(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	for _, tc := range []struct {
		name   string
		config string
		args   func(port string) []string
	}{
		{"url", "", func(p string) []string { return []string{"http://127.0.0.1:" + p + "/update"} }},
		{"host:port", "", func(p string) []string { return []string{"127.0.0.1:" + p} }},
		{"--protocol http", "", func(p string) []string { return []string{"--protocol", "http", "127.0.0.1:" + p} }},
		{"dry run", "", func(p string) []string { return []string{"--dry-run", "127.0.0.1:" + p} }},
		{"inventory http", "inventory: {devices: [{name: garage, address: 127.0.0.1, port: PORT, protocol: http}]}",
			func(string) []string { return []string{"--inventory-only", "garage"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := startWebUploader(t)
			port := strconv.Itoa(u.port)
			args := append(append([]string{"--json", "--password", "s3cret-pw-17", "--web-port", port}, pushFast...), fw)
			args = append(args, tc.args(port)...)
			code, out, errOut := runPushCmd(t, strings.ReplaceAll(tc.config, "PORT", port), args...)
			if code != ExitFailed {
				t.Errorf("exit %d, want %d\n%s\n%s", code, ExitFailed, out, errOut)
			}
			var res struct {
				Type, Outcome, Message, Protocol string
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var r struct{ Type, Outcome, Message, Protocol string }
				if json.Unmarshal([]byte(line), &r) == nil && r.Type == "result" {
					res = r
				}
			}
			if res.Outcome != "refused" || res.Protocol != "form" ||
				!strings.Contains(res.Message, "the device is esp8266 (its OPTIONS /update answers as ESP8266HTTPUpdateServer does)") {
				t.Errorf("result %+v\n%s", res, out)
			}
			reqs, refs, auth, body := u.seen()
			for i, r := range reqs {
				m, target, _ := strings.Cut(r, " ")
				if !detect.Allowed(detect.Probe{Kind: detect.KindHTTP, Method: m, Target: target, Referer: refs[i]}) {
					t.Errorf("push sent %s to a device it refused", r)
				}
			}
			if len(auth) != 0 || body != 0 {
				t.Errorf("the device got credentials %q and %d body bytes; want none", auth, body)
			}
			if len(reqs) == 0 {
				t.Errorf("the device was never asked: the test shows nothing")
			}
		})
	}
}

// TestPushProtocolBeatsInventory: --protocol wins over the inventory's
// protocol: (docs/protocols §1): an inventory entry that says espota, for
// a seed device, given --protocol http, is updated over http.
func TestPushProtocolBeatsInventory(t *testing.T) {
	tm := sim.FastTiming()
	d, err := sim.Start(context.Background(), sim.Config{Personality: sim.Seed, Extensions: true, Timing: &tm, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	_, ota, _ := net.SplitHostPort(d.OTAAddr())
	_, web, _ := net.SplitHostPort(d.WebAddr())
	fw := writeTestFirmware(t, "1.0.1")
	args := append(append([]string{"--json", "--web-port", web, "--protocol", "http"}, pushFast...), fw, "--inventory-only", "garage")
	code, out, errOut := runPushCmd(t, "inventory: {devices: [{name: garage, address: 127.0.0.1, port: "+ota+", protocol: espota}]}", args...)
	var res struct{ Type, Outcome, Message, Protocol string }
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct{ Type, Outcome, Message, Protocol string }
		if json.Unmarshal([]byte(line), &r) == nil && r.Type == "result" {
			res = r
		}
	}
	if code != ExitOK || res.Protocol != "http" || res.Outcome != "updated" {
		t.Errorf("exit %d, result %+v\n%s\n%s", code, res, out, errOut)
	}
	if n := len(d.State().Uploads); n != 1 {
		t.Errorf("the device got %d uploads, want 1", n)
	}
}
