package form

import (
	"context"
	"encoding/base64"
	"errors"
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

// image is an app-looking file of size bytes (first byte 0xE9), random
// after it, so no multipart boundary hides in it by construction.
func image(size int, name string) *upload.Firmware {
	r := rand.New(rand.NewPCG(uint64(size), 7))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	data[0] = 0xE9
	return upload.NewFirmware(name, data, false)
}

func target(t testing.TB, addr string) upload.Target {
	host, port := testkit.HostPort(t, addr)
	return upload.Target{Name: "dev", Host: host, Port: port, Protocol: upload.Form}
}

// events collects a transfer's events.
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

// The libraries' answers (docs/protocols/form.md): HTTPUpdateServer's
// (arduino-esp32, and ESPEasy's ESP32 copy) with "\r\n" after the
// Updater's text, ESP8266HTTPUpdateServer's with "ERROR[n]: " and "\n"
// and its two CORS headers; 401 with Basic's challenge.
const (
	successPage = `<META http-equiv="refresh" content="15;URL=/">Update Success! Rebooting...`
	cors        = "Access-Control-Allow-Headers: *"
	cors2       = "Access-Control-Allow-Origin: *"
	challenge   = `WWW-Authenticate: Basic realm="Login Required"`
)

func page(body string, headers ...string) string {
	return testkit.Reply(200, "text/html", body, headers...)
}

// One table over each family's answers: what Send returns (nil, or the
// class, status and words of its DeviceError, and whether it reads as a
// 2xx failure page that the runner verifies), how many more tries the class
// allows (of a budget of 3), and what the device's parser saw.
func TestFormAnswers(t *testing.T) {
	user := upload.Credentials{User: "admin", Password: auth.NewSecret("s3cret-pass")}
	for _, tc := range []struct {
		name    string
		reply   string
		cred    upload.Credentials
		class   upload.Class // "" = accepted
		words   string
		why     string // in the reason
		page    bool   // wraps ErrFailurePage
		retries int
	}{
		{name: "esp32 success", reply: page(successPage)},
		{name: "esp8266 success", reply: page(successPage, cors, cors2)},
		{name: "success with credentials", reply: page(successPage), cred: user},
		// A short password inside the device's words: judged on what the
		// device said, redacted only in what is kept.
		{name: "success, a password inside its words", reply: page(successPage),
			cred: upload.Credentials{User: "admin", Password: auth.NewSecret("p")}},
		{name: "esp8266 4096 bytes, a password inside its words", reply: page("Update error: ERROR[13]: No data supplied\n", cors, cors2),
			cred:  upload.Credentials{User: "admin", Password: auth.NewSecret("p")},
			class: upload.ClassRejected, words: "U[redacted]date error: ERROR[13]: No data su[redacted][redacted]lied", why: "4096 bytes or less", page: true},
		{name: "esp32 not an app image", reply: page("Update error: Decryption error\r\n"),
			class: upload.ClassRejected, words: "Update error: Decryption error", why: "decrypt", page: true},
		{name: "esp8266 image of 4096 bytes or less", reply: page("Update error: ERROR[13]: No data supplied\n", cors, cors2),
			class: upload.ClassRejected, words: "Update error: ERROR[13]: No data supplied", why: "4096 bytes or less", page: true},
		{name: "esp8266 magic byte", reply: page("Update error: ERROR[10]: Magic byte is not 0xE9\n", cors, cors2),
			class: upload.ClassRejected, words: "Update error: ERROR[10]: Magic byte is not 0xE9", why: "not an app image", page: true},
		{name: "esp8266 flash config", reply: page("Update error: ERROR[9]: new Flash config wrong, real size: 1048576\n", cors, cors2),
			class: upload.ClassRejected, words: "Update error: ERROR[9]: new Flash config wrong, real size: 1048576", why: "flash size", page: true},
		{name: "esp32 too big", reply: page("Update error: Not Enough Space\r\n"),
			class: upload.ClassRejected, words: "Update error: Not Enough Space", why: "larger than", page: true},
		{name: "esp32 flash write", reply: page("Update error: Flash Write Failed\r\n"),
			class: upload.ClassWriteFailed, words: "Update error: Flash Write Failed", why: "write to flash", page: true, retries: 1},
		{name: "esp8266 stream timeout", reply: page("Update error: ERROR[6]: Stream Read Timeout\n", cors, cors2),
			class: upload.ClassNetwork, words: "Update error: ERROR[6]: Stream Read Timeout", why: "waited too long", page: true, retries: 3},
		{name: "esp32 cross-site check", reply: page("Update error: Wrong origin received!"),
			class: upload.ClassRejected, words: "Update error: Wrong origin received!", why: "Origin", page: true},
		{name: "401 without credentials", reply: testkit.Reply(401, "text/html", "", challenge),
			class: upload.ClassAuth, why: "pass --user and --password"},
		{name: "401 with credentials", reply: testkit.Reply(401, "text/html", "", challenge), cred: user,
			class: upload.ClassAuth, why: "check --user and --password"},
		{name: "another path", reply: testkit.Reply(404, "text/html", "Not found: /update"),
			class: upload.ClassRejected, words: "Not found: /update", why: "no upload handler"},
		{name: "200 in no family's words", reply: page("<html><body>Hello from my sketch</body></html>"),
			class: upload.ClassRejected, words: "Hello from my sketch", why: "words of success", page: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: func(*testkit.WebRequest) string { return tc.reply }})
			fw := image(64<<10, "build/esp32/fw-1.0.bin")
			var ev events
			err := (&Transport{ProgressInterval: 5 * time.Millisecond}).Send(testkit.Ctx(t), target(t, dev.Addr), fw, tc.cred, ev.emit)
			if tc.class == "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
			} else {
				de := testkit.DeviceError(t, err, func(de *upload.DeviceError) string { return de.Reason })
				if de.Class != tc.class || de.Words != tc.words || !strings.Contains(de.Reason, tc.why) ||
					errors.Is(err, upload.ErrFailurePage) != tc.page || de.NoRetry != "" {
					t.Fatalf("got %s %d %q (%s), failure page %v; want %s %q with %q, failure page %v",
						de.Class, de.Status, de.Words, de.Reason, errors.Is(err, upload.ErrFailurePage), tc.class, tc.words, tc.why, tc.page)
				}
				if got := de.Class.Retries(3); got != tc.retries {
					t.Errorf("%s allows %d retries, want %d", de.Class, got, tc.retries)
				}
				if de.Taken != fw.Size() {
					t.Errorf("Taken %d, want the whole image %d (the device answers after reading it)", de.Taken, fw.Size())
				}
			}
			r := dev.WaitRequests(t, 1)[0]
			checkRequest(t, r, fw, "firmware", "fw-1.0.bin", tc.cred)
		})
	}
}

