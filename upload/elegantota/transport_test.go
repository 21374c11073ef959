package elegantota

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

func image(size int, name string, fs bool) *upload.Firmware {
	r := rand.New(rand.NewPCG(uint64(size), 11))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	data[0] = 0xE9
	return upload.NewFirmware(name, data, fs)
}

func target(t testing.TB, addr string) upload.Target {
	host, port := testkit.HostPort(t, addr)
	return upload.Target{Name: "dev", Host: host, Port: port, Protocol: upload.ElegantOTA}
}

type events struct {
	mu sync.Mutex
	ev []upload.Event
}

func (l *events) emit(e upload.Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *events) all() []upload.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]upload.Event(nil), l.ev...)
}

// ElegantOTA's answers (docs/protocols/elegantota.md): text/plain "OK", or
// 400 with the Updater's text and "\n" (ESP32 "…\r\n\n", ESP8266
// "ERROR[n]: …\n\n"); 401 Basic on the sync build, Digest on the async one.
func ok() string          { return testkit.Reply(200, "text/plain", "OK") }
func bad(w string) string { return testkit.Reply(400, "text/plain", w) }

const (
	basicChallenge        = `WWW-Authenticate: Basic realm="Login Required"`
	nonce                 = "0123456789abcdef0123456789abcdef"
	opaque                = "fedcba9876543210fedcba9876543210"
	digestChallengeHeader = `WWW-Authenticate: Digest realm="Login Required", qop="auth", nonce="` + nonce + `", opaque="` + opaque + `"`
)

var user = upload.Credentials{User: "admin", Password: auth.NewSecret("s3cret-pass")}

// asyncAuth answers like ElegantOTA on ESPAsyncWebServer with credentials
// admin / s3cret-pass: a Digest answer computed the qop way (any nonce),
// or, when acceptBasic, Basic; anything else a Digest challenge.
func asyncAuth(acceptBasic bool) func(r *testkit.WebRequest) bool {
	return func(r *testkit.WebRequest) bool {
		a := r.Header.Get("Authorization")
		if acceptBasic && a == "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:s3cret-pass")) {
			return true
		}
		p := digestParams(strings.TrimPrefix(a, "Digest "))
		if !strings.HasPrefix(a, "Digest ") || p["username"] != "admin" || p["uri"] != r.Target || p["qop"] != "auth" || p["opaque"] != opaque {
			return false
		}
		h := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
		ha1 := h("admin:Login Required:s3cret-pass")
		want := h(ha1 + ":" + p["nonce"] + ":" + p["nc"] + ":" + p["cnonce"] + ":auth:" + h(r.Method+":"+p["uri"]))
		return p["response"] == want
	}
}

// digestParams reads k="v" and k=v pairs the way ESPAsyncWebServer does.
func digestParams(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		m[k] = strings.Trim(v, `"`)
	}
	return m
}

// device answers GET /ota/start and POST /ota/upload with start and
// upload; authOK, when set, gates both (401 challenge otherwise).
type device struct {
	start, upload string
	authOK        func(r *testkit.WebRequest) bool
	challenge     string
}

func (d device) reply(r *testkit.WebRequest) string {
	if d.authOK != nil && !d.authOK(r) {
		return testkit.Reply(401, "text/html", "", d.challenge)
	}
	switch {
	case r.Method == "GET" && strings.HasPrefix(r.Target, "/ota/start"):
		return d.start
	case r.Method == "POST" && r.Target == "/ota/upload":
		return d.upload
	}
	return testkit.Reply(404, "text/plain", "Not found")
}

