package elegantota

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestPage: GET /update is gzip whatever the client accepts, titled
// "ElegantOTA Lite"; the probes answer as each server does.
func TestPage(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			for _, path := range []string{"/update", "/update/identity"} {
				r := simtest.RawPost(t, d.OTAAddr(), "GET", path, nil, nil)
				if path == "/update/identity" && !v.async {
					if r.Status != 404 || r.Body != "Not found: /update/identity" || r.CType != "text/html" {
						t.Errorf("sync %s: %d %q", path, r.Status, r.Body)
					}
					continue
				}
				if r.Status != 200 || r.CType != "text/html" || r.Header.Get("Content-Encoding") != "gzip" {
					t.Fatalf("%s: %d %q %v", path, r.Status, r.CType, r.Header)
				}
				zr, err := gzip.NewReader(strings.NewReader(r.Body))
				if err != nil {
					t.Fatal(err)
				}
				html, _ := io.ReadAll(zr)
				if !bytes.Contains(html, []byte("<title>ElegantOTA Lite</title>")) {
					t.Errorf("%s: page %q", path, html)
				}
			}
			notFound := simtest.Reply{Status: 404, CType: "text/html", Body: "Not found: /update"}
			root := "Hi! This is ElegantOTA Demo."
			if v.async {
				notFound = simtest.Reply{Status: 404, CType: "text/plain", Body: "Not found"}
				root = "Hi! This is ElegantOTA AsyncDemo."
			}
			if r := simtest.RawPost(t, d.OTAAddr(), "OPTIONS", "/update", nil, nil); r.Status != notFound.Status || r.CType != notFound.CType || r.Body != notFound.Body {
				t.Errorf("OPTIONS /update: %d %q %q", r.Status, r.CType, r.Body)
			}
			if r := simtest.RawPost(t, d.OTAAddr(), "GET", "/", nil, nil); r.Status != 200 || r.Body != root || r.CType != "text/plain" {
				t.Errorf("GET /: %d %q", r.Status, r.Body)
			}
		})
	}
}

// TestFlow: /ota/start, then /ota/upload: 200 "OK", and the restart 2 s
// later (scaled) into the new image.
func TestFlow(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			img := simtest.Image(t, "1.0.1")
			if r := start(t, d, img, nil); r.Status != 200 || r.Body != "OK" || r.CType != "text/plain" {
				t.Fatalf("start: %d %q", r.Status, r.Body)
			}
			r := send(t, d, img, nil)
			if r.Status != 200 || r.Body != "OK" {
				t.Fatalf("upload: %d %q %v", r.Status, r.Body, r.ReadErr)
			}
			if got := r.Header.Get("Access-Control-Allow-Origin"); (got == "*") != v.async {
				t.Errorf("Access-Control-Allow-Origin %q", got)
			}
			st, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1")
			if err != nil {
				t.Fatal(err)
			}
			if u := st.Uploads[0]; u.Outcome != "ok" || u.Status != 200 || u.Path != "/ota/upload" {
				t.Errorf("record: %+v", u)
			}
		})
	}
}

// TestAnswers: the 400 bodies, per build.
func TestAnswers(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			r := simtest.RawPost(t, d.OTAAddr(), "GET", "/ota/start?mode=fr&hash=abc", nil, nil)
			if r.Status != 400 || r.Body != "MD5 parameter invalid" || r.CType != "text/plain" {
				t.Errorf("short hash: %d %q", r.Status, r.Body)
			}
			cases := []struct {
				name     string
				img      []byte
				esp32    string
				esp8266  string
				asyncE32 string // the async ESP32 body, when it differs
			}{
				{"not an image", filler(20000), "Decryption error", "ERROR[10]: Magic byte is not 0xE9", "-"},
				{"4096 bytes", append([]byte{0xE9}, filler(4095)[1:]...), "Could Not Activate The Firmware", "ERROR[13]: No data supplied", ""},
			}
			for _, c := range cases {
				if r := start(t, d, c.img, nil); r.Status != 200 {
					t.Fatalf("%s: start: %d %q", c.name, r.Status, r.Body)
				}
				want := v.errBody(c.esp32)
				switch {
				case v.esp8266():
					want = v.errBody(c.esp8266)
				case v.async && c.asyncE32 == "-":
					// The chunk write failed: the async handler answers
					// with _update_error_str, never set so far.
					want = ""
				}
				r := send(t, d, c.img, nil)
				if r.Status != 400 || r.Body != want {
					t.Errorf("%s: %d %q, want 400 %q", c.name, r.Status, r.Body, want)
				}
			}
			if st := d.State(); st.BootCount != 1 || st.Version != "1.0.0" {
				t.Errorf("state: %+v", st)
			}
		})
	}
}

