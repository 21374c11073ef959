package form

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestPages: GET /update is each library's form, byte for byte where
// detection looks (the inputs), and the probes a client may send answer as
// the servers do.
func TestPages(t *testing.T) {
	type probe struct {
		method, path string
		code         int
		ctype, body  string
	}
	cases := []struct {
		v      variant
		fsForm string // the filesystem input, "" = none
		probes []probe
	}{
		{variants[0], "<input type='file' accept='.bin,.bin.gz,.image' name='filesystem'>", []probe{
			{"OPTIONS", "/update", 404, "text/html", "Not found: /update"},
			{"GET", "/update/identity", 404, "text/html", "Not found: /update/identity"},
			{"GET", "/json", 404, "text/html", "Not found: /json"},
			{"GET", "/ota/status", 404, "text/html", "Not found: /ota/status"},
		}},
		{variants[1], "<input type='file' accept='.bin,.bin.gz' name='filesystem'>", []probe{
			{"OPTIONS", "/update", 200, "text/html", "y"},
			{"GET", "/?x=1", 404, "text/html", "Not found: /"},
		}},
		{variants[2], "", []probe{
			{"OPTIONS", "/update", 404, "text/plain", "URI: /update\nMethod: GET\nArguments: 0"},
			{"GET", "/nope?a=1&b=2", 404, "text/plain", "URI: /nope\nMethod: GET\nArguments: 2"},
		}},
		{variants[3], "<input type='file' accept='.bin,.bin.gz' name='filesystem'>", []probe{
			{"OPTIONS", "/update", 200, "text/html", "y"},
		}},
	}
	for _, c := range cases {
		t.Run(c.v.name, func(t *testing.T) {
			d := simtest.Start(t, c.v.config())
			r := simtest.RawPost(t, d.OTAAddr(), "GET", "/update", nil, nil)
			if r.Status != 200 || r.CType != "text/html" {
				t.Fatalf("GET /update: %d %q", r.Status, r.CType)
			}
			if !strings.HasPrefix(r.Body, "<!DOCTYPE html>\n     <html lang='en'>") ||
				!strings.Contains(r.Body, "<form method='POST' action='' enctype='multipart/form-data'>") ||
				!strings.Contains(r.Body, "<input type='file' accept='.bin,.bin.gz' name='firmware'>") {
				t.Errorf("page: %q", r.Body)
			}
			if got := strings.Contains(r.Body, "name='filesystem'"); got != (c.fsForm != "") || c.fsForm != "" && !strings.Contains(r.Body, c.fsForm) {
				t.Errorf("filesystem input: want %q in %q", c.fsForm, r.Body)
			}
			for _, p := range c.probes {
				r := simtest.RawPost(t, d.OTAAddr(), p.method, p.path, nil, nil)
				if r.Status != p.code || r.CType != p.ctype || r.Body != p.body {
					t.Errorf("%s %s: %d %q %q, want %d %q %q", p.method, p.path, r.Status, r.CType, r.Body, p.code, p.ctype, p.body)
				}
				if p.body == "y" && (r.Header.Get("Access-Control-Allow-Origin") != "*" || r.Header.Get("Access-Control-Allow-Headers") != "*") {
					t.Errorf("OPTIONS: CORS headers missing: %v", r.Header)
				}
			}
		})
	}
}

