package rawhttp

import (
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

func TestSeedUploadRebootsIntoNewVersion(t *testing.T) {
	var ev simtest.EventLog
	cfg := simtest.Config(Seed)
	cfg.Password = auth.NewSecret("s3cret")
	cfg.Extensions = true
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	img := simtest.Image(t, "1.0.1")

	status, body, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", img, map[string]string{"Authorization": "Bearer s3cret"})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if status != 200 || body != "OTA update successful, rebooting..." {
		t.Fatalf("got %d %q", status, body)
	}
	st, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Running != "ota_0" || st.Boot != "ota_0" || st.AppState != core.StateValid || st.BootCount != 2 {
		t.Errorf("state after update: running %s boot %s state %s boots %d", st.Running, st.Boot, st.AppState, st.BootCount)
	}
	if s := simtest.Slot(st, "factory"); s.Version != "1.0.0" || s.Empty {
		t.Errorf("factory slot: %+v", s)
	}
	rec := st.Uploads[len(st.Uploads)-1]
	if rec.Outcome != "ok" || rec.Status != 200 || rec.Bytes != int64(len(img)) || rec.Version != "1.0.1" {
		t.Errorf("upload record: %+v", rec)
	}
	// /ota/status tells the same.
	code, js, err := simtest.GetGo(t, "http://"+d.OTAAddr()+"/ota/status")
	if err != nil || code != 200 {
		t.Fatalf("ota/status: %d %v", code, err)
	}
	var os simtest.OTAStatus
	if err := json.Unmarshal([]byte(js), &os); err != nil {
		t.Fatalf("ota/status json %q: %v", js, err)
	}
	if os.Version != "1.0.1" || os.Running != "ota_0" || os.State != core.StateValid || os.Chip != "esp32s3" || os.SlotSize != 2<<20 || os.Project != "ots-fw-main" {
		t.Errorf("ota/status: %+v", os)
	}
	for _, k := range []core.EventKind{core.EventReady, core.EventUploadStarted, core.EventUploadFinished, core.EventReboot, core.EventValid} {
		ev.WaitCount(t, k, 1)
	}
}

func TestSeedAuth(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Password = auth.NewSecret("s3cret")
	d := simtest.Start(t, cfg)
	img := simtest.Image(t, "1.0.1")
	cases := []struct {
		name, auth string
		status     int
		text       string
	}{
		{"missing", "", 401, "Authentication required"},
		{"wrong", "Bearer nope", 403, "Invalid credentials"},
		{"basic", "Basic czNjcmV0", 403, "Invalid credentials"},
		{"case", "bearer s3cret", 403, "Invalid credentials"},
		// httpd_req_get_hdr_value_str keeps a trailing space.
		{"trailing space", "Bearer s3cret ", 403, "Invalid credentials"},
		{"too long for the 128-byte buffer", "Bearer " + strings.Repeat("x", 121), 401, "Authentication required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", map[string]string{"Authorization": c.auth}, img)
			if r.Status != c.status || r.Body != c.text || r.CType != "text/html" {
				t.Fatalf("got %d %q (%s), read err %v", r.Status, r.Body, r.CType, r.ReadErr)
			}
		})
	}
	st := d.State()
	if st.Version != "1.0.0" || !simtest.Slot(st, "ota_0").Empty {
		t.Errorf("refused uploads changed the device: %+v", st)
	}
	if n := len(st.Uploads); n != len(cases) || st.Uploads[0].Outcome != "auth_failed" {
		t.Errorf("upload log: %+v", st.Uploads)
	}
}

