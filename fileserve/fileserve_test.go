package fileserve

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixture is a started server over files written to a temp dir.
type fixture struct {
	srv   *Server
	data  map[string][]byte
	tok   string
	logs  *syncBuf
	mu    sync.Mutex
	fetch []Fetch
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func writeFiles(t *testing.T, data map[string][]byte) map[string]string {
	t.Helper()
	dir := t.TempDir()
	paths := map[string]string{}
	for name, b := range data {
		p := filepath.Join(dir, "local-"+name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	return paths
}

func start(t *testing.T, data map[string][]byte) *fixture {
	t.Helper()
	fx := &fixture{data: data, logs: &syncBuf{}}
	srv, err := Start(Config{
		Addr:   "127.0.0.1:0",
		Files:  writeFiles(t, data),
		Logger: slog.New(slog.NewTextHandler(fx.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnFetch: func(f Fetch) {
			fx.mu.Lock()
			fx.fetch = append(fx.fetch, f)
			fx.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	fx.srv = srv
	for name := range data {
		u := srv.URL(name)
		fx.tok = strings.Split(strings.TrimPrefix(u, "http://"), "/")[1]
		break
	}
	return fx
}

func (fx *fixture) fetches() []Fetch {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return append([]Fetch(nil), fx.fetch...)
}

// lastFetch waits for the OnFetch of the request just answered: it is
// called after the answer, so it may trail the client's read a little.
func (fx *fixture) lastFetch(t *testing.T, n int) Fetch {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if f := fx.fetches(); len(f) >= n {
			return f[n-1]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no OnFetch for request %d", n)
	return Fetch{}
}

type answer struct {
	status int
	header http.Header
	body   []byte
	raw    string // status line, headers and body as received
}

// raw sends one request byte for byte (so no client cleans the path) and
// reads one answer.
func raw(t *testing.T, addr netip.AddrPort, method, target string, hdr ...string) answer {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req := method + " " + target + " HTTP/1.1\r\nHost: " + addr.String() + "\r\nConnection: close\r\n"
	for _, h := range hdr {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: body, raw: string(all)}
}

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func TestPaths(t *testing.T) {
	fw := pattern(3000)
	fx := start(t, map[string][]byte{"fw.bin": fw, "fw-minimal.bin": pattern(100)})
	tok := fx.tok
	tests := []struct {
		target string
		want   int
	}{
		{"/" + tok + "/fw.bin", 200},
		{"/" + tok + "/fw-minimal.bin", 200},
		{"/" + tok + "/fw.bin?x=1", 200}, // the query is not part of the path
		{"http://127.0.0.1/" + tok + "/fw.bin", 200},
		{"/" + tok + "/fw.bin.gz", 404}, // a companion we were not given
		{"/" + tok + "/other.bin", 404},
		{"/wrongtokenwrongtokenAA/fw.bin", 404},
		{"/" + tok[:len(tok)-1] + "/fw.bin", 404},
		{"/" + strings.ToUpper(tok) + "/fw.bin", 404},
		{"/" + tok + "x/fw.bin", 404},
		{"/fw.bin", 404},
		{"/", 404},
		{"/" + tok, 404},
		{"/" + tok + "/", 404}, // no listing
		{"/" + tok + "/.", 404},
		{"/" + tok + "/..", 404},
		{"/" + tok + "/./fw.bin", 404},
		{"/" + tok + "/../" + tok + "/fw.bin", 404},
		{"/x/../" + tok + "/fw.bin", 404},
		{"/" + tok + "/%2e%2e/" + tok + "/fw.bin", 404},
		{"/" + tok + "/%2E%2E%2Fetc%2Fpasswd", 404},
		{"/" + tok + "/..%2f..%2fetc%2fpasswd", 404},
		{"/" + tok + "/%66w.bin", 404}, // "fw.bin" spelled with an escape
		{"/" + tok + "/fw.bin%00", 404},
		{"/" + tok + "/fw.bin/", 404},
		{"//" + tok + "/fw.bin", 404},
		{"/" + tok + "//fw.bin", 404},
		{"/" + tok + "/local-fw.bin", 404}, // the local file's name is not served
		{"/" + tok + "/fw.bin;x", 404},
		{"/index.html", 404},
		{"/" + tok + "/fw.bin/../fw.bin", 404},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			a := raw(t, fx.srv.Addr(), "GET", tc.target)
			if a.status != tc.want {
				t.Fatalf("GET %s: status %d, want %d", tc.target, a.status, tc.want)
			}
			if tc.want == 404 {
				if len(a.body) != 0 {
					t.Errorf("404 has a body: %q", a.body)
				}
				hdr := strings.SplitN(a.raw, "\r\n\r\n", 2)[0]
				for _, leak := range []string{tok, "fw", "x-MD5", "Location"} {
					if strings.Contains(strings.ToLower(hdr), strings.ToLower(leak)) {
						t.Errorf("404 answer hints %q:\n%s", leak, hdr)
					}
				}
			}
			if tc.want == 200 && !bytes.Equal(a.body, fw) && !bytes.Equal(a.body, fx.data["fw-minimal.bin"]) {
				t.Errorf("200 body is not the file")
			}
		})
	}
	// Every request, refused or not, made one OnFetch; refused ones name nothing.
	got := fx.fetches()
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(tests) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		got = fx.fetches()
	}
	if len(got) != len(tests) {
		t.Fatalf("%d OnFetch calls for %d requests", len(got), len(tests))
	}
	for _, f := range got {
		if (f.Status == 404) != (f.Name == "") {
			t.Errorf("fetch %+v: a refused path must have no Name, a served one a Name", f)
		}
	}
}

func TestMethods(t *testing.T) {
	fw := pattern(500)
	fx := start(t, map[string][]byte{"fw.bin": fw})
	good := "/" + fx.tok + "/fw.bin"
	tests := []struct {
		method, target string
		want           int
	}{
		{"GET", good, 200},
		{"HEAD", good, 200},
		{"POST", good, 405},
		{"PUT", good, 405},
		{"DELETE", good, 405},
		{"PATCH", good, 405},
		{"OPTIONS", good, 405},
		{"TRACE", good, 405},
		{"PROPFIND", good, 405},
		{"POST", "/nope/fw.bin", 404}, // a wrong path says nothing, whatever the method
		{"PUT", "/" + fx.tok + "/new.bin", 404},
		{"OPTIONS", "*", 404},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			a := raw(t, fx.srv.Addr(), tc.method, tc.target, "Content-Length: 0")
			if a.status != tc.want {
				t.Fatalf("status %d, want %d", a.status, tc.want)
			}
			switch tc.want {
			case 405:
				if got := a.header.Get("Allow"); got != "GET, HEAD" {
					t.Errorf("Allow = %q", got)
				}
				if len(a.body) != 0 {
					t.Errorf("405 has a body")
				}
			case 200:
				if got := a.header.Get("Content-Length"); got != "500" {
					t.Errorf("Content-Length = %q, want 500", got)
				}
				if got := a.header.Get("x-MD5"); got != md5hex(fw) {
					t.Errorf("x-MD5 = %q", got)
				}
				if got := a.header.Get("Content-Type"); got != "application/octet-stream" {
					t.Errorf("Content-Type = %q", got)
				}
				wantBody := fw
				if tc.method == "HEAD" {
					wantBody = nil
				}
				if !bytes.Equal(a.body, wantBody) {
					t.Errorf("%s body: %d bytes, want %d", tc.method, len(a.body), len(wantBody))
				}
			}
		})
	}
	if f := fx.lastFetch(t, 2); f.Method != "HEAD" || f.Bytes != 0 || f.Status != 200 || f.Name != "fw.bin" {
		t.Errorf("HEAD fetch = %+v", f)
	}
}

func TestRanges(t *testing.T) {
	const size = 1000
	fw := pattern(size)
	fx := start(t, map[string][]byte{"fw.bin": fw, "empty.bin": {}})
	good := "/" + fx.tok + "/fw.bin"
	etag := `"` + md5hex(fw) + `"`
	tests := []struct {
		name       string
		hdr        []string
		want       int
		start, end int // body = fw[start:end] for 200/206
		cr         string
	}{
		{"none", nil, 200, 0, size, ""},
		{"first 100", []string{"Range: bytes=0-99"}, 206, 0, 100, "bytes 0-99/1000"},
		{"middle", []string{"Range: bytes=100-199"}, 206, 100, 200, "bytes 100-199/1000"},
		{"one byte", []string{"Range: bytes=999-999"}, 206, 999, 1000, "bytes 999-999/1000"},
		{"open-ended", []string{"Range: bytes=100-"}, 206, 100, size, "bytes 100-999/1000"},
		{"open-ended from 0", []string{"Range: bytes=0-"}, 206, 0, size, "bytes 0-999/1000"},
		{"suffix", []string{"Range: bytes=-100"}, 206, 900, size, "bytes 900-999/1000"},
		{"suffix longer than file", []string{"Range: bytes=-5000"}, 206, 0, size, "bytes 0-999/1000"},
		{"end past the file", []string{"Range: bytes=990-5000"}, 206, 990, size, "bytes 990-999/1000"},
		{"last byte named one past the end (esp_https_ota)", []string{"Range: bytes=990-1000"}, 206, 990, size, "bytes 990-999/1000"},
		{"unit case", []string{"Range: BYTES=0-0"}, 206, 0, 1, "bytes 0-0/1000"},
		{"spaces", []string{"Range: bytes= 5-9 "}, 206, 5, 10, "bytes 5-9/1000"},
		{"start at size", []string{"Range: bytes=1000-"}, 416, 0, 0, "bytes */1000"},
		{"start past size", []string{"Range: bytes=5000-6000"}, 416, 0, 0, "bytes */1000"},
		{"empty suffix", []string{"Range: bytes=-0"}, 416, 0, 0, "bytes */1000"},
		{"multi-range is served whole", []string{"Range: bytes=0-1,5-6"}, 200, 0, size, ""},
		{"multi-range past end served whole", []string{"Range: bytes=5000-,6000-"}, 200, 0, size, ""},
		{"reversed is ignored", []string{"Range: bytes=5-1"}, 200, 0, size, ""},
		{"other unit is ignored", []string{"Range: items=0-1"}, 200, 0, size, ""},
		{"garbage is ignored", []string{"Range: bytes=abc"}, 200, 0, size, ""},
		{"sign is ignored", []string{"Range: bytes=+1-2"}, 200, 0, size, ""},
		{"overflow is ignored", []string{"Range: bytes=0-99999999999999999999"}, 200, 0, size, ""},
		{"If-Range with our ETag", []string{"Range: bytes=0-9", "If-Range: " + etag}, 206, 0, 10, "bytes 0-9/1000"},
		{"If-Range with another ETag", []string{"Range: bytes=0-9", `If-Range: "x"`}, 200, 0, size, ""},
		{"If-Range with a date", []string{"Range: bytes=0-9", "If-Range: Mon, 07 Dec 2026 21:00:00 GMT"}, 200, 0, size, ""},
	}
	n := 0
	for _, tc := range tests {
		for _, method := range []string{"GET", "HEAD"} {
			t.Run(method+" "+tc.name, func(t *testing.T) {
				a := raw(t, fx.srv.Addr(), method, good, tc.hdr...)
				n++
				if a.status != tc.want {
					t.Fatalf("status %d, want %d", a.status, tc.want)
				}
				if got := a.header.Get("Content-Range"); got != tc.cr {
					t.Errorf("Content-Range = %q, want %q", got, tc.cr)
				}
				f := fx.lastFetch(t, n)
				if f.Status != tc.want {
					t.Errorf("Fetch.Status = %d", f.Status)
				}
				if len(tc.hdr) > 0 && f.Range != strings.TrimSpace(strings.TrimPrefix(tc.hdr[0], "Range:")) {
					t.Errorf("Fetch.Range = %q", f.Range)
				}
				if tc.want == 416 {
					if a.header.Get("Content-Length") != "0" || len(a.body) != 0 {
						t.Errorf("416 with a body")
					}
					return
				}
				want := fw[tc.start:tc.end]
				if got := a.header.Get("Content-Length"); got != fmt.Sprint(len(want)) {
					t.Errorf("Content-Length = %q, want %d", got, len(want))
				}
				// x-MD5 is always the whole file's, on 206 too.
				if got := a.header.Get("x-MD5"); got != md5hex(fw) {
					t.Errorf("x-MD5 = %q, want the whole file's", got)
				}
				if got := a.header.Get("Accept-Ranges"); got != "bytes" {
					t.Errorf("Accept-Ranges = %q", got)
				}
				if method == "HEAD" {
					want = nil
				}
				if !bytes.Equal(a.body, want) {
					t.Errorf("body %d bytes, want %d", len(a.body), len(want))
				}
				if f.Bytes != int64(len(want)) {
					t.Errorf("Fetch.Bytes = %d, want %d", f.Bytes, len(want))
				}
			})
		}
	}
	// An empty file: 200 with Content-Length 0, and no range is satisfiable.
	a := raw(t, fx.srv.Addr(), "GET", "/"+fx.tok+"/empty.bin")
	if a.status != 200 || a.header.Get("Content-Length") != "0" || a.header.Get("x-MD5") != md5hex(nil) {
		t.Errorf("empty file: %d %v", a.status, a.header)
	}
	a = raw(t, fx.srv.Addr(), "GET", "/"+fx.tok+"/empty.bin", "Range: bytes=0-")
	if a.status != 416 || a.header.Get("Content-Range") != "bytes */0" {
		t.Errorf("empty file, bytes=0-: %d %v", a.status, a.header)
	}
}

func TestDeviceHeaders(t *testing.T) {
	fx := start(t, map[string][]byte{"fw.bin": pattern(64)})
	good := "/" + fx.tok + "/fw.bin"
	tests := []struct {
		target        string
		hdr           []string
		mac, version  string
		wantLogSubstr string
	}{
		{good, []string{"User-Agent: ESP8266-http-Update", "x-ESP8266-STA-MAC: 5c:cf:7f:0a:0b:0c", "x-ESP8266-AP-MAC: 5E:CF:7F:0A:0B:0C", "x-ESP8266-version: 14.3.0(tasmota)"}, "5C:CF:7F:0A:0B:0C", "14.3.0(tasmota)", "mac=5C:CF:7F:0A:0B:0C"},
		{good, []string{"User-Agent: ESP32-http-Update", "x-ESP32-STA-MAC: A0:20:A6:0A:31:B7", "x-ESP32-AP-MAC: A0:20:A6:0A:31:B8", "x-ESP32-version: 14.3.0(tasmota32)"}, "A0:20:A6:0A:31:B7", "14.3.0(tasmota32)", "mac=A0:20:A6:0A:31:B7"},
		{good, nil, "", "", "status=200"},
		{good, []string{"x-ESP32-STA-MAC: not-a-mac"}, "", "", "status=200"},
		{good, []string{"x-ESP32-STA-MAC: 00:11:22:33:44:55:66:77"}, "", "", "status=200"},
		{good, []string{"x-ESP8266-version: v1\xff"}, "", "v1", "status=200"},
		{good, []string{"x-ESP8266-version: " + strings.Repeat("9", 200)}, "", strings.Repeat("9", 80) + "…", "status=200"},
		// A refused request still says who asked.
		{"/nope/fw.bin", []string{"x-ESP8266-STA-MAC: 5c:cf:7f:0a:0b:0d"}, "5C:CF:7F:0A:0B:0D", "", "mac=5C:CF:7F:0A:0B:0D"},
	}
	for i, tc := range tests {
		raw(t, fx.srv.Addr(), "GET", tc.target, tc.hdr...)
		f := fx.lastFetch(t, i+1)
		if f.MAC != tc.mac {
			t.Errorf("case %d: MAC = %q, want %q", i, f.MAC, tc.mac)
		}
		if f.Version != tc.version {
			t.Errorf("case %d: Version = %q, want %q", i, f.Version, tc.version)
		}
		if !strings.HasPrefix(f.Remote, "127.0.0.1:") {
			t.Errorf("case %d: Remote = %q", i, f.Remote)
		}
		if !strings.Contains(fx.logs.String(), tc.wantLogSubstr) {
			t.Errorf("case %d: log lacks %q:\n%s", i, tc.wantLogSubstr, fx.logs.String())
		}
	}
}

// The token is the image's only guard: no log line, at any level, holds
// it, not even for a request that had it right and asked a wrong name.
func TestLogsNeverHoldTheToken(t *testing.T) {
	fx := start(t, map[string][]byte{"fw.bin": pattern(64)})
	for _, target := range []string{
		"/" + fx.tok + "/fw.bin",
		"/" + fx.tok + "/fw-minimal.bin",
		"/" + fx.tok + "/",
		"/" + fx.tok + "x/fw.bin",
		"/x/" + fx.tok,
	} {
		raw(t, fx.srv.Addr(), "GET", target)
	}
	fx.lastFetch(t, 5)
	fx.srv.Close()
	logs := fx.logs.String()
	if strings.Contains(logs, fx.tok) || strings.Contains(logs, fx.tok[:8]) {
		t.Errorf("logs hold the token:\n%s", logs)
	}
	if !strings.Contains(logs, "name=fw-minimal.bin") {
		t.Errorf("the Debug line for a name not served should say the name:\n%s", logs)
	}
	if lu := fx.srv.LogURL("fw.bin"); strings.Contains(lu, fx.tok[:4]) || !strings.HasSuffix(lu, "/fw.bin") {
		t.Errorf("LogURL = %q", lu)
	}
}

func TestURLAndToken(t *testing.T) {
	fx := start(t, map[string][]byte{"fw.bin": pattern(10), "fw-minimal.bin": pattern(5)})
	u := fx.srv.URL("fw.bin")
	want := "http://" + fx.srv.Addr().String() + "/" + fx.tok + "/fw.bin"
	if u != want {
		t.Fatalf("URL = %q, want %q", u, want)
	}
	if len(u) > MaxURLLen {
		t.Errorf("URL is %d characters", len(u))
	}
	if fx.srv.URL("other.bin") != "" || fx.srv.LogURL("other.bin") != "" {
		t.Errorf("a name not served has a URL")
	}
	if !strings.HasSuffix(fx.srv.URL("fw-minimal.bin"), "/"+fx.tok+"/fw-minimal.bin") {
		t.Errorf("companions share the token")
	}
	b, err := base64.RawURLEncoding.DecodeString(fx.tok)
	if err != nil || len(b)*8 < 96 {
		t.Errorf("token %d bits (%v), want ≥ 96", len(b)*8, err)
	}
	fx2 := start(t, map[string][]byte{"fw.bin": pattern(10)})
	if fx2.tok == fx.tok {
		t.Errorf("two servers share a token")
	}
	if fx.srv.Addr().Addr() != netip.MustParseAddr("127.0.0.1") || fx.srv.Addr().Port() == 0 {
		t.Errorf("Addr = %v", fx.srv.Addr())
	}
}

func TestStartRefuses(t *testing.T) {
	dir := t.TempDir()
	fw := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(fw, pattern(10), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := map[string]string{"fw.bin": fw}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no address", Config{Files: ok}, "IP:PORT"},
		{"port only", Config{Addr: ":0", Files: ok}, "IP:PORT"},
		{"host name", Config{Addr: "localhost:0", Files: ok}, "IP:PORT"},
		{"wildcard without Advertise", Config{Addr: "0.0.0.0:0", Files: ok}, "every interface"},
		{"v6 wildcard without Advertise", Config{Addr: "[::]:0", Files: ok}, "every interface"},
		{"no files", Config{Addr: "127.0.0.1:0"}, "no files"},
		{"dot-dot name", Config{Addr: "127.0.0.1:0", Files: map[string]string{"..": fw}}, "name"},
		{"hidden name", Config{Addr: "127.0.0.1:0", Files: map[string]string{".fw.bin": fw}}, "name"},
		{"slash in name", Config{Addr: "127.0.0.1:0", Files: map[string]string{"a/fw.bin": fw}}, "name"},
		{"space in name", Config{Addr: "127.0.0.1:0", Files: map[string]string{"fw 1.bin": fw}}, "name"},
		{"percent in name", Config{Addr: "127.0.0.1:0", Files: map[string]string{"fw%2e.bin": fw}}, "name"},
		{"empty name", Config{Addr: "127.0.0.1:0", Files: map[string]string{"": fw}}, "name"},
		{"missing file", Config{Addr: "127.0.0.1:0", Files: map[string]string{"fw.bin": filepath.Join(dir, "nope")}}, "no such file"},
		{"directory", Config{Addr: "127.0.0.1:0", Files: map[string]string{"fw.bin": dir}}, "not a regular file"},
		{"URL too long", Config{Addr: "127.0.0.1:0", Files: map[string]string{strings.Repeat("a", 55): fw}}, "characters"},
		{"URL too long for a long advertised address", Config{Addr: "127.0.0.1:0", Advertise: netip.MustParseAddr("fd00:1111:2222:3333:4444:5555:6666:7777"), Files: map[string]string{strings.Repeat("a", 30): fw}}, "characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Start(tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("Start succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line with %q", msg, tc.want)
			}
		})
	}
	// The longest name that fits: URL ≤ 100 characters even at port 65535.
	s, err := Start(Config{Addr: "127.0.0.1:0", Files: map[string]string{strings.Repeat("a", 54): fw}})
	if err != nil {
		t.Fatalf("54-character name refused: %v", err)
	}
	defer s.Close()
	if n := len(s.URL(strings.Repeat("a", 54))); n > MaxURLLen {
		t.Errorf("URL is %d characters", n)
	}
}

func TestWildcardWithAdvertise(t *testing.T) {
	// Bound to loopback explicitly, advertised as loopback: Advertise goes
	// into URLs. (A test never binds a wildcard.)
	dir := t.TempDir()
	fw := filepath.Join(dir, "fw.bin")
	os.WriteFile(fw, pattern(10), 0o600)
	s, err := Start(Config{Addr: "127.0.0.1:0", Advertise: netip.MustParseAddr("127.0.0.2"), Files: map[string]string{"fw.bin": fw}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.URL("fw.bin"), fmt.Sprintf("http://127.0.0.2:%d/", s.Addr().Port())) {
		t.Errorf("URL = %q", s.URL("fw.bin"))
	}
}

func TestChangedFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	fw := filepath.Join(dir, "fw.bin")
	os.WriteFile(fw, pattern(100), 0o600)
	s, err := Start(Config{Addr: "127.0.0.1:0", Files: map[string]string{"fw.bin": fw}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := os.WriteFile(fw, pattern(50), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := strings.Split(s.URL("fw.bin"), "/")[3]
	if a := raw(t, s.Addr(), "GET", "/"+tok+"/fw.bin"); a.status != 500 || len(a.body) != 0 || a.header.Get("x-MD5") != "" {
		t.Errorf("changed file: %d, %d bytes, x-MD5 %q", a.status, len(a.body), a.header.Get("x-MD5"))
	}
}

func TestConcurrentFetches(t *testing.T) {
	fw := pattern(200_000)
	fx := start(t, map[string][]byte{"fw.bin": fw})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", fx.srv.URL("fw.bin"), nil)
			a := i * 1000
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", a))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 206 || !bytes.Equal(b, fw[a:]) {
				errs <- fmt.Errorf("range %d-: %d, %d bytes, %v", a, resp.StatusCode, len(b), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A device that stops reading holds a transfer open; Close ends it, waits
// for its OnFetch, and after Close nothing answers.
func TestCloseDuringSlowTransfer(t *testing.T) {
	const size = 64 << 20 // well past what loopback socket buffers hold
	dir := t.TempDir()
	big := filepath.Join(dir, "big.bin")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil { // sparse: quick to make
		t.Fatal(err)
	}
	f.Close()
	done := make(chan Fetch, 4)
	s, err := Start(Config{Addr: "127.0.0.1:0", Files: map[string]string{"big.bin": big}, OnFetch: func(f Fetch) {
		if f.Method == "GET" {
			// Slow enough that a Close that did not wait for it would
			// return first.
			time.Sleep(300 * time.Millisecond)
		}
		done <- f
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tok := strings.Split(s.URL("big.bin"), "/")[3]

	// An idle kept-alive connection: after Close it must not answer either.
	idle, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	fmt.Fprintf(idle, "HEAD /%s/big.bin HTTP/1.1\r\nHost: x\r\n\r\n", tok)
	if resp, err := http.ReadResponse(idleR, &http.Request{Method: "HEAD"}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD on the kept-alive connection: %v", err)
	}
	<-done

	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /%s/big.bin HTTP/1.0\r\nx-ESP32-STA-MAC: A0:20:A6:0A:31:B7\r\n\r\n", tok)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != size {
		t.Fatalf("GET: %v %v", resp, err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	// Now the device stalls; the server blocks in a write.

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not end the stalled transfer")
	}
	// OnFetch ran before Close returned, and says the transfer was cut.
	select {
	case f := <-done:
		if f.Status != 200 || f.Bytes >= size || f.Length != size || f.MAC != "A0:20:A6:0A:31:B7" {
			t.Errorf("fetch = %+v, want a cut 200", f)
		}
	default:
		t.Fatal("OnFetch had not run when Close returned")
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || int64(n)+4096 >= size {
		t.Errorf("the client read %d more bytes, err %v: want the transfer cut", n, err)
	}

	// After Close nothing answers: no new connection, no answer on the old one.
	if c2, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second); err == nil {
		c2.Close()
		t.Error("a connection was accepted after Close")
	}
	idle.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(idle, "GET /%s/big.bin HTTP/1.1\r\nHost: x\r\n\r\n", tok)
	if b, err := idleR.ReadByte(); err == nil {
		t.Errorf("the kept-alive connection answered after Close (%q)", b)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the kept-alive connection is still open after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case f := <-done:
		t.Errorf("OnFetch after Close: %+v", f)
	default:
	}
}

// A device that stops reading and never comes back is let go after the
// stall time, without waiting for Close.
func TestStalledTransferIsLetGo(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.bin")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan Fetch, 1)
	s, err := Start(Config{Addr: "127.0.0.1:0", Files: map[string]string{"big.bin": big}, OnFetch: func(f Fetch) { done <- f }, stall: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /%s/big.bin HTTP/1.0\r\n\r\n", strings.Split(s.URL("big.bin"), "/")[3])
	if _, err := io.ReadFull(c, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-done:
		if f.Status != 200 || f.Bytes >= f.Length {
			t.Errorf("fetch = %+v, want a cut transfer", f)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a stalled transfer was never let go")
	}
}

func TestRouteAddr(t *testing.T) {
	got, err := RouteAddr(netip.MustParseAddr("127.0.0.1"))
	if err != nil || got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("RouteAddr(127.0.0.1) = %v, %v", got, err)
	}
	got, err = RouteAddr(netip.MustParseAddr("127.0.0.2"))
	if err != nil || !got.IsLoopback() || !got.Is4() {
		t.Errorf("RouteAddr(127.0.0.2) = %v, %v", got, err)
	}
	got, err = RouteAddr(netip.MustParseAddr("::ffff:127.0.0.1"))
	if err != nil || got != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("RouteAddr(::ffff:127.0.0.1) = %v, %v", got, err)
	}
	if got, err := RouteAddr(netip.MustParseAddr("::1")); err == nil && got != netip.IPv6Loopback() {
		t.Errorf("RouteAddr(::1) = %v", got) // no error check: the host may lack IPv6
	}
	if _, err := RouteAddr(netip.Addr{}); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("RouteAddr(invalid) = %v", err)
	}
	// The route it finds is one a server can bind and devices can reach.
	src, _ := RouteAddr(netip.MustParseAddr("127.0.0.1"))
	dir := t.TempDir()
	fw := filepath.Join(dir, "fw.bin")
	os.WriteFile(fw, pattern(10), 0o600)
	s, err := Start(Config{Addr: netip.AddrPortFrom(src, 0).String(), Files: map[string]string{"fw.bin": fw}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get(s.URL("fw.bin"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
}

// A resumed rollout serves under the token its devices were told; a token
// that is short or would change the path is refused.
func TestReusedToken(t *testing.T) {
	files := writeFiles(t, map[string][]byte{"fw.bin": pattern(10)})
	tok, err := NewToken()
	if err != nil || !ValidToken(tok) {
		t.Fatalf("NewToken = %q, %v", tok, err)
	}
	srv, err := Start(Config{Addr: "127.0.0.1:0", Files: files, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if u := srv.URL("fw.bin"); !strings.HasSuffix(u, "/"+tok+"/fw.bin") {
		t.Errorf("URL = %q, want the token given", u)
	}
	if a := raw(t, srv.Addr(), "GET", "/"+tok+"/fw.bin"); a.status != 200 {
		t.Errorf("GET under the reused token: %d", a.status)
	}
	for _, bad := range []string{"short", strings.Repeat("a", 21), strings.Repeat("a", 21) + "/", strings.Repeat("a", 22) + "%2e", strings.Repeat("a", 65)} {
		if s, err := Start(Config{Addr: "127.0.0.1:0", Files: files, Token: bad}); err == nil {
			s.Close()
			t.Errorf("token %q accepted", bad)
		}
	}
}

// TestOnStart: a GET answered with a body is told at its start (headers
// sent, no byte of the body yet) and then at its end, with when it began
// and how long it took; HEAD and refused requests have no start.
func TestOnStart(t *testing.T) {
	data := pattern(100 << 10)
	var mu sync.Mutex
	var seen []string // "start|end name bytes/length"
	var starts, ends []Fetch
	srv, err := Start(Config{
		Addr:  "127.0.0.1:0",
		Files: writeFiles(t, map[string][]byte{"fw.bin": data}),
		OnStart: func(f Fetch) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, fmt.Sprintf("start %s %d/%d", f.Name, f.Bytes, f.Length))
			starts = append(starts, f)
		},
		OnFetch: func(f Fetch) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, fmt.Sprintf("end %s %d/%d", f.Name, f.Bytes, f.Length))
			ends = append(ends, f)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tok := strings.Split(strings.TrimPrefix(srv.URL("fw.bin"), "http://"), "/")[1]
	good := "/" + tok + "/fw.bin"
	// OnFetch may trail the client's read: each request waits for it.
	waitEnds := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := len(ends)
			mu.Unlock()
			if got >= n || time.Now().After(deadline) {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	raw(t, srv.Addr(), "GET", good)
	waitEnds(1)
	raw(t, srv.Addr(), "GET", good, "Range: bytes=1000-")
	waitEnds(2)
	raw(t, srv.Addr(), "HEAD", good)
	waitEnds(3)
	raw(t, srv.Addr(), "GET", "/"+tok+"/other.bin")
	waitEnds(4)
	mu.Lock()
	defer mu.Unlock()
	want := []string{"start fw.bin 0/102400", "end fw.bin 102400/102400", "start fw.bin 0/101400", "end fw.bin 101400/101400",
		"end fw.bin 0/0", "end  0/0"}
	if strings.Join(seen, ", ") != strings.Join(want, ", ") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
	for i, s := range starts {
		e := ends[i]
		if s.Start.IsZero() || !e.Start.Equal(s.Start) || s.Duration != 0 || e.Duration <= 0 {
			t.Errorf("fetch %d: start %v/%v, duration %v then %v", i, s.Start, e.Start, s.Duration, e.Duration)
		}
	}
}