// One table over ElegantOTA's answers: what Send returns, its retry
// class, whether it forbids any further try (once /ota/start succeeded),
// and the requests the device saw.
func TestElegantOTAAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		dev     device
		cred    upload.Credentials
		class   upload.Class // "" = accepted
		words   string
		why     string // in the reason
		retries int
		noRetry bool
		seen    []string // "GET basic", "POST digest", … the requests and their Authorization scheme
	}{
		{name: "success", dev: device{start: ok(), upload: ok()}, seen: []string{"GET none", "POST none"}},
		{name: "sync with credentials", cred: user,
			dev:  device{start: ok(), upload: ok(), challenge: basicChallenge, authOK: func(r *testkit.WebRequest) bool { return strings.HasPrefix(r.Header.Get("Authorization"), "Basic ") }},
			seen: []string{"GET Basic", "POST Basic"}},
		{name: "async takes Basic", cred: user,
			dev:  device{start: ok(), upload: ok(), challenge: digestChallengeHeader, authOK: asyncAuth(true)},
			seen: []string{"GET Basic", "POST Basic"}},
		{name: "async wants Digest", cred: user,
			dev:  device{start: ok(), upload: ok(), challenge: digestChallengeHeader, authOK: asyncAuth(false)},
			seen: []string{"GET Basic", "GET Digest", "POST Digest"}},
		{name: "async refuses the password", cred: upload.Credentials{User: "admin", Password: auth.NewSecret("wrong-password")},
			dev:   device{start: ok(), upload: ok(), challenge: digestChallengeHeader, authOK: asyncAuth(false)},
			class: upload.ClassAuth, why: "check --user and --password", seen: []string{"GET Basic", "GET Digest"}},
		{name: "sync asks for credentials", dev: device{start: ok(), upload: ok(), challenge: basicChallenge, authOK: func(*testkit.WebRequest) bool { return false }},
			class: upload.ClassAuth, why: "pass --user and --password", seen: []string{"GET none"}},
		{name: "sync refuses the credentials", cred: user, dev: device{start: ok(), upload: ok(), challenge: basicChallenge, authOK: func(*testkit.WebRequest) bool { return false }},
			class: upload.ClassAuth, why: "check --user and --password", seen: []string{"GET Basic"}},
		{name: "start: esp32 no room", dev: device{start: bad("Not Enough Space\r\n\n")},
			class: upload.ClassRejected, words: "Not Enough Space", why: "larger than", seen: []string{"GET none"}},
		{name: "start: esp32 no partition", dev: device{start: bad("Partition Could Not be Found\r\n\n")},
			class: upload.ClassRejected, words: "Partition Could Not be Found", why: "no partition", seen: []string{"GET none"}},
		{name: "start: hash refused", dev: device{start: bad("MD5 parameter invalid")},
			class: upload.ClassRejected, words: "MD5 parameter invalid", why: "MD5", seen: []string{"GET none"}},
		{name: "start: esp8266 another update", dev: device{start: bad("ERROR[15]: Update already running\n\n")},
			class: upload.ClassRejected, words: "ERROR[15]: Update already running", why: "another update", seen: []string{"GET none"}},
		{name: "start: not ElegantOTA v3", dev: device{start: testkit.Reply(404, "text/html", "Not found: /ota/start")},
			class: upload.ClassRejected, words: "Not found: /ota/start", why: "does not run ElegantOTA v3", seen: []string{"GET none"}},
		{name: "start: no answer", dev: device{start: ""},
			class: upload.ClassNetwork, why: "without answering GET /ota/start", retries: 3, seen: []string{"GET none"}},
		{name: "upload: esp8266 image of 4096 bytes or less", dev: device{start: ok(), upload: bad("ERROR[13]: No data supplied\n\n")},
			class: upload.ClassRejected, words: "ERROR[13]: No data supplied", why: "4096 bytes or less", noRetry: true, seen: []string{"GET none", "POST none"}},
		{name: "upload: esp8266 magic byte", dev: device{start: ok(), upload: bad("ERROR[10]: Magic byte is not 0xE9\n\n")},
			class: upload.ClassRejected, words: "ERROR[10]: Magic byte is not 0xE9", why: "not an app image", noRetry: true, seen: []string{"GET none", "POST none"}},
		{name: "upload: esp32 not an app image", dev: device{start: ok(), upload: bad("Decryption error\r\n\n")},
			class: upload.ClassRejected, words: "Decryption error", why: "decrypt", noRetry: true, seen: []string{"GET none", "POST none"}},
		{name: "upload: async, no reason", dev: device{start: ok(), upload: bad("")},
			class: upload.ClassWriteFailed, why: "gave no reason", retries: 1, noRetry: true, seen: []string{"GET none", "POST none"}},
		{name: "upload: 3.0.0 async", dev: device{start: ok(), upload: testkit.Reply(500, "text/plain", "")},
			class: upload.ClassRejected, noRetry: true, seen: []string{"GET none", "POST none"}},
		{name: "upload: no answer", dev: device{start: ok(), upload: ""},
			class: upload.ClassNetwork, why: "it may have rebooted into it", retries: 3, noRetry: true, seen: []string{"GET none", "POST none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: tc.dev.reply})
			fw := image(64<<10, "build/fw-2.0.bin", false)
			err := (&Transport{}).Send(testkit.Ctx(t), target(t, dev.Addr), fw, tc.cred, nil)
			if tc.class == "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
			} else {
				de := testkit.DeviceError(t, err, func(de *upload.DeviceError) string { return de.Reason })
				if de.Class != tc.class || de.Words != tc.words || !strings.Contains(de.Reason, tc.why) || (de.NoRetry != "") != tc.noRetry {
					t.Fatalf("got %s %d %q (%s), no retry %q; want %s %q with %q, no retry %v",
						de.Class, de.Status, de.Words, de.Reason, de.NoRetry, tc.class, tc.words, tc.why, tc.noRetry)
				}
				if got := de.Class.Retries(3); got != tc.retries {
					t.Errorf("%s allows %d retries, want %d", de.Class, got, tc.retries)
				}
				if strings.Contains(de.Error(), "s3cret") || strings.Contains(de.Error(), "wrong-password") {
					t.Errorf("a secret in %q", de.Error())
				}
			}
			// The device notes a request before it answers it: all are
			// noted once Send has returned.
			reqs := dev.Requests()
			var seen []string
			for _, r := range reqs {
				scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
				if scheme == "" {
					scheme = "none"
				}
				seen = append(seen, r.Method+" "+scheme)
			}
			if strings.Join(seen, ", ") != strings.Join(tc.seen, ", ") {
				t.Fatalf("the device saw %v, want %v", seen, tc.seen)
			}
			checkRequests(t, reqs, fw, "fr")
		})
	}
}