func TestResponseBytesMatchESPIDF(t *testing.T) {
	d := simtest.Start(t, simtest.Config(Seed))
	c, err := net.Dial("tcp", d.OTAAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	want := "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 29\r\n\r\nNothing matches the given URI"
	if string(got) != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestHTTPDErrors(t *testing.T) {
	d := simtest.Start(t, simtest.Config(Seed))
	cases := []struct {
		name, req string
		status    int
		text      string
	}{
		{"unknown uri", "GET /ota/status HTTP/1.1\r\n\r\n", 404, "Nothing matches the given URI"},
		{"wrong method", "GET /update HTTP/1.1\r\n\r\n", 405, "Specified method is invalid for this resource"},
		{"query ignored in match", "GET /update?x=1 HTTP/1.1\r\n\r\n", 405, "Specified method is invalid for this resource"},
		{"bad method", "FROB /update HTTP/1.1\r\n\r\n", 400, "Bad request syntax"},
		{"bad version", "GET / HTTP/2.0\r\n\r\n", 505, "HTTP version not supported by server"},
		{"garbage", "hello\r\n\r\n", 400, "Bad request syntax"},
		{"bad content-length", "POST /update HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, "Bad request syntax"},
		{"long uri", "GET /" + strings.Repeat("a", 600) + " HTTP/1.1\r\n\r\n", 414, "URI is too long"},
		{"long headers", "GET / HTTP/1.1\r\nX-A: " + strings.Repeat("a", 300) + "\r\nX-B: " + strings.Repeat("b", 300) + "\r\n\r\n", 431, "Header fields are too long"},
		{"no content-length: erased, then nothing to end", "POST /update HTTP/1.1\r\n\r\n", 500, "OTA end failed"},
		{"chunked: the body is not read", "POST /update HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 500, "OTA end failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", d.OTAAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write([]byte(c.req))
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			var got []byte
			buf := make([]byte, 512)
			for {
				n, err := conn.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break // the device closes after every error
				}
			}
			s := string(got)
			if !strings.HasPrefix(s, "HTTP/1.1 "+strconv.Itoa(c.status)+" ") || !strings.HasSuffix(s, "\r\n\r\n"+c.text) {
				t.Errorf("got %q", s)
			}
		})
	}
}

func TestBadImages(t *testing.T) {
	good := simtest.Image(t, "1.0.1")
	elf := append([]byte{0x7F, 'E', 'L', 'F'}, make([]byte, 4096)...)
	cases := []struct {
		name string
		body []byte
		text string
	}{
		{"elf", elf, "Write failed"},
		{"not 0xE9", append([]byte{0x00}, good[1:]...), "Write failed"},
		{"wrong chip", simtest.ImageOf(t, "esp32", "1.0.1", 0), "OTA end failed"},
		{"corrupt digest", simtest.Corrupt(good, len(good)-5), "OTA end failed"},
		{"corrupt segment data", simtest.Corrupt(good, len(good)/2), "OTA end failed"},
		{"truncated", good[:len(good)/2], "OTA end failed"},
	}
	d := simtest.Start(t, simtest.Config(Seed))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A client that reads after its write failed: the device
			// answers while the image is still coming, then resets.
			r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, c.body)
			status, body := r.Status, r.Body
			if status == 0 {
				t.Fatalf("client error instead of the device's answer: read %v, write %v", r.ReadErr, r.WriteErr)
			}
			if status != 500 || body != c.text {
				t.Fatalf("got %d %q, want 500 %q", status, body, c.text)
			}
			rec := simtest.LastUpload(t, d)
			if rec.Outcome != "failed" || rec.Text != c.text || rec.Reason == "" {
				t.Errorf("record: %+v", rec)
			}
		})
	}
	st := d.State()
	if st.Version != "1.0.0" || st.Running != "factory" || st.BootCount != 1 {
		t.Errorf("bad images changed the device: %+v", st)
	}
	if !simtest.Slot(st, "ota_0").Empty {
		t.Errorf("the failed target slot should be left erased")
	}
}

func TestTooLargeForSlot(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.SlotSize = 256 << 10
	d := simtest.Start(t, cfg)
	big := simtest.ImageOf(t, "esp32s3", "1.0.1", 400<<10)
	r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, big)
	if r.Status != 500 || r.Body != "Write failed" {
		t.Fatalf("got %d %q (read %v, write %v)", r.Status, r.Body, r.ReadErr, r.WriteErr)
	}
	// The 1024-byte write that crosses the end fails as a whole.
	if rec := simtest.LastUpload(t, d); rec.Bytes > 256<<10 || rec.Bytes <= 255<<10 {
		t.Errorf("wrote %d bytes before failing, want just under the slot size", rec.Bytes)
	}
}

// TestMidUploadFailureSeenByClients: the device answers 500 "Write failed"
// after the first 1024 bytes while the client still has a megabyte to send,
// then closes. Go's http.Client and a careful raw client must both get the
// device's status and text.
func TestMidUploadFailureSeenByClients(t *testing.T) {
	cfg := simtest.Config(OTS)
	cfg.Timing.ErrorCloseDelay = 300 * time.Millisecond // margin for a loaded CI machine
	d := simtest.Start(t, cfg)
	bad := make([]byte, 1500<<10) // starts with 0x00, not 0xE9
	for i := range bad {
		bad[i] = byte(i * 31)
	}
	bad[0] = 0
	for i := 0; i < 3; i++ {
		status, body, err := simtest.PostGo(t, "http://"+d.OTAAddr()+"/update", bad, nil)
		if err != nil || status != 500 || body != "Write failed" {
			t.Fatalf("go client: %d %q %v", status, body, err)
		}
		r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, bad)
		if r.Status != 500 || r.Body != "Write failed" {
			t.Fatalf("raw client: %d %q read %v write %v", r.Status, r.Body, r.ReadErr, r.WriteErr)
		}
	}
}

// TestMidUploadFailureFaithfulClose: with lwIP's immediate close, a client
// that reads the answer although its write failed still gets it.
func TestMidUploadFailureFaithfulClose(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Timing.ErrorCloseDelay = 0
	d := simtest.Start(t, cfg)
	bad := make([]byte, 1500<<10)
	for i := 0; i < 10; i++ {
		r := simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, bad)
		if r.Status != 500 || r.Body != "Write failed" {
			t.Fatalf("raw client: %d %q read %v write %v", r.Status, r.Body, r.ReadErr, r.WriteErr)
		}
	}
}