// TestAnswers: the body and status of every outcome, per variant, and what
// the device runs afterwards.
func TestAnswers(t *testing.T) {
	slot := int64(core.ArduinoAppSlotSize)
	type outcome struct {
		name    string
		img     func(t *testing.T) []byte
		esp32   string // the answer's body on arduino-esp32; "" = success
		esp8266 string
	}
	outcomes := []outcome{
		{"success", func(t *testing.T) []byte { return simtest.Image(t, "1.0.1") }, "", ""},
		{"not an image", func(*testing.T) []byte { return filler(20000) },
			"Update error: Decryption error\r\n", "Update error: ERROR[10]: Magic byte is not 0xE9\n"},
		{"4096 bytes", func(*testing.T) []byte { b := filler(4096); b[0] = 0xE9; return b },
			"Update error: Could Not Activate The Firmware\r\n", "Update error: ERROR[13]: No data supplied\n"},
		{"small, not an image", func(*testing.T) []byte { return filler(1000) },
			"Update error: Flash Read Failed\r\n", "Update error: ERROR[13]: No data supplied\n"},
		{"wrong chip", func(t *testing.T) []byte { return simtest.ImageOf(t, "esp32c3", "1.0.1", 0) },
			"Update error: Could Not Activate The Firmware\r\n", ""},
		{"larger than the sketch space", func(t *testing.T) []byte { b := filler(int(slot - 4096 + 1)); b[0] = 0xE9; return b },
			"Update error: Not Enough Space\r\n", "Update error: ERROR[4]: Not Enough Space\n"},
	}
	for _, v := range variants {
		for _, o := range outcomes {
			t.Run(v.name+"/"+o.name, func(t *testing.T) {
				cfg := v.config()
				cfg.SlotSize = slot
				var ev simtest.EventLog
				cfg.OnEvent = ev.Add
				d := simtest.Start(t, cfg)
				want := o.esp32
				if v.esp8266() {
					want = o.esp8266
				}
				r := upload(t, d, "firmware", o.img(t), nil)
				if want == "" {
					if r.Status != 200 || r.Body != textSuccess || r.CType != "text/html" {
						t.Fatalf("got %d %q %v", r.Status, r.Body, r.ReadErr)
					}
					if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
						t.Fatal(err)
					}
					ev.WaitCount(t, core.EventReboot, 1)
					if u := simtest.LastUpload(t, d); u.Outcome != "ok" || u.Status != 200 || u.Text != textSuccess {
						t.Errorf("record: %+v", u)
					}
					return
				}
				if r.Status != 200 || r.Body != want || r.CType != "text/html" {
					t.Fatalf("got %d %q %v, want 200 %q", r.Status, r.Body, r.ReadErr, want)
				}
				st := simtest.WaitUploads(t, d, 1)
				if u := st.Uploads[0]; u.Outcome != "failed" || u.Text != want {
					t.Errorf("record: %+v", u)
				}
				if st.BootCount != 1 || st.Version != "1.0.0" || ev.Count(core.EventReboot) != 0 {
					t.Errorf("a failure restarted or changed the device: %+v", st)
				}
			})
		}
	}
}

// TestHeaders: the answers' header section as each core frames it.
func TestHeaders(t *testing.T) {
	for _, v := range variants[:2] {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			c, err := net.Dial("tcp", d.OTAAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			body, ct := form(t, "firmware", "fw.bin", filler(5000))
			fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: %s\r\nOrigin: http://%s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
				d.OTAAddr(), d.OTAAddr(), ct, len(body))
			c.Write(body)
			br := bufio.NewReader(c)
			var head []string
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if l == "\r\n" {
					break
				}
				head = append(head, strings.TrimRight(l, "\r\n"))
			}
			text := "Update error: Decryption error\r\n"
			want := []string{"HTTP/1.1 200 OK", "Content-Type: text/html", fmt.Sprintf("Content-Length: %d", len(text)), "Connection: close"}
			if v.esp8266() {
				text = "Update error: ERROR[10]: Magic byte is not 0xE9\n"
				want = []string{"HTTP/1.1 200 OK", "Content-Type: text/html", "Access-Control-Allow-Headers: *",
					"Access-Control-Allow-Origin: *", fmt.Sprintf("Content-Length: %d", len(text)), "Connection: keep-alive", "Keep-Alive: timeout=2000"}
			}
			if strings.Join(head, "|") != strings.Join(want, "|") {
				t.Errorf("head:\n%q\nwant\n%q", head, want)
			}
			if v.esp8266() {
				// Kept alive: the next request on the same connection.
				fmt.Fprintf(c, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
				io.CopyN(io.Discard, br, int64(len(text)))
				l, _ := br.ReadString('\n')
				if l != "HTTP/1.1 404 Not Found\r\n" {
					t.Errorf("second request on the connection: %q", l)
				}
			}
		})
	}
}