// checkRequest: what the device's parser saw. One POST to /update, the
// file part under field with filename= and application/octet-stream, the
// whole image; Origin exactly "http://" + Host; Basic credentials when a
// user was given, no Authorization otherwise.
func checkRequest(t *testing.T, r testkit.WebRequest, fw *upload.Firmware, field, filename string, cred upload.Credentials) {
	t.Helper()
	if r.Method != "POST" || r.Target != "/update" || r.ParseErr != "" {
		t.Fatalf("%s %s, parse: %s", r.Method, r.Target, r.ParseErr)
	}
	if r.Field != field || r.Filename != filename || r.PartType != "application/octet-stream" || r.Parts != 0 {
		t.Errorf("file part name=%q filename=%q Content-Type %q after %d other parts", r.Field, r.Filename, r.PartType, r.Parts)
	}
	if r.FileSize != fw.Size() || r.FileMD5 != fw.MD5 {
		t.Errorf("file %d bytes md5 %s, want %d %s", r.FileSize, r.FileMD5, fw.Size(), fw.MD5)
	}
	if o, h := r.Header.Get("Origin"), r.Header.Get("Host"); o != "http://"+h || h == "" {
		t.Errorf("Origin %q for Host %q", o, h)
	}
	if r.Header.Get("Expect") != "" || r.Header.Get("Transfer-Encoding") != "" {
		t.Errorf("Expect %q, Transfer-Encoding %q", r.Header.Get("Expect"), r.Header.Get("Transfer-Encoding"))
	}
	want := ""
	if cred.User != "" {
		want = "Basic " + base64.StdEncoding.EncodeToString([]byte(cred.User+":"+cred.Password.Reveal()))
	}
	if got := r.Header.Get("Authorization"); got != want {
		t.Errorf("Authorization %q, want %q", got, want)
	}
}