// TestSilentOK: /ota/upload without /ota/start writes nothing, answers 200
// "OK" and restarts into the image the device runs; after a failure it
// answers 400 with that failure's text instead.
func TestSilentOK(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			var ev simtest.EventLog
			cfg := v.config()
			cfg.OnEvent = ev.Add
			d := simtest.Start(t, cfg)
			if r := send(t, d, simtest.Image(t, "1.0.1"), nil); r.Status != 200 || r.Body != "OK" {
				t.Fatalf("upload: %d %q", r.Status, r.Body)
			}
			st := simtest.WaitUploads(t, d, 1)
			if u := st.Uploads[0]; u.Outcome != "discarded" || u.Status != 200 {
				t.Errorf("record: %+v", u)
			}
			ev.WaitCount(t, core.EventReboot, 1)
			st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.Up && s.BootCount == 2 })
			if err != nil || st.Version != "1.0.0" {
				t.Fatalf("after the silent 200: %+v %v", st, err)
			}
			// A failure, then an upload without /ota/start: the stale error.
			bad := filler(20000)
			start(t, d, bad, nil)
			first := send(t, d, bad, nil)
			r := send(t, d, simtest.Image(t, "1.0.1"), nil)
			if r.Status != 400 || r.Body != first.Body {
				t.Errorf("after a failure: %d %q, want 400 %q", r.Status, r.Body, first.Body)
			}
		})
	}
}

// TestNoLoop: a sketch that never calls ElegantOTA.loop() answers the
// upload and never restarts.
func TestNoLoop(t *testing.T) {
	cfg := variants[0].config()
	cfg.NoLoop = true
	d := simtest.Start(t, cfg)
	img := simtest.Image(t, "1.0.1")
	start(t, d, img, nil)
	if r := send(t, d, img, nil); r.Status != 200 || r.Body != "OK" {
		t.Fatalf("upload: %d %q", r.Status, r.Body)
	}
	time.Sleep(100 * time.Millisecond) // five times the scaled 2 s
	if st := d.State(); st.BootCount != 1 || st.Version != "1.0.0" || st.Boot == st.Running {
		t.Errorf("state: %+v", st)
	}
}

// TestStaysBegun: an upload broken off leaves the update begun; a second
// /ota/start answers 200 "OK" and changes nothing, and the next upload
// carries on the old stream at its old offset.
func TestStaysBegun(t *testing.T) {
	for _, v := range []variant{variants[0], variants[2]} {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			img := simtest.Image(t, "1.0.1")
			if r := start(t, d, img, nil); r.Body != "OK" {
				t.Fatalf("start: %q", r.Body)
			}
			var b bytes.Buffer
			fmt.Fprintf(&b, "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n")
			b.Write(img)
			b.WriteString("\r\n--XX--\r\n")
			c, err := net.Dial("tcp", d.OTAAddr())
			if err != nil {
				t.Fatal(err)
			}
			half := b.Len() / 2
			fmt.Fprintf(c, "POST /ota/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: %d\r\n\r\n", b.Len())
			c.Write(b.Bytes()[:half])
			time.Sleep(50 * time.Millisecond)
			c.Close()
			if r := start(t, d, img, nil); r.Status != 200 || r.Body != "OK" {
				t.Fatalf("second start: %d %q", r.Status, r.Body)
			}
			r := send(t, d, img, nil)
			if want := v.errBody("Could Not Activate The Firmware"); r.Status != 400 || r.Body != want {
				t.Errorf("upload after the broken one: %d %q, want 400 %q", r.Status, r.Body, want)
			}
			st := simtest.WaitUploads(t, d, 1)
			if u := st.Uploads[0]; u.Bytes <= int64(len(img)) || u.Outcome != "failed" {
				t.Errorf("the stream did not carry on: %+v (image %d bytes)", u, len(img))
			}
		})
	}
}