// TestAuth: credentials on HTTPUpdateServer (Basic, both ways), and none on
// ESPEasy's /update whatever its admin password.
func TestAuth(t *testing.T) {
	for _, v := range variants[:2] {
		t.Run(v.name, func(t *testing.T) {
			cfg := v.config()
			cfg.Username, cfg.Password = "admin", auth.NewSecret("s3cret")
			d := simtest.Start(t, cfg)
			r := simtest.RawPost(t, d.OTAAddr(), "GET", "/update", nil, nil)
			if r.Status != 401 || r.Body != "" || r.Header.Get("WWW-Authenticate") != `Basic realm="Login Required"` {
				t.Errorf("GET without credentials: %d %q %v", r.Status, r.Body, r.Header)
			}
			basic := map[string]string{"Authorization": "Basic YWRtaW46czNjcmV0"} // admin:s3cret
			if r := simtest.RawPost(t, d.OTAAddr(), "GET", "/update", basic, nil); r.Status != 200 {
				t.Errorf("GET with credentials: %d", r.Status)
			}
			for _, h := range []map[string]string{nil, {"Authorization": "Basic YWRtaW46d3Jvbmc="},
				{"Authorization": `Digest username="admin", realm="Login Required", nonce="00", uri="/update", response="00", opaque="00"`}} {
				r := upload(t, d, "firmware", simtest.Image(t, "1.0.1"), h)
				if r.Status != 401 || r.Header.Get("WWW-Authenticate") != `Basic realm="Login Required"` {
					t.Errorf("upload with %v: %d %q", h, r.Status, r.Body)
				}
			}
			st := simtest.WaitUploads(t, d, 3)
			if st.Uploads[0].Outcome != "auth_failed" || st.Version != "1.0.0" {
				t.Errorf("after refused uploads: %+v", st)
			}
			if r := upload(t, d, "firmware", simtest.Image(t, "1.0.1"), basic); r.Status != 200 || r.Body != textSuccess {
				t.Fatalf("upload with credentials: %d %q", r.Status, r.Body)
			}
			if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, v := range variants[2:] {
		t.Run(v.name, func(t *testing.T) {
			cfg := v.config()
			cfg.Password = auth.NewSecret("s3cret")
			d := simtest.Start(t, cfg)
			r := simtest.RawPost(t, d.OTAAddr(), "GET", "/", nil, nil)
			if h := r.Header.Get("WWW-Authenticate"); r.Status != 401 || !strings.HasPrefix(h, `Digest realm="Login Required (default user: admin)", qop="auth", nonce="`) {
				t.Errorf("GET /: %d %q", r.Status, h)
			}
			if code, _, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/json"); err != nil || code != 200 {
				t.Errorf("/json: %d %v", code, err)
			}
			if r := upload(t, d, "firmware", simtest.Image(t, "1.0.1"), nil); r.Status != 200 || r.Body != textSuccess {
				t.Fatalf("upload without credentials: %d %q", r.Status, r.Body)
			}
			if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOrigin: arduino-esp32's HTTPUpdateServer compares Origin with
// "http://" + Host (the CSRF fix), unless the build predates it; the
// ESP8266 library and ESPEasy's copy check nothing.
func TestOrigin(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
	cases := []struct {
		name     string
		v        variant
		noCheck  bool
		creds    bool
		origin   string // "-" = none
		code     int
		body     string
		installs bool
	}{
		{"no origin", variants[0], false, false, "-", 200, textWrongOrigin, false},
		{"foreign origin", variants[0], false, false, "http://evil.example", 200, textWrongOrigin, false},
		{"origin without port", variants[0], false, false, "http://127.0.0.1", 200, textWrongOrigin, false},
		{"with credentials, no origin", variants[0], false, true, "-", 401, "", false},
		{"matching origin", variants[0], false, false, "", 200, textSuccess, true},
		{"before the fix", variants[0], true, false, "-", 200, textSuccess, true},
		{"esp8266", variants[1], false, false, "-", 200, textSuccess, true},
		{"espeasy esp32", variants[2], false, false, "http://evil.example", 200, textSuccess, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.v.config()
			cfg.NoOriginCheck = c.noCheck
			h := map[string]string{}
			if c.creds {
				cfg.Username, cfg.Password = "admin", auth.NewSecret("s3cret")
				h["Authorization"] = "Basic YWRtaW46czNjcmV0"
			}
			d := simtest.Start(t, cfg)
			if c.origin != "" {
				h["Origin"] = strings.TrimPrefix(c.origin, "-")
			}
			r := upload(t, d, "firmware", img, h)
			if r.Status != c.code || r.Body != c.body {
				t.Fatalf("got %d %q, want %d %q", r.Status, r.Body, c.code, c.body)
			}
			st := simtest.WaitUploads(t, d, 1)
			if c.installs {
				if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
					t.Fatal(err)
				}
			} else if st.Uploads[0].Outcome != "auth_failed" || st.Slots[len(st.Slots)-1].Version != "" {
				t.Errorf("refused upload: %+v", st)
			}
		})
	}
}

// TestFilesystem: a part named "filesystem" goes to the filesystem on each
// core; ESPEasy's ESP32 build writes nothing and restarts all the same.
func TestFilesystem(t *testing.T) {
	fsImg := filler(64 << 10)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			var ev simtest.EventLog
			cfg := v.config()
			cfg.OnEvent = ev.Add
			d := simtest.Start(t, cfg)
			r := upload(t, d, "filesystem", fsImg, nil)
			if r.Status != 200 || r.Body != textSuccess {
				t.Fatalf("got %d %q", r.Status, r.Body)
			}
			ev.WaitCount(t, core.EventReboot, 1)
			st, err := d.WaitState(simtest.Ctx(t, 10*time.Second), func(s core.State) bool { return s.Up && s.BootCount == 2 })
			if err != nil {
				t.Fatal(err)
			}
			if st.Version != "1.0.0" || st.Filesystem == nil {
				t.Fatalf("state: %+v", st)
			}
			wrote := v != variants[2]
			if got := !st.Filesystem.Empty && st.Filesystem.Size == len(fsImg); got != wrote {
				t.Errorf("filesystem written %v, want %v: %+v", got, wrote, st.Filesystem)
			}
			if u := st.Uploads[0]; wrote && u.Outcome != "ok" || !wrote && u.Outcome != "discarded" {
				t.Errorf("record: %+v", u)
			}
		})
	}
}

// TestRawBody is issue 18's symptom: a raw image (no multipart) is read to
// its end and never answered; the connection closes after the receive
// timeout.
func TestRawBody(t *testing.T) {
	for _, v := range []variant{variants[0], variants[1]} {
		t.Run(v.name, func(t *testing.T) {
			cfg := v.config()
			cfg.Timing.RecvTimeout = 300 * time.Millisecond
			d := simtest.Start(t, cfg)
			img := simtest.Image(t, "1.0.1")
			r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", map[string]string{"Content-Type": "application/octet-stream"}, img)
			if r.Status != 0 || r.ReadErr == nil || r.WriteErr != nil {
				t.Fatalf("want no answer after the whole body was taken, got %d %q read %v write %v", r.Status, r.Body, r.ReadErr, r.WriteErr)
			}
			st := simtest.WaitUploads(t, d, 1)
			if u := st.Uploads[0]; u.Outcome != "aborted" || st.Version != "1.0.0" || st.BootCount != 1 {
				t.Errorf("state: %+v", st)
			}
			// A small body is held and reaches the handler: no upload ran,
			// so the library's "authenticated" member is still false (on
			// arduino-esp32 without credentials that reads as a wrong
			// Origin).
			r = simtest.RawPost(t, d.OTAAddr(), "POST", "/update", map[string]string{"Content-Type": "application/json"}, []byte("{}"))
			if want := 401; v.esp8266() && r.Status != want || !v.esp8266() && r.Body != textWrongOrigin {
				t.Errorf("small raw body: %d %q", r.Status, r.Body)
			}
		})
	}
}

// TestNoFilePart: a firmware sent as a plain field (no filename=) is no
// upload: the handler finds the library's "authenticated" member false and
// asks for credentials, even on a device without any.
func TestNoFilePart(t *testing.T) {
	for _, v := range []variant{variants[1], variants[3]} {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			body, ct := form(t, "firmware", "", simtest.Image(t, "1.0.1")[:20000])
			r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", map[string]string{"Content-Type": ct}, body)
			if r.Status != 401 || r.Header.Get("WWW-Authenticate") != `Basic realm="Login Required"` {
				t.Errorf("got %d %q %v", r.Status, r.Body, r.Header)
			}
		})
	}
}