// A device that closes after the whole body without an answer may have
// taken the image: the error says so (ErrAnswerLost), so the runner reads
// it before any resend. One that cuts the body halfway took part of it.
func TestFormNoAnswer(t *testing.T) {
	fw := image(256<<10, "fw.bin")
	t.Run("after the whole body", func(t *testing.T) {
		dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: func(*testkit.WebRequest) string { return "" }})
		err := (&Transport{}).Send(testkit.Ctx(t), target(t, dev.Addr), fw, upload.Credentials{}, nil)
		de := testkit.DeviceError(t, err, func(de *upload.DeviceError) string { return de.Reason })
		if de.Class != upload.ClassNetwork || !errors.Is(err, upload.ErrAnswerLost) || !upload.MayHaveTakenAll(err, fw.Size()) {
			t.Fatalf("%s %v", de.Class, err)
		}
	})
	t.Run("cut halfway", func(t *testing.T) {
		dev := testkit.StartWebDevice(t, &testkit.WebDevice{StopAt: 64 << 10, Cut: true})
		err := (&Transport{}).Send(testkit.Ctx(t), target(t, dev.Addr), fw, upload.Credentials{}, nil)
		de := testkit.DeviceError(t, err, func(de *upload.DeviceError) string { return de.Reason })
		if de.Class != upload.ClassNetwork || upload.MayHaveTakenAll(err, fw.Size()) || de.Class.Retries(3) != 3 {
			t.Fatalf("%s, taken %d: %v", de.Class, de.Taken, err)
		}
	})
}

// Where each family takes a filesystem image: only ESP8266HTTPUpdateServer
// known as such, under the field "filesystem"; everything else is refused
// before a byte is sent (Screen, and Send itself), app images go to all.
func TestFormFilesystem(t *testing.T) {
	fs := upload.NewFirmware("littlefs.bin", make([]byte, 64<<10), true)
	app := image(64<<10, "fw.bin")
	for _, tc := range []struct {
		family, chip string
		fw           *upload.Firmware
		refused      string // in the refusal; "" = sent
	}{
		{FamilyHTTPUpdateServer, "esp8266", fs, ""},
		{FamilyHTTPUpdateServer, "ESP8266", fs, ""},
		{FamilyHTTPUpdateServer, "esp32", fs, "SPIFFS.totalBytes()"},
		{FamilyHTTPUpdateServer, "", fs, "not known"},
		{FamilyESPEasy, "esp8266", fs, "ESPEasy takes no filesystem image"},
		{FamilyESPEasy, "esp32", fs, "ESPEasy takes no filesystem image"},
		{"", "esp8266", fs, "not known"},
		{"", "", fs, "not known"},
		{FamilyElegantOTA2, "esp32", app, "ElegantOTA v2"},
		{FamilyESPEasy, "esp32", app, ""},
		{FamilyHTTPUpdateServer, "esp32", app, ""},
		{"", "", app, ""},
	} {
		name := tc.family + "/" + tc.chip + "/" + tc.fw.Name
		t.Run(name, func(t *testing.T) {
			dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: func(*testkit.WebRequest) string { return page(successPage) }})
			tg := target(t, dev.Addr)
			tg.Family, tg.Chip = tc.family, tc.chip
			tr := &Transport{}
			if got := tr.Screen(tg, tc.fw); !strings.Contains(got, tc.refused) || (got == "") != (tc.refused == "") {
				t.Fatalf("Screen = %q, want %q", got, tc.refused)
			}
			err := tr.Send(testkit.Ctx(t), tg, tc.fw, upload.Credentials{}, nil)
			if tc.refused != "" {
				var re *upload.RefusedError
				if !errors.As(err, &re) || !strings.Contains(re.Reason, tc.refused) {
					t.Fatalf("Send: %v", err)
				}
				if n := len(dev.Requests()); n != 0 {
					t.Fatalf("%d requests reached the device", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			field, name := "firmware", "fw.bin"
			if tc.fw.Filesystem {
				field, name = "filesystem", "littlefs.bin"
			}
			checkRequest(t, dev.WaitRequests(t, 1)[0], tc.fw, field, name, upload.Credentials{})
		})
	}
}

// The runner asks the transport before anything is sent: a filesystem
// image for ESPEasy ends refused with no try; the same for an
// ESP8266HTTPUpdateServer goes out.
func TestFormRunnerScreensFilesystem(t *testing.T) {
	dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: func(*testkit.WebRequest) string { return page(successPage) }})
	espeasy, hus := target(t, dev.Addr), target(t, dev.Addr)
	espeasy.Name, espeasy.Family, espeasy.Chip = "espeasy", FamilyESPEasy, "esp8266"
	hus.Name, hus.Family, hus.Chip, hus.Host = "hus", FamilyHTTPUpdateServer, "esp8266", "localhost"
	o := upload.Options{Transports: map[upload.Protocol]upload.Transport{upload.Form: &Transport{}}, NoVerify: true}
	fs := upload.NewFirmware("littlefs.bin", make([]byte, 8<<10), true)
	res := upload.Run(testkit.Ctx(t), fs, []upload.Target{espeasy, hus}, o)
	if r := res[0]; r.Outcome != upload.OutcomeRefused || r.Tries != 0 || !strings.Contains(r.Message, "ESPEasy") {
		t.Errorf("espeasy: %s after %d tries: %s", r.Outcome, r.Tries, r.Message)
	}
	if r := res[1]; r.Outcome != upload.OutcomeAccepted || r.Tries != 1 {
		t.Errorf("hus: %s after %d tries: %s", r.Outcome, r.Tries, r.Message)
	}
	if reqs := dev.WaitRequests(t, 1); len(reqs) != 1 || reqs[0].Field != "filesystem" {
		t.Errorf("requests %+v", reqs)
	}
}

