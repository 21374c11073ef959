package tasmota

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// firmware is an app-looking image of size bytes (first byte 0xE9).
func firmware(size int, name string) *upload.Firmware {
	r := rand.New(rand.NewPCG(uint64(size), 9))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	data[0] = 0xE9
	return upload.NewFirmware(name, data, false)
}

// Tasmota's upgrade result pages, English and German builds (the words
// are the build's language: en_GB D_SUCCESSFUL / D_FAILED, de_DE).
const (
	pageOK      = `<!DOCTYPE html><html><body><div style='text-align:center;'><b>Upload</b><br><b>Successful</b><br>Device will restart in a few seconds</div></body></html>`
	pageFailed  = `<!DOCTYPE html><html><body><div style='text-align:center;'><b>Upload</b><br><b>Failed</b><br>Not enough space</div></body></html>`
	pageDeOK    = `<!DOCTYPE html><html lang="de"><body><b>Hochladen</b><br><b>Erfolgreich</b><br>Gerät wird in wenigen Sekunden neu gestartet</body></html>`
	pageDeFail  = `<!DOCTYPE html><html lang="de"><body><b>Hochladen</b><br><b>Fehlgeschlagen</b><br>ungenügend Speicherplatz</body></html>`
	pageFactory = `<html lang="de"><form method='post' action='u2?fsz=' enctype='multipart/form-data'><br><input type='file' name='u2'><br><br><button type='submit' onclick='eb("f1").style.display="none";var fs=this.form["u2"].files[0].size;eb((fs>900000)?"f3":"f2").style.display="block";this.form.action+=fs;return upl(this);'>Upgrade starten</button></form></html>`
	warning401  = `{"WARNING":"Need user=<username>&password=<password>"}`
)

// fakeTasmota is a test double of Tasmota's web server: the Referer check
// (silence), Basic auth with its JSON WARNING, /up, /u2 and /cm.
type fakeTasmota struct {
	t        testing.TB
	password string
	// gate: "" checks the Referer as Tasmota does; "off" does not.
	gate string
	// hangOnGate: the gate keeps the connection open instead of closing.
	hangOnGate bool
	uploadPage string
	uploadCode int
	// upPage replaces the upgrade page's form (GET /up).
	upPage  string
	status0 string
	// onBacklog runs when the Backlog command arrives (the device fetching).
	onBacklog func(u string)

	mu       sync.Mutex
	requests []string // "GET /up", "POST /u2?fsz=…", "CMD <command>"
	referers []string
	file     string // the /u2 part's file name
	fileLen  int
	otaURL   string
}

func (f *fakeTasmota) log(s string) {
	f.mu.Lock()
	f.requests = append(f.requests, s)
	f.mu.Unlock()
}

