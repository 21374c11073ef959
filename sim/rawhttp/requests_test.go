package rawhttp

import (
	"bufio"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// Every request a device's servers receive reaches Config.OnRequest as it
// came, whatever the device answers: what a test of the client's probes
// looks at to see what they sent.
func TestOnRequestSeesEveryRequest(t *testing.T) {
	var mu sync.Mutex
	var got []core.HTTPRequest
	cfg := simtest.Config(OTS)
	cfg.Extensions = true
	cfg.OnRequest = func(r core.HTTPRequest) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
	}
	d := simtest.Start(t, cfg)
	type want struct{ method, path, query, server string }
	sends := []struct {
		addr, raw string
		code      int
		want      want
	}{
		{d.OTAAddr(), "GET /ota/status HTTP/1.1\r\nHost: x\r\n\r\n", 200, want{"GET", "/ota/status", "", "ota"}},
		{d.WebAddr(), "GET /api/status?x=1#top HTTP/1.1\r\nHost: x\r\nReferer: http://x/\r\n\r\n", 200, want{"GET", "/api/status", "x=1", "web"}},
		{d.WebAddr(), "GET /cm?cmnd=Status%200 HTTP/1.1\r\nHost: x\r\n\r\n", 404, want{"GET", "/cm", "cmnd=Status%200", "web"}},
		{d.OTAAddr(), "OPTIONS /update HTTP/1.1\r\nHost: x\r\n\r\n", 405, want{"OPTIONS", "/update", "", "ota"}},
		{d.OTAAddr(), "BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 400, want{"BREW", "", "", "ota"}},
	}
	for _, s := range sends {
		c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(s.raw)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != s.code {
			t.Fatalf("%q: %v %v, want %d", s.raw, resp, err, s.code)
		}
		resp.Body.Close()
		c.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(sends) {
		t.Fatalf("%d requests seen, want %d: %+v", len(got), len(sends), got)
	}
	for i, s := range sends {
		r := got[i]
		if (want{r.Method, r.Path, r.Query, r.Server}) != s.want || r.Addr != s.addr || r.Device != "ots-sim" ||
			r.Remote == "" || r.Time.IsZero() {
			t.Errorf("request %d: %+v, want %+v on %s", i, r, s.want, s.addr)
		}
	}
	if r := got[1]; r.URI != "/api/status?x=1#top" ||
		!slices.Contains(r.Headers, core.Header{Name: "Referer", Value: "http://x/"}) {
		t.Errorf("as sent: %q %+v", r.URI, r.Headers)
	}
}
