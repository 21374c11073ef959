package fileserve

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Open files are served at /<name> without the token, never cached and
// never answered 304, with Range as for the image; SetOpen changes or
// removes them while the server runs; the image stays behind its token.
func TestOpenFiles(t *testing.T) {
	manifest := []byte(`{"name":"fw","version":"1.0"}`)
	logs := &syncBuf{}
	mu := &fetchLog{}
	paths := writeFiles(t, map[string][]byte{"fw.bin": pattern(1000)})
	srv, err := Start(Config{Addr: "127.0.0.1:0", Files: paths, Open: map[string][]byte{"manifest.json": manifest},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), OnFetch: mu.add})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	a := srv.Addr()
	etag := `"` + md5hex(manifest) + `"`
	for _, tc := range []struct {
		name, method, target string
		hdr                  []string
		status               int
		body                 string
		cr                   string
	}{
		{"plain", "GET", "/manifest.json", nil, 200, string(manifest), ""},
		{"HEAD", "HEAD", "/manifest.json", nil, 200, "", ""},
		{"If-None-Match is no 304", "GET", "/manifest.json", []string{"If-None-Match: " + etag}, 200, string(manifest), ""},
		{"If-Modified-Since is no 304", "GET", "/manifest.json", []string{"If-Modified-Since: Tue, 08 Dec 2099 00:00:00 GMT"}, 200, string(manifest), ""},
		{"range", "GET", "/manifest.json", []string{"Range: bytes=2-5"}, 206, string(manifest[2:6]), "bytes 2-5/29"},
		{"range with a stale If-Range", "GET", "/manifest.json", []string{"Range: bytes=2-5", `If-Range: "x"`}, 200, string(manifest), ""},
		{"range with its If-Range", "GET", "/manifest.json", []string{"Range: bytes=-3", "If-Range: " + etag}, 206, string(manifest[26:]), "bytes 26-28/29"},
		{"range past the end", "GET", "/manifest.json", []string{"Range: bytes=100-"}, 416, "", "bytes */29"},
		{"POST", "POST", "/manifest.json", nil, 405, "", ""},
		{"not under the token", "GET", "/" + srv.token + "/manifest.json", nil, 404, "", ""},
		{"the image not without its token", "GET", "/fw.bin", nil, 404, "", ""},
		{"no other name", "GET", "/other.json", nil, 404, "", ""},
		{"escaped", "GET", "/manifest%2Ejson", nil, 404, "", ""},
		{"query kept apart", "GET", "/manifest.json?x=1", nil, 200, string(manifest), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans := raw(t, a, tc.method, tc.target, tc.hdr...)
			if ans.status != tc.status || string(ans.body) != tc.body {
				t.Fatalf("%d %q, want %d %q", ans.status, ans.body, tc.status, tc.body)
			}
			if tc.status == 200 || tc.status == 206 {
				if cc := ans.header.Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q", cc)
				}
				if ct := ans.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				if ans.header.Get("Last-Modified") != "" {
					t.Errorf("Last-Modified sent: a cache could ask again conditionally")
				}
			}
			if cr := ans.header.Get("Content-Range"); cr != tc.cr {
				t.Errorf("Content-Range %q, want %q", cr, tc.cr)
			}
		})
	}
	// The image is still served behind its token.
	if ans := raw(t, a, "GET", strings.TrimPrefix(srv.URL("fw.bin"), "http://"+a.String())); ans.status != 200 || !bytes.Equal(ans.body, pattern(1000)) {
		t.Fatalf("the image: %d", ans.status)
	}
	if u := srv.OpenURL("manifest.json"); u != "http://"+a.String()+"/manifest.json" {
		t.Errorf("OpenURL = %q", u)
	}
	if srv.OpenURL("../x") != "" || ValidName("../x") || !ValidName("canary.json") {
		t.Errorf("an unservable name accepted")
	}

	// Changed, added, removed while running.
	srv.SetOpen("manifest.json", []byte("v2"))
	srv.SetOpen("canary.json", []byte("c"))
	srv.SetOpen("../evil", []byte("x"))
	if ans := raw(t, a, "GET", "/manifest.json"); ans.status != 200 || string(ans.body) != "v2" {
		t.Errorf("after SetOpen: %d %q", ans.status, ans.body)
	}
	if ans := raw(t, a, "GET", "/canary.json"); ans.status != 200 || string(ans.body) != "c" {
		t.Errorf("added: %d %q", ans.status, ans.body)
	}
	srv.SetOpen("manifest.json", nil)
	if ans := raw(t, a, "GET", "/manifest.json"); ans.status != 404 {
		t.Errorf("removed: %d %q", ans.status, ans.body)
	}
	if ans := raw(t, a, "GET", "/canary.json"); ans.status != 200 {
		t.Errorf("the other one went too: %d", ans.status)
	}

	// Polls are told as open fetches, never under the image's name, and
	// the logs never hold the token.
	fetches := mu.get()
	var open int
	for _, f := range fetches {
		if f.Open {
			open++
			if f.Name != "manifest.json" && f.Name != "canary.json" {
				t.Errorf("open fetch named %q", f.Name)
			}
		} else if f.Name == "manifest.json" {
			t.Errorf("a poll told as the image's fetch: %+v", f)
		}
	}
	if open == 0 {
		t.Errorf("no open fetch told")
	}
	if strings.Contains(logs.String(), srv.token) {
		t.Errorf("the token is in the logs")
	}
}

// A server may serve open files only (no image yet); a bad open name is
// refused at Start.
func TestOpenOnlyAndBadName(t *testing.T) {
	srv, err := Start(Config{Addr: "127.0.0.1:0", Open: map[string][]byte{"m.json": []byte("{}")}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if ans := raw(t, srv.Addr(), "GET", "/m.json"); ans.status != 200 || string(ans.body) != "{}" {
		t.Errorf("%d %q", ans.status, ans.body)
	}
	if _, err := Start(Config{Addr: "127.0.0.1:0", Open: map[string][]byte{".hidden": []byte("x")}}); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("a bad open name: %v", err)
	}
}

type fetchLog struct {
	mu sync.Mutex
	f  []Fetch
}

func (l *fetchLog) add(f Fetch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f = append(l.f, f)
}

func (l *fetchLog) get() []Fetch {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Fetch(nil), l.f...)
}