func (f *fakeTasmota) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeTasmota) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.referers = append(f.referers, r.Referer())
	f.mu.Unlock()
	if f.gate == "" && !strings.HasPrefix(strings.ToUpper(r.Referer()), "HTTP://127.0.0.1") {
		// HTTPAuth's Referer check returns without sending anything.
		f.log("SILENCE " + r.URL.Path)
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			if f.hangOnGate {
				time.Sleep(2 * time.Second)
			}
			c.Close()
		}
		return
	}
	if f.password != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u != "admin" || p != f.password {
			f.log("401 " + r.URL.Path)
			if r.URL.Path == "/cm" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(401)
				_, _ = io.WriteString(w, warning401)
				return
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="Login Required"`)
			w.WriteHeader(401)
			return
		}
	}
	w.Header().Set("Server", "Tasmota/14.3.0 (ESP8266EX)")
	switch {
	case r.Method == "GET" && r.URL.Path == "/up":
		f.log("GET /up")
		page := f.upPage
		if page == "" {
			page = "<html><form method='post' action='u2?fsz=' enctype='multipart/form-data'><input type='file' name='u2'></form></html>"
		}
		_, _ = io.WriteString(w, page)
	case r.Method == "POST" && r.URL.Path == "/u2":
		f.log("POST " + r.URL.RequestURI())
		mr, err := r.MultipartReader()
		if err != nil {
			f.t.Errorf("not multipart: %v", err)
			return
		}
		p, err := mr.NextPart()
		if err != nil {
			f.t.Errorf("no part: %v", err)
			return
		}
		n, _ := io.Copy(io.Discard, p)
		f.mu.Lock()
		f.file, f.fileLen = p.FileName(), int(n)
		f.mu.Unlock()
		code := f.uploadCode
		if code == 0 {
			code = 200
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, f.uploadPage)
	case r.Method == "GET" && r.URL.Path == "/cm":
		cmnd := r.URL.Query().Get("cmnd")
		f.log("CMD " + cmnd)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case cmnd == "Status 0" && f.status0 == "-":
			http.NotFound(w, r)
		case cmnd == "Status 0":
			_, _ = io.WriteString(w, f.status0)
		case strings.HasPrefix(cmnd, "Backlog OtaUrl "):
			u, _, _ := strings.Cut(strings.TrimPrefix(cmnd, "Backlog OtaUrl "), "; Upgrade 1")
			f.mu.Lock()
			f.otaURL = u
			f.mu.Unlock()
			_, _ = io.WriteString(w, `{"OtaUrl":"`+u+`"}`)
			if f.onBacklog != nil {
				go f.onBacklog(u)
			}
		case strings.HasPrefix(cmnd, "OtaUrl "):
			f.mu.Lock()
			f.otaURL = strings.TrimPrefix(cmnd, "OtaUrl ")
			u := f.otaURL
			f.mu.Unlock()
			_, _ = fmt.Fprintf(w, `{"OtaUrl":%q}`, u)
		default:
			_, _ = io.WriteString(w, `{"Command":"Unknown"}`)
		}
	default:
		http.NotFound(w, r)
	}
}

func startFake(t *testing.T, f *fakeTasmota) upload.Target {
	t.Helper()
	f.t = t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	host, port := testkit.HostPort(t, ln.Addr().String())
	return upload.Target{Name: "plug", Host: host, Port: port, Protocol: upload.Tasmota}
}

// TestByFile: one table over Tasmota's answers to GET /up and POST /u2.
// Every 200 page is accepted, whatever its words and language; the
// verification decides.
func TestByFile(t *testing.T) {
	pw := upload.Credentials{Password: auth.NewSecret("s3cret")}
	for _, tc := range []struct {
		name     string
		dev      *fakeTasmota
		cred     upload.Credentials
		class    upload.Class // "" = accepted
		status   int
		reason   string
		requests []string
		idle     time.Duration
		refused  string
	}{
		{name: "success page", dev: &fakeTasmota{uploadPage: pageOK}, requests: []string{"CMD Status 0", "GET /up", "POST /u2?fsz=70000"}},
		{name: "failure page is no decision", dev: &fakeTasmota{uploadPage: pageFailed}, requests: []string{"CMD Status 0", "GET /up", "POST /u2?fsz=70000"}},
		{name: "German success", dev: &fakeTasmota{uploadPage: pageDeOK}, requests: []string{"CMD Status 0", "GET /up", "POST /u2?fsz=70000"}},
		{name: "German failure", dev: &fakeTasmota{uploadPage: pageDeFail}, requests: []string{"CMD Status 0", "GET /up", "POST /u2?fsz=70000"}},
		{name: "password", dev: &fakeTasmota{uploadPage: pageOK, password: "s3cret"}, cred: pw, requests: []string{"CMD Status 0", "GET /up", "POST /u2?fsz=70000"}},
		{name: "password missing", dev: &fakeTasmota{password: "s3cret"}, class: upload.ClassAuth, status: 401, reason: "pass --password", requests: []string{"401 /cm"}},
		{name: "password wrong", dev: &fakeTasmota{password: "other"}, cred: pw, class: upload.ClassAuth, status: 401, reason: "check --password", requests: []string{"401 /cm"}},
		{name: "Referer gate's silence", dev: &fakeTasmota{gate: "strict-other"}, class: upload.ClassNetwork, reason: "Referer check", requests: []string{"SILENCE /cm"}},
		{name: "Referer gate holding the connection", dev: &fakeTasmota{gate: "strict-other", hangOnGate: true}, idle: 500 * time.Millisecond, class: upload.ClassTimeout, reason: "Referer check", requests: []string{"SILENCE /cm"}},
		{name: "ESP8266 image too large for its free space", dev: &fakeTasmota{status0: status0("14.2.0(tasmota)", "ESP8266EX", "http://x/tasmota.bin", 40)}, refused: "two steps", requests: []string{"CMD Status 0"}},
		{name: "ESP8266 image that fits", dev: &fakeTasmota{status0: status0("14.2.0(tasmota)", "ESP8266EX", "http://x/tasmota.bin", 400), uploadPage: pageOK}, requests: []string{"CMD Status 0", "GET /up", "POST /u2?fsz=70000"}},
		// An ESP32 safeboot layout's app: the page's button restarts it
		// into safeboot first (German build: the words say nothing).
		{name: "safeboot layout", dev: &fakeTasmota{upPage: pageFactory}, refused: "--via-url", requests: []string{"CMD Status 0", "GET /up"}},
		{name: "no /cm", dev: &fakeTasmota{status0: "-", uploadPage: pageOK}, requests: []string{"CMD Status 0", "GET /up", "POST /u2?fsz=70000"}},
		{name: "upload 500", dev: &fakeTasmota{uploadCode: 500, uploadPage: "oops"}, class: upload.ClassRejected, status: 500, requests: []string{"CMD Status 0", "GET /up", "POST /u2?fsz=70000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := tc.dev
			otherName := dev.gate == "strict-other"
			if otherName {
				dev.gate = ""
			}
			tg := startFake(t, dev)
			if otherName {
				// Reached by a name the device does not know as its own.
				tg.Host = "localhost"
			}
			idle := tc.idle
			if idle == 0 {
				idle = 5 * time.Second
			}
			err := (&Transport{IdleTimeout: idle}).Send(testkit.Ctx(t), tg, firmware(70000, "/tmp/tasmota.bin"), tc.cred, nil)
			if tc.refused != "" {
				var re *upload.RefusedError
				if !errors.As(err, &re) || !strings.Contains(re.Reason, tc.refused) {
					t.Fatalf("want refused %q, got %v", tc.refused, err)
				}
			} else if tc.class == "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if dev.file == "" || dev.fileLen != 70000 {
					t.Errorf("part file name %q, %d bytes", dev.file, dev.fileLen)
				}
				for _, ref := range dev.referers {
					if ref != "http://"+tg.Host+":"+strconv.Itoa(tg.Port)+"/" {
						t.Errorf("Referer %q", ref)
					}
				}
			} else {
				de := testkit.DeviceError(t, err, func(e *upload.DeviceError) string { return e.Reason })
				if de.Class != tc.class || de.Status != tc.status || !strings.Contains(de.Reason, tc.reason) {
					t.Fatalf("got %s %d %q, want %s %d %q", de.Class, de.Status, de.Reason, tc.class, tc.status, tc.reason)
				}
				if strings.Contains(de.Error(), "s3cret") {
					t.Fatalf("secret in %q", de.Error())
				}
			}
			if got := dev.seen(); strings.Join(got, "|") != strings.Join(tc.requests, "|") {
				t.Fatalf("requests %q, want %q", got, tc.requests)
			}
		})
	}
}

// TestCredentialsOnlyInHeader: the password never travels in a URL.
func TestCredentialsOnlyInHeader(t *testing.T) {
	var mu sync.Mutex
	var uris []string
	dev := &fakeTasmota{password: "s3cret", uploadPage: pageOK, status0: status0("14.3.0(tasmota)", "ESP32-D0WD-V3", "http://ota.example/tasmota32.bin", 2000)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		uris = append(uris, r.URL.RequestURI())
		mu.Unlock()
		dev.ServeHTTP(w, r)
	})
	dev.t = t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	host, port := testkit.HostPort(t, ln.Addr().String())
	tg := upload.Target{Host: host, Port: port}
	if err := (&Transport{}).Send(testkit.Ctx(t), tg, firmware(5000, "fw.bin"), upload.Credentials{Password: auth.NewSecret("s3cret")}, nil); err != nil {
		t.Fatal(err)
	}
	for _, u := range uris {
		if strings.Contains(u, "s3cret") || strings.Contains(u, "password") {
			t.Fatalf("credentials in the URL %q", u)
		}
	}
}

func status0(version, hw, otaURL string, freeKiB int) string {
	return fmt.Sprintf(`{"Status":{"Module":1},"StatusPRM":{"OtaUrl":%q,"Uptime":"0T01:00:00","BootCount":5},"StatusFWR":{"Version":%q,"Hardware":%q},"StatusMEM":{"ProgramSize":600,"Free":%d}}`,
		otaURL, version, hw, freeKiB)
}

// fakeServer is a test double of package fileserve: it serves nothing,
// it hands the fetches the fake device scripts to onFetch.
type fakeServer struct {
	mu      sync.Mutex
	addr    string
	files   map[string]string
	onFetch func(Fetch)
	closed  bool
}

func (s *fakeServer) URL(name string) string {
	return "http://" + s.addr + "/0123456789abcdef01234567/" + name
}
func (s *fakeServer) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// byURL is a Server whose Serve is the double, and the double it started.
func byURL(t *testing.T) (*Server, *fakeServer) {
	fs := &fakeServer{}
	srv := &Server{
		Serve: func(addr string, files map[string]string, onFetch func(Fetch)) (FileServer, error) {
			fs.mu.Lock()
			defer fs.mu.Unlock()
			fs.addr, fs.files, fs.onFetch = addr, files, onFetch
			return fs, nil
		},
		Route:     func(netip.Addr) (netip.Addr, error) { return netip.MustParseAddr("127.0.0.1"), nil },
		FetchIdle: 3 * time.Second,
	}
	return srv, fs
}

// files writes the firmware and the given companions into a directory.
func files(t *testing.T, main string, size int, companions ...string) (string, *upload.Firmware) {
	dir := t.TempDir()
	fw := firmware(size, filepath.Join(dir, main))
	if err := os.WriteFile(fw.Name, fw.Data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range companions {
		if err := os.WriteFile(filepath.Join(dir, c), fw.Data[:size/2], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, fw
}

// TestByURL: the command sequence (Status 0, then Backlog OtaUrl; Upgrade
// 1, then, from Finish, OtaUrl <old>), the files served, the refusals
// before any command, and the wait for the device's fetches.
func TestByURL(t *testing.T) {
	const old = "http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"
	full := func(fs *fakeServer, size int64) []Fetch {
		return []Fetch{{Name: "fw.bin", Remote: "127.0.0.1:40001", Status: 200, Bytes: size, MAC: "AA:BB:CC:DD:EE:FF"}}
	}
	// An ESP8266 the image does not fit: its first download of the
	// firmware is refused after the server wrote it all into the socket's
	// buffers, then it fetches the -minimal image and, from that, the
	// firmware.
	twoStep := func(fs *fakeServer, size int64) []Fetch {
		return []Fetch{
			{Name: "fw.bin", Remote: "127.0.0.1:40001", Status: 200, Bytes: size, MAC: "AA:BB:CC:DD:EE:FF"},
			{Name: "fw-minimal.bin.gz", Remote: "127.0.0.1:40001", Status: 200, Bytes: size / 2, MAC: "AA:BB:CC:DD:EE:FF"},
			{Name: "fw.bin", Remote: "127.0.0.1:40002", Status: 200, Bytes: size, MAC: "AA:BB:CC:DD:EE:FF"},
		}
	}
	for _, tc := range []struct {
		name        string
		main        string
		companions  []string
		status0     string
		fetches     func(fs *fakeServer, size int64) []Fetch
		refused     string
		class       upload.Class
		served      []string
		commands    []string
		finishWarn  string
		finalOtaURL string
	}{
		{name: "ESP32", main: "tasmota32.bin", status0: status0("14.3.0(tasmota32)", "ESP32-D0WD-V3", old, 1800), fetches: full,
			served: []string{"fw.bin"}, commands: []string{"Status 0", "Backlog OtaUrl URL; Upgrade 1", "OtaUrl " + old}, finalOtaURL: old},
		{name: "ESP8266 two steps", main: "tasmota.bin", companions: []string{"tasmota-minimal.bin", "tasmota.bin.gz"}, status0: status0("14.2.0(tasmota)", "ESP8266EX", old, 40),
			fetches: func(fs *fakeServer, size int64) []Fetch {
				return []Fetch{
					{Name: "fw.bin", Remote: "127.0.0.1:40001", Status: 200, Bytes: 1460}, // too large: it stops reading
					{Name: "fw-minimal.bin", Remote: "127.0.0.1:40002", Status: 200, Bytes: size / 2},
					{Name: "fw.bin", Remote: "127.0.0.1:40003", Status: 200, Bytes: size},
				}
			},
			served: []string{"fw-minimal.bin", "fw.bin", "fw.bin.gz"}, commands: []string{"Status 0", "Backlog OtaUrl URL; Upgrade 1", "OtaUrl " + old}, finalOtaURL: old},
		{name: "ESP8266 minimal of a translated build", main: "tasmota-DE.bin", companions: []string{"tasmota-minimal.bin.gz"}, status0: status0("14.2.0(tasmota)", "ESP8266EX", old, 40),
			fetches: twoStep, served: []string{"fw-minimal.bin.gz", "fw.bin"}, commands: []string{"Status 0", "Backlog OtaUrl URL; Upgrade 1", "OtaUrl " + old}, finalOtaURL: old},
		// Predicted two steps, but the device took the firmware whole and
		// fetched nothing more: once the idle time passed, verification
		// decides (it may run the image), not a failure.
		{name: "ESP8266 two-step predicted, whole firmware in one go", main: "tasmota.bin", companions: []string{"tasmota-minimal.bin.gz"}, status0: status0("14.2.0(tasmota)", "ESP8266EX", old, 40),
			fetches: full, served: []string{"fw-minimal.bin.gz", "fw.bin"}, commands: []string{"Status 0", "Backlog OtaUrl URL; Upgrade 1", "OtaUrl " + old}, finalOtaURL: old},
		{name: "ESP8266 needs minimal, none", main: "tasmota.bin", status0: status0("14.2.0(tasmota)", "ESP8266EX", old, 40), refused: "-minimal", commands: []string{"Status 0"}, finalOtaURL: ""},
		{name: "ESP8266 fits", main: "tasmota.bin.gz", status0: status0("14.2.0(tasmota)", "ESP8266EX", old, 600),
			fetches: func(fs *fakeServer, size int64) []Fetch {
				return []Fetch{{Name: "fw.bin.gz", Remote: "127.0.0.1:40001", Status: 200, Bytes: size}}
			}, served: []string{"fw.bin.gz"}, commands: []string{"Status 0", "Backlog OtaUrl URL; Upgrade 1", "OtaUrl " + old}, finalOtaURL: old},
		{name: "no OtaUrl told", main: "tasmota32.bin", status0: `{"StatusFWR":{"Version":"14.3.0(tasmota32)","Hardware":"ESP32-S3"}}`, refused: "OtaUrl", commands: []string{"Status 0"}},
		{name: "device never fetches", main: "tasmota32.bin", status0: status0("14.3.0(tasmota32)", "ESP32-S3", old, 1800), class: upload.ClassTimeout,
			served: []string{"fw.bin"}, commands: []string{"Status 0", "Backlog OtaUrl URL; Upgrade 1", "OtaUrl " + old}, finalOtaURL: old},
		{name: "range fetches", main: "tasmota32.bin", status0: status0("14.3.0(tasmota32)", "ESP32-C3", old, 1800),
			fetches: func(fs *fakeServer, size int64) []Fetch {
				return []Fetch{
					{Name: "fw.bin", Remote: "127.0.0.1:40001", Status: 206, Bytes: size / 2, Range: "bytes=0-"},
					{Name: "", Remote: "127.0.0.1:40001", Status: 404},
					{Name: "fw.bin", Remote: "127.0.0.1:40001", Status: 206, Bytes: size - size/2, Range: fmt.Sprintf("bytes=%d-", size/2)},
				}
			}, served: []string{"fw.bin"}, commands: []string{"Status 0", "Backlog OtaUrl URL; Upgrade 1", "OtaUrl " + old}, finalOtaURL: old},
		{name: "empty OtaUrl before", main: "tasmota32.bin", status0: status0("14.3.0(tasmota32)", "ESP32-D0WD-V3", "", 1800), fetches: full,
			served: []string{"fw.bin"}, commands: []string{"Status 0", "Backlog OtaUrl URL; Upgrade 1"}, finishWarn: "was empty", finalOtaURL: "URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, fw := files(t, tc.main, 60000, tc.companions...)
			srv, fs := byURL(t)
			dev := &fakeTasmota{status0: tc.status0, password: "pw"}
			dev.onBacklog = func(u string) {
				if tc.fetches == nil {
					return
				}
				fs.mu.Lock()
				on := fs.onFetch
				fs.mu.Unlock()
				for _, f := range tc.fetches(fs, fw.Size()) {
					if f.Name == "fw.bin.gz" && strings.HasSuffix(tc.main, ".gz") {
						f.Bytes = fw.Size()
					}
					on(f)
				}
			}
			tg := startFake(t, dev)
			tr := &Transport{ViaURL: true, Server: srv}
			cred := upload.Credentials{Password: auth.NewSecret("pw")}
			var msgs []string
			var mu sync.Mutex
			err := tr.Send(testkit.Ctx(t), tg, fw, cred, func(e upload.Event) {
				mu.Lock()
				msgs = append(msgs, e.Message)
				mu.Unlock()
			})
			for _, m := range msgs {
				if strings.Contains(m, "0123456789abcdef01234567") {
					t.Errorf("the URL's token in an event: %q", m)
				}
			}
			switch {
			case tc.refused != "":
				var re *upload.RefusedError
				if !errors.As(err, &re) || !strings.Contains(re.Reason, tc.refused) {
					t.Fatalf("want refused %q, got %v", tc.refused, err)
				}
			case tc.class != "":
				de := testkit.DeviceError(t, err, func(e *upload.DeviceError) string { return e.Reason })
				if de.Class != tc.class || de.NoRetry == "" {
					t.Fatalf("got %s (no retry %q), want %s", de.Class, de.NoRetry, tc.class)
				}
			case err != nil:
				t.Fatalf("Send: %v", err)
			}
			warn := tr.Finish(testkit.Ctx(t), tg, cred, upload.Ending{Settled: true})
			if !strings.Contains(warn, tc.finishWarn) || tc.finishWarn == "" && warn != "" {
				t.Fatalf("Finish: %q, want %q", warn, tc.finishWarn)
			}
			if again := tr.Finish(testkit.Ctx(t), tg, cred, upload.Ending{Settled: true}); again != "" {
				t.Fatalf("second Finish: %q", again)
			}
			var got []string
			for _, r := range dev.seen() {
				r = strings.TrimPrefix(r, "CMD ")
				got = append(got, strings.Replace(strings.Replace(r, fs.URL("fw.bin.gz"), "URL", 1), fs.URL("fw.bin"), "URL", 1))
				if strings.Contains(r, "Backlog") && !strings.Contains(r, "http://127.0.0.1:0/") {
					t.Errorf("URL not the file server's: %q", r)
				}
			}
			if strings.Join(got, "|") != strings.Join(tc.commands, "|") {
				t.Fatalf("commands %q, want %q", got, tc.commands)
			}
			var served []string
			for name, path := range fs.files {
				served = append(served, name)
				if filepath.Dir(path) != filepath.Dir(fw.Name) {
					t.Errorf("%s served from %s, outside the firmware's directory", name, path)
				}
			}
			if strings.Join(sorted(served), "|") != strings.Join(tc.served, "|") {
				t.Fatalf("served %q, want %q", sorted(served), tc.served)
			}
			dev.mu.Lock()
			final := strings.Replace(strings.Replace(dev.otaURL, fs.URL("fw.bin.gz"), "URL", 1), fs.URL("fw.bin"), "URL", 1)
			dev.mu.Unlock()
			if final != tc.finalOtaURL {
				t.Fatalf("device's OtaUrl at the end %q, want %q", final, tc.finalOtaURL)
			}
			if err := srv.Close(); err != nil || tc.served != nil && !fs.closed {
				t.Fatalf("Close: %v, closed %v", err, fs.closed)
			}
		})
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestByURLGateAndAuth: the Referer gate's silence and the 401 WARNING on
// /cm are reported, and nothing is left to restore.
func TestByURLGateAndAuth(t *testing.T) {
	_, fw := files(t, "tasmota32.bin", 5000)
	for _, tc := range []struct {
		name   string
		dev    *fakeTasmota
		host   string
		class  upload.Class
		reason string
	}{
		{name: "401 WARNING", dev: &fakeTasmota{password: "pw"}, class: upload.ClassAuth, reason: "pass --password"},
		{name: "gate", dev: &fakeTasmota{}, host: "localhost", class: upload.ClassNetwork, reason: "Referer check"},
		{name: "not Tasmota", dev: &fakeTasmota{status0: `{"POWER":"ON"}`}, class: upload.ClassRejected, reason: "not Tasmota's status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := byURL(t)
			dev := tc.dev
			tg := startFake(t, dev)
			if tc.host != "" {
				tg.Host = tc.host
			}
			tr := &Transport{ViaURL: true, Server: srv}
			err := tr.Send(testkit.Ctx(t), tg, fw, upload.Credentials{}, nil)
			de := testkit.DeviceError(t, err, func(e *upload.DeviceError) string { return e.Reason })
			if de.Class != tc.class || !strings.Contains(de.Reason, tc.reason) {
				t.Fatalf("got %s %q", de.Class, de.Reason)
			}
			if w := tr.Finish(testkit.Ctx(t), tg, upload.Credentials{}, upload.Ending{Settled: true}); w != "" {
				t.Fatalf("Finish after a refusal: %q", w)
			}
			for _, r := range dev.seen() {
				if strings.Contains(r, "Backlog") {
					t.Fatalf("a command was sent: %q", r)
				}
			}
		})
	}
}

// TestFindFiles: the served names keep Tasmota's derivation of the
// minimal URL exact.
func TestFindFiles(t *testing.T) {
	for _, tc := range []struct {
		main       string
		companions []string
		want       string
		minimal    bool
		err        string
	}{
		{main: "tasmota.bin", want: "fw.bin"},
		{main: "tasmota.bin", companions: []string{"tasmota-minimal.bin"}, want: "fw-minimal.bin fw.bin", minimal: true},
		{main: "tasmota.bin.gz", companions: []string{"tasmota-minimal.bin.gz"}, want: "fw-minimal.bin.gz fw.bin.gz", minimal: true},
		{main: "tasmota-sensors.bin", companions: []string{"tasmota-minimal.bin", "tasmota-minimal.bin.gz", "tasmota-sensors.bin.gz"}, want: "fw-minimal.bin fw-minimal.bin.gz fw.bin fw.bin.gz", minimal: true},
		{main: "tasmota.elf", err: ".bin"},
	} {
		dir, fw := files(t, tc.main, 100, tc.companions...)
		set := findFiles(fw.Name)
		if tc.err != "" {
			if set.err == nil || !strings.Contains(set.err.Error(), tc.err) {
				t.Errorf("%s: err %v", tc.main, set.err)
			}
			continue
		}
		var names []string
		for n, p := range set.files {
			names = append(names, n)
			if filepath.Dir(p) != filepath.Clean(dir) {
				t.Errorf("%s from %s", n, p)
			}
		}
		if got := strings.Join(sorted(names), " "); got != tc.want || set.minimal != tc.minimal {
			t.Errorf("%s: served %q minimal %v, want %q %v", tc.main, got, set.minimal, tc.want, tc.minimal)
		}
		// The device's own derivation of the minimal URL from the main one.
		if tc.minimal {
			u, _ := url.Parse("http://h/tok-en/" + set.main)
			base := filepath.Base(u.Path)
			ext := base[strings.IndexByte(base, '.'):]
			if _, ok := set.files[strings.TrimSuffix(base, ext)+"-minimal"+ext]; !ok {
				if _, ok := set.files[strings.TrimSuffix(base, ext)+"-minimal"+ext+".gz"]; !ok {
					t.Errorf("%s: the device would ask for %s", tc.main, strings.TrimSuffix(base, ext)+"-minimal"+ext)
				}
			}
		}
	}
}

// TestFetchedGoesToItsDevice: a fetch reaches the device whose MAC it
// carries, wherever it came from; without a MAC, the devices at its
// address.
func TestFetchedGoesToItsDevice(t *testing.T) {
	s := &Server{}
	a, stopA := s.watch(netip.MustParseAddr("127.0.0.1"), "AA:AA:AA:AA:AA:AA")
	defer stopA()
	b, stopB := s.watch(netip.MustParseAddr("127.0.0.1"), "BB:BB:BB:BB:BB:BB")
	c, stopC := s.watch(netip.MustParseAddr("127.0.0.2"), "")
	defer stopC()
	got := func(ch chan Fetch) int {
		n := 0
		for {
			select {
			case <-ch:
				n++
			default:
				return n
			}
		}
	}
	s.fetched(Fetch{Name: "fw.bin", Remote: "127.0.0.9:1000", MAC: "bb:bb:bb:bb:bb:bb"})
	s.fetched(Fetch{Name: "fw.bin", Remote: "127.0.0.1:1000"})
	s.fetched(Fetch{Name: "fw.bin", Remote: "127.0.0.2:1000", MAC: "CC:CC:CC:CC:CC:CC"})
	if na, nb, nc := got(a), got(b), got(c); na != 1 || nb != 2 || nc != 1 {
		t.Fatalf("fetches handed: a %d, b %d, c %d; want 1, 2, 1", na, nb, nc)
	}
	stopB()
	s.fetched(Fetch{Name: "fw.bin", Remote: "127.0.0.1:1000", MAC: "BB:BB:BB:BB:BB:BB"})
	if na, nb := got(a), got(b); na != 0 || nb != 0 {
		t.Fatalf("after stop: a %d, b %d", na, nb)
	}
}