// Progress counts image bytes the device acknowledged: it never goes back,
// never passes the image's size, and ends at it on success.
func TestFormProgress(t *testing.T) {
	dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: func(*testkit.WebRequest) string { return page(successPage) }})
	fw := image(2<<20, "fw.bin")
	var ev events
	if err := (&Transport{ProgressInterval: time.Millisecond}).Send(testkit.Ctx(t), target(t, dev.Addr), fw, upload.Credentials{}, ev.emit); err != nil {
		t.Fatal(err)
	}
	checkProgress(t, ev.all(), fw.Size(), fw.Size())
}

// checkProgress: Done is monotonic, at most limit, every event's Total is
// the image's size, and the last event reports end.
func checkProgress(t *testing.T, evs []upload.Event, size, end int64) {
	t.Helper()
	var last int64
	for _, e := range evs {
		if e.Done < last || e.Done > size || e.Total != size {
			t.Fatalf("event %+v after %d of %d", e, last, size)
		}
		last = e.Done
	}
	if len(evs) < 2 || last != end {
		t.Fatalf("%d events, last at %d, want %d", len(evs), last, end)
	}
}

// No second copy of the image: the transport streams it from the
// firmware's own bytes, so what a 4 MiB upload allocates (the test device
// included, which keeps only a hash) stays far below the image's size.
func TestFormStreamsTheImage(t *testing.T) {
	dev := testkit.StartWebDevice(t, &testkit.WebDevice{Reply: func(*testkit.WebRequest) string { return page(successPage) }})
	fw := image(4<<20, "fw.bin")
	tr := &Transport{ProgressInterval: time.Hour}
	send := func() {
		if err := tr.Send(context.Background(), target(t, dev.Addr), fw, upload.Credentials{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	send() // warm up: lazily built tables, the first connection
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	send()
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 512<<10 {
		t.Fatalf("a 4 MiB upload allocated %d KiB: the image is copied", got>>10)
	} else {
		t.Logf("a 4 MiB upload allocated %d KiB", got>>10)
	}
}
