package tasmota

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// variant is one Tasmota build the tests run.
type variant struct {
	name     string
	chip     string
	safeboot bool
}

var variants = []variant{
	{"esp8266", "esp8266", false},
	{"esp32", "esp32", false},
	{"esp32-safeboot", "esp32", true},
}

func (v variant) config() core.Config {
	c := simtest.Config(Tasmota)
	c.Chip, c.Safeboot = v.chip, v.safeboot
	return c
}

func (v variant) image(t testing.TB, name, version string, size int) []byte {
	t.Helper()
	b, err := Image(v.chip, name, version, size)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reply is an answer as a client read it.
type reply struct {
	code   int
	body   string
	header http.Header
	err    error
}

// referer is the Referer a careful client sends: the device's address.
func referer(d *core.Device) string { return "http://" + d.IP().String() + "/" }

// do sends one request with Go's client (fresh connection); hdr "" values
// are left out.
func do(t testing.TB, method, u string, body io.Reader, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: string(b), header: resp.Header, err: err}
}

// cm runs a command over /cm with the Referer.
func cm(t testing.TB, d *core.Device, cmnd string) reply {
	t.Helper()
	return do(t, "GET", "http://"+d.OTAAddr()+"/cm?cmnd="+url.QueryEscape(cmnd), nil, map[string]string{"Referer": referer(d)})
}

// status2 is Status 2's StatusFWR.
func status(t testing.TB, d *core.Device, n string) map[string]map[string]any {
	t.Helper()
	r := cm(t, d, "Status "+n)
	if r.err != nil || r.code != 200 {
		t.Fatalf("Status %s: %d %v %q", n, r.code, r.err, r.body)
	}
	var m map[string]map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("Status %s is no JSON: %v\n%s", n, err, r.body)
	}
	return m
}

func version(t testing.TB, d *core.Device) string {
	t.Helper()
	v, _ := status(t, d, "2")["StatusFWR"]["Version"].(string)
	return v
}

// waitVersion polls Status 2 (the device restarts on its own schedule)
// until Version is want.
func waitVersion(t testing.TB, d *core.Device, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		if st := d.State(); st.Up {
			r := cm(t, d, "Status 2")
			var m map[string]map[string]any
			if r.err == nil && json.Unmarshal([]byte(r.body), &m) == nil {
				last, _ = m["StatusFWR"]["Version"].(string)
				if last == want {
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("Version %q, want %q", last, want)
}

// form is a multipart body with one file part named u2.
func form(t testing.TB, filename string, data []byte) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	pw, err := w.CreateFormFile("u2", filename)
	if err == nil {
		_, err = pw.Write(data)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), w.FormDataContentType()
}

// upload is the UI's sequence: GET /up, then POST /u2?fsz=N, both with
// the Referer (and extra headers).
func upload(t testing.TB, d *core.Device, data []byte, extra map[string]string) reply {
	t.Helper()
	hdr := map[string]string{"Referer": referer(d)}
	for k, v := range extra {
		hdr[k] = v
	}
	if r := do(t, "GET", "http://"+d.OTAAddr()+"/up", nil, hdr); r.code != 200 {
		t.Fatalf("/up: %d %v", r.code, r.err)
	}
	body, ct := form(t, "fw.bin", data)
	hdr["Content-Type"] = ct
	return do(t, "POST", "http://"+d.OTAAddr()+"/u2?fsz="+strconv.Itoa(len(data)), bytes.NewReader(body), hdr)
}

// rebooted waits until d booted again and serves.
func rebooted(t testing.TB, d *core.Device, boots int) core.State {
	t.Helper()
	st, err := d.WaitState(simtest.Ctx(t, 15*time.Second), func(s core.State) bool { return s.BootCount > boots && s.Up })
	if err != nil {
		t.Fatalf("no reboot: %v", err)
	}
	return st
}