// checkRequests: the start names the mode and the image's MD5; the upload
// is one file part under the page's field "file", with the file's base
// name and application/octet-stream, the whole image.
func checkRequests(t *testing.T, reqs []testkit.WebRequest, fw *upload.Firmware, mode string) {
	t.Helper()
	for _, r := range reqs {
		switch r.Method {
		case "GET":
			if want := "/ota/start?mode=" + mode + "&hash=" + fw.MD5; r.Target != want {
				t.Errorf("GET %s, want %s", r.Target, want)
			}
		case "POST":
			if r.Target != "/ota/upload" || r.ParseErr != "" || r.Field != "file" || r.Filename != "fw-2.0.bin" || r.PartType != "application/octet-stream" {
				t.Errorf("POST %s: field %q filename %q type %q, parse: %s", r.Target, r.Field, r.Filename, r.PartType, r.ParseErr)
			}
			if r.BodyRead > 0 && (r.FileSize != fw.Size() || r.FileMD5 != fw.MD5) {
				t.Errorf("file %d bytes md5 %s, want %d %s", r.FileSize, r.FileMD5, fw.Size(), fw.MD5)
			}
		}
	}
}

// A filesystem image begins the update with mode=fs.
func TestElegantOTAFilesystem(t *testing.T) {
	dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: device{start: ok(), upload: ok()}.reply})
	fw := image(64<<10, "fw-2.0.bin", true)
	if err := (&Transport{}).Send(testkit.Ctx(t), target(t, dev.Addr), fw, upload.Credentials{}, nil); err != nil {
		t.Fatal(err)
	}
	checkRequests(t, dev.WaitRequests(t, 2), fw, "fs")
}

