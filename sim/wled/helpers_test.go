package wled

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/textproto"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// variant is one WLED build the tests run.
type variant struct {
	name, version, chip string
}

var variants = []variant{
	{"0.15.5-esp32", "0.15.5", "esp32"},
	{"16.0.1-esp32", "16.0.1", "esp32"},
	{"0.15.5-esp8266", "0.15.5", "esp8266"},
	{"16.0.1-esp8266", "16.0.1", "esp8266"},
}

func (v variant) config() core.Config {
	c := simtest.Config(WLED)
	c.Version, c.Chip = v.version, v.chip
	return c
}

func (v variant) line16() bool { return v.version[0] != '0' }

// image is a build for the variant's chip and release (o's fields win).
func (v variant) image(t testing.TB, o ImageOptions) []byte {
	t.Helper()
	if o.Chip == "" {
		o.Chip = v.chip
	}
	b, err := Image(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// part is one multipart part; a file when filename is set.
type part struct {
	name, filename string
	data           []byte
}

func file(data []byte) part { return part{"update", "fw.bin", data} }

func field(name, value string) part { return part{name: name, data: []byte(value)} }

// form is a multipart body with the parts in order, as curl -F writes it.
func form(t testing.TB, parts ...part) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		if p.filename != "" {
			h.Set("Content-Disposition", `form-data; name="`+p.name+`"; filename="`+p.filename+`"`)
			h.Set("Content-Type", "application/octet-stream")
		} else {
			h.Set("Content-Disposition", `form-data; name="`+p.name+`"`)
		}
		pw, err := w.CreatePart(h)
		if err == nil {
			_, err = pw.Write(p.data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), w.FormDataContentType()
}

// post sends a multipart POST to path on d.
func post(t testing.TB, d *core.Device, path string, parts ...part) simtest.Reply {
	t.Helper()
	body, ct := form(t, parts...)
	return simtest.RawPost(t, d.OTAAddr(), "POST", path, map[string]string{"Content-Type": ct}, body)
}

// info reads /json/info.
func info(t testing.TB, d *core.Device) map[string]any {
	t.Helper()
	code, body, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/json/info")
	if err != nil || code != 200 {
		t.Fatalf("/json/info: %d %v", code, err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("/json/info is no JSON: %v\n%s", err, body)
	}
	return m
}

// rebooted waits until d booted again after the upload and serves.
func rebooted(t testing.TB, d *core.Device, boots int) core.State {
	t.Helper()
	st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.BootCount > boots && s.Up })
	if err != nil {
		t.Fatalf("no reboot: %v", err)
	}
	return st
}

// page is the message page's text part: head and sub line.
func page(head, sub string) string { return head + "</h2>" + sub }