// TestSecondUploadAfterFailure: the error of a failed upload is gone at the
// next upload's begin, and the device takes a good image.
func TestSecondUploadAfterFailure(t *testing.T) {
	for _, v := range variants[:2] {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			if r := upload(t, d, "firmware", filler(20000), nil); !strings.HasPrefix(r.Body, textErrorPrefix) {
				t.Fatalf("bad image: %d %q", r.Status, r.Body)
			}
			if r := upload(t, d, "firmware", simtest.Image(t, "1.0.2"), nil); r.Body != textSuccess {
				t.Fatalf("good image: %d %q", r.Status, r.Body)
			}
			if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.2"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestClosesBeforeRestart: after the success answer the device closes the
// socket itself, then restarts (delay(100); client().stop(); ESP.restart()).
func TestClosesBeforeRestart(t *testing.T) {
	cfg := variants[1].config()
	var ev simtest.EventLog
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	body, ct := form(t, "firmware", "fw.bin", simtest.Image(t, "1.0.1"))
	c, err := net.Dial("tcp", d.OTAAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ct, len(body))
	c.Write(body)
	all, err := io.ReadAll(c) // until the device closes
	if err != nil || !strings.HasSuffix(string(all), textSuccess) {
		t.Fatalf("read %q %v", all, err)
	}
	ev.WaitCount(t, core.EventReboot, 1)
}

// TestFaultsAct: the HTTP faults act on these personalities too.
func TestFaultsAct(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
	t.Run("error", func(t *testing.T) {
		cfg := variants[0].config()
		cfg.Faults = []core.Fault{simtest.MustFault(t, "error@50%")}
		d := simtest.Start(t, cfg)
		if r := upload(t, d, "firmware", img, nil); r.Body != "Update error: Flash Write Failed\r\n" {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
	})
	t.Run("no-reboot", func(t *testing.T) {
		cfg := variants[1].config()
		cfg.Faults = []core.Fault{simtest.MustFault(t, "no-reboot")}
		d := simtest.Start(t, cfg)
		if r := upload(t, d, "firmware", img, nil); r.Body != textSuccess {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
		st := simtest.WaitUploads(t, d, 1)
		if st.Version != "1.0.0" || st.Boot == st.Running || st.BootCount != 1 {
			t.Errorf("state: %+v", st)
		}
	})
	t.Run("lose-answer", func(t *testing.T) {
		cfg := variants[0].config()
		cfg.Faults = []core.Fault{simtest.MustFault(t, "lose-answer")}
		d := simtest.Start(t, cfg)
		if r := upload(t, d, "firmware", img, nil); r.Status != 0 {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
		if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("early-answer", func(t *testing.T) {
		cfg := variants[1].config()
		cfg.Faults = []core.Fault{simtest.MustFault(t, "early-answer@10%")}
		d := simtest.Start(t, cfg)
		// A client that sends the whole body whatever came back (RawPost
		// closes once it has the answer, which aborts the upload).
		body, ct := form(t, "firmware", "fw.bin", img)
		c, err := net.Dial("tcp", d.OTAAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		done := make(chan error, 1)
		go func() {
			_, err := fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", ct, len(body), body)
			done <- err
		}()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("answer: %v %v", resp, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("send: %v", err)
		}
		if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRequestHook: every request goes to Config.OnRequest, malformed ones
// included.
func TestRequestHook(t *testing.T) {
	var mu = make(chan core.HTTPRequest, 16)
	cfg := variants[0].config()
	cfg.OnRequest = func(r core.HTTPRequest) { mu <- r }
	d := simtest.Start(t, cfg)
	simtest.RawPost(t, d.OTAAddr(), "GET", "/update?x=1", map[string]string{"Origin": "o"}, nil)
	upload(t, d, "firmware", filler(5000), nil)
	for _, want := range []string{"GET /update x=1", "POST /update "} {
		select {
		case r := <-mu:
			if got := r.Method + " " + r.Path + " " + r.Query; got != want {
				t.Errorf("hook saw %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("hook never saw %q", want)
		}
	}
}

// TestLargeImage: a 1.2 MB image through the byte-wise multipart parser.
func TestLargeImage(t *testing.T) {
	for _, v := range []variant{variants[0], variants[1]} {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			img := simtest.ImageOf(t, "esp32s3", "1.2.0", 1200<<10)
			if r := upload(t, d, "firmware", img, nil); r.Body != textSuccess {
				t.Fatalf("got %d %q", r.Status, r.Body)
			}
			st, err := d.WaitVersion(simtest.Ctx(t, 20*time.Second), "1.2.0")
			if err != nil {
				t.Fatal(err)
			}
			if s := simtest.Slot(st, st.Running); s.Size != len(img) {
				t.Errorf("installed %d bytes, sent %d", s.Size, len(img))
			}
		})
	}
}
