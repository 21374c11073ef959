package form

import (
	"bytes"
	"mime/multipart"
	"net/textproto"
	"testing"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// variant is one build of a form personality.
type variant struct {
	name string
	p    core.Personality
	chip string
}

var variants = []variant{
	{"hus-esp32", HTTPUpdateServer, ""},
	{"hus-esp8266", HTTPUpdateServer, "esp8266"},
	{"espeasy-esp32", ESPEasy, ""},
	{"espeasy-esp8266", ESPEasy, "esp8266"},
}

func (v variant) esp8266() bool { return v.chip == "esp8266" }

func (v variant) config() core.Config {
	c := simtest.Config(v.p)
	c.Chip = v.chip
	return c
}

// image is an image of version the variant installs: an esp32s3 image,
// which tells its version, for both (the ESP8266 Updater checks only the
// magic byte, as the espota personality's tests rely on too).
func (v variant) image(t *testing.T, version string) []byte { return simtest.Image(t, version) }

// form is a multipart body with one file part, as curl -F and Go's
// CreateFormFile write it.
func form(t testing.TB, field, filename string, data []byte) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	var err error
	if filename == "" {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="`+field+`"`)
		pw, e := w.CreatePart(h)
		if e == nil {
			_, e = pw.Write(data)
		}
		err = e
	} else {
		pw, e := w.CreateFormFile(field, filename)
		if e == nil {
			_, e = pw.Write(data)
		}
		err = e
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), w.FormDataContentType()
}

// upload posts a form with one file part to /update, with Origin matching
// Host (what a browser sends).
func upload(t *testing.T, d *core.Device, field string, data []byte, extra map[string]string) simtest.Reply {
	t.Helper()
	body, ct := form(t, field, "fw.bin", data)
	h := map[string]string{"Content-Type": ct, "Origin": "http://" + d.OTAAddr()}
	for k, v := range extra {
		h[k] = v
	}
	return simtest.RawPost(t, d.OTAAddr(), "POST", "/update", h, body)
}

// filler is n bytes that are no image (first byte 0x00).
func filler(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + 7)
	}
	b[0] = 0
	return b
}