// Once /ota/start succeeded, a failed upload is never tried again by the
// runner, whatever its class allows, and the result tells the user to
// restart the device; a start that got no answer is retried (nothing may
// have begun, and a second start continues a begun update at its start).
func TestElegantOTARunnerNeverRetriesAfterStart(t *testing.T) {
	o := upload.Options{Transports: map[upload.Protocol]upload.Transport{upload.ElegantOTA: &Transport{}},
		Retries: 3, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, NoVerify: true}
	fw := image(256<<10, "fw.bin", false)

	cut := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: device{start: ok(), upload: ok()}.reply, StopAt: 64 << 10, Cut: true})
	r := upload.Run(testkit.Ctx(t), fw, []upload.Target{target(t, cut.Addr)}, o)[0]
	if r.Outcome != upload.OutcomeFailed || r.Tries != 1 || r.Class != upload.ClassNetwork || !strings.Contains(r.Message, "(not retried: "+NoRetryHint+")") {
		t.Fatalf("%s (%s) after %d tries: %s", r.Outcome, r.Class, r.Tries, r.Message)
	}
	if n := len(cut.Requests()); n != 2 {
		t.Fatalf("the device saw %d requests, want the start and one upload", n)
	}

	silent := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: device{start: "", upload: ok()}.reply})
	r = upload.Run(testkit.Ctx(t), fw, []upload.Target{target(t, silent.Addr)}, o)[0]
	if r.Outcome != upload.OutcomeFailed || r.Tries != 4 || len(silent.Requests()) != 4 {
		t.Fatalf("a start without an answer: %s after %d tries (%d requests): %s", r.Outcome, r.Tries, len(silent.Requests()), r.Message)
	}
}

// Progress counts acknowledged image bytes, monotonic, to the whole image.
func TestElegantOTAProgress(t *testing.T) {
	dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: device{start: ok(), upload: ok()}.reply})
	fw := image(2<<20, "fw.bin", false)
	var ev events
	if err := (&Transport{ProgressInterval: time.Millisecond}).Send(testkit.Ctx(t), target(t, dev.Addr), fw, upload.Credentials{}, ev.emit); err != nil {
		t.Fatal(err)
	}
	evs := ev.all()
	var last int64
	for _, e := range evs {
		if e.Done < last || e.Done > fw.Size() || e.Total != fw.Size() {
			t.Fatalf("event %+v after %d", e, last)
		}
		last = e.Done
	}
	if last != fw.Size() || evs[0].Phase != upload.PhaseConnecting || !strings.Contains(evs[0].Message, "/ota/start") {
		t.Fatalf("first %+v, last at %d", evs[0], last)
	}
}

// No second copy of the image (see the form transport's test).
func TestElegantOTAStreamsTheImage(t *testing.T) {
	dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: device{start: ok(), upload: ok()}.reply})
	fw := image(4<<20, "fw.bin", false)
	tr := &Transport{ProgressInterval: time.Hour}
	send := func() {
		if err := tr.Send(context.Background(), target(t, dev.Addr), fw, upload.Credentials{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	send()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	send()
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 512<<10 {
		t.Fatalf("a 4 MiB upload allocated %d KiB: the image is copied", got>>10)
	}
}

// What a device echoes of the credentials is redacted from its words.
func TestElegantOTARedactsEcho(t *testing.T) {
	dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: device{start: bad("Not Enough Space for admin:s3cret-pass\r\n\n")}.reply})
	err := (&Transport{}).Send(testkit.Ctx(t), target(t, dev.Addr), image(8<<10, "fw.bin", false), user, nil)
	de := testkit.DeviceError(t, err, func(de *upload.DeviceError) string { return de.Reason })
	if strings.Contains(err.Error(), "s3cret-pass") || de.Class != upload.ClassRejected {
		t.Fatalf("%v", err)
	}
}