// TestAuth: sync builds challenge Basic, async Digest; either answer works.
func TestAuth(t *testing.T) {
	for _, v := range []variant{variants[0], variants[2]} {
		t.Run(v.name, func(t *testing.T) {
			cfg := v.config()
			cfg.Username, cfg.Password = "admin", auth.NewSecret("s3cret")
			d := simtest.Start(t, cfg)
			img := simtest.Image(t, "1.0.1")
			r := simtest.RawPost(t, d.OTAAddr(), "GET", "/update", nil, nil)
			ch := r.Header.Get("WWW-Authenticate")
			if r.Status != 401 || r.Body != "" {
				t.Fatalf("no credentials: %d %q", r.Status, r.Body)
			}
			if v.async != strings.HasPrefix(ch, `Digest realm="Login Required", qop="auth", nonce="`) ||
				!v.async && ch != `Basic realm="Login Required"` {
				t.Errorf("challenge %q", ch)
			}
			if r := start(t, d, img, nil); r.Status != 401 {
				t.Errorf("start without credentials: %d", r.Status)
			}
			basic := map[string]string{"Authorization": "Basic YWRtaW46czNjcmV0"}
			if r := start(t, d, img, basic); r.Status != 200 {
				t.Fatalf("start with Basic: %d %q", r.Status, r.Body)
			}
			h := basic
			if v.async {
				h = map[string]string{"Authorization": digest("admin", "s3cret", "Login Required", "POST", "/ota/upload", "0123456789abcdef0123456789abcdef")}
			}
			if r := send(t, d, img, h); r.Status != 200 || r.Body != "OK" {
				t.Fatalf("upload: %d %q", r.Status, r.Body)
			}
			if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("sync upload without credentials still writes", func(t *testing.T) {
		cfg := variants[0].config()
		cfg.Username, cfg.Password = "admin", auth.NewSecret("s3cret")
		d := simtest.Start(t, cfg)
		img := simtest.Image(t, "1.0.1")
		start(t, d, img, map[string]string{"Authorization": "Basic YWRtaW46czNjcmV0"})
		if r := send(t, d, img, nil); r.Status != 401 {
			t.Fatalf("upload without credentials: %d %q", r.Status, r.Body)
		}
		st := d.State()
		if st.Boot == st.Running || simtest.Slot(st, st.Boot).Version != "1.0.1" || st.BootCount != 1 {
			t.Errorf("the begun update took the bytes: %+v", st)
		}
	})
}

// digest is an RFC 2617 answer with qop=auth.
func digest(user, pass, realm, method, uri, nonce string) string {
	h := func(s string) string { x := md5.Sum([]byte(s)); return hex.EncodeToString(x[:]) }
	ha1, ha2 := h(user+":"+realm+":"+pass), h(method+":"+uri)
	resp := h(ha1 + ":" + nonce + ":00000001:abcdef:auth:" + ha2)
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", qop=auth, nc=00000001, cnonce="abcdef", response="%s", opaque="x"`,
		user, realm, nonce, uri, resp)
}

// TestExtensions: a sketch that adds GET /ota/status (Config.Extensions).
func TestExtensions(t *testing.T) {
	cfg := variants[2].config()
	cfg.Extensions = true
	cfg.Omit = []string{"ota-status.elf_sha256"}
	d := simtest.Start(t, cfg)
	code, body, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/ota/status")
	if err != nil || code != 200 || !strings.Contains(body, `"version":"1.0.0"`) || strings.Contains(body, "elf_sha256") {
		t.Errorf("/ota/status: %d %q %v", code, body, err)
	}
}

// TestContinue: the async server answers "Expect: 100-continue" before the
// body; the sync servers never do (curl waits its second, then sends).
func TestContinue(t *testing.T) {
	for _, v := range []variant{variants[0], variants[2]} {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			c, err := net.Dial("tcp", d.OTAAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /ota/upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 25)
			n, err := io.ReadFull(c, buf)
			if got := string(buf[:n]); v.async && got != "HTTP/1.1 100 Continue\r\n\r\n" || !v.async && (n != 0 || !isTimeout(err)) {
				t.Errorf("before the body: %q %v", got, err)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

// TestFilesystem: mode=fs begins the filesystem (ESP32: the spiffs
// partition; ESP8266: the FS area); the upload writes it and the sketch
// restarts on the image it runs.
func TestFilesystem(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			var ev simtest.EventLog
			cfg := v.config()
			cfg.OnEvent = ev.Add
			d := simtest.Start(t, cfg)
			fs := filler(64 << 10)
			if r := simtest.RawPost(t, d.OTAAddr(), "GET", "/ota/start?mode=fs&hash="+md5hex(fs), nil, nil); r.Status != 200 || r.Body != "OK" {
				t.Fatalf("start: %d %q", r.Status, r.Body)
			}
			if r := send(t, d, fs, nil); r.Status != 200 || r.Body != "OK" {
				t.Fatalf("upload: %d %q", r.Status, r.Body)
			}
			ev.WaitCount(t, core.EventReboot, 1)
			st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.Up && s.BootCount == 2 })
			if err != nil {
				t.Fatal(err)
			}
			if st.Version != "1.0.0" || st.Filesystem == nil || st.Filesystem.Size != len(fs) {
				t.Errorf("state: %+v %+v", st, st.Filesystem)
			}
		})
	}
}
