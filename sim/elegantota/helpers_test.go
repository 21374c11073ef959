package elegantota

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"mime/multipart"
	"testing"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// variant is one build of the sketch.
type variant struct {
	name  string
	async bool
	chip  string
}

var variants = []variant{
	{"sync-esp32", false, ""},
	{"sync-esp8266", false, "esp8266"},
	{"async-esp32", true, ""},
	{"async-esp8266", true, "esp8266"},
}

func (v variant) esp8266() bool { return v.chip == "esp8266" }

func (v variant) config() core.Config {
	c := simtest.Config(ElegantOTA)
	c.Chip, c.Async = v.chip, v.async
	return c
}

// errBody is the 400 body for an Update error text: printError's line
// end, then ElegantOTA's "\n".
func (v variant) errBody(text string) string {
	if v.esp8266() {
		return text + "\n\n"
	}
	return text + "\r\n\n"
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// start is GET /ota/start?mode=fr&hash=MD5.
func start(t *testing.T, d *core.Device, img []byte, h map[string]string) simtest.Reply {
	t.Helper()
	return simtest.RawPost(t, d.OTAAddr(), "GET", "/ota/start?mode=fr&hash="+md5hex(img), h, nil)
}

// send is POST /ota/upload with the file as field "file", as the page sends it.
func send(t *testing.T, d *core.Device, img []byte, h map[string]string) simtest.Reply {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	pw, _ := w.CreateFormFile("file", "firmware.bin")
	pw.Write(img)
	w.Close()
	hh := map[string]string{"Content-Type": w.FormDataContentType()}
	for k, v := range h {
		hh[k] = v
	}
	return simtest.RawPost(t, d.OTAAddr(), "POST", "/ota/upload", hh, b.Bytes())
}

func filler(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + 7)
	}
	b[0] = 0
	return b
}
