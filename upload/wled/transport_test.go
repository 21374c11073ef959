package wled

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/image/wledmeta"
	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// wledImage is an app-looking image of size bytes with WLED metadata of
// release rel at off (none when rel is ""), random elsewhere.
func wledImage(size, off int, ver, rel string, dv uint32, safe [3]byte) []byte {
	r := rand.New(rand.NewPCG(uint64(size), 19))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	b[0] = 0xE9
	if rel != "" {
		copy(b[off:], wledmeta.Block(dv, ver, rel, safe))
	}
	return b
}

func gzipped(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// msgPage is a page shaped as WLED's serveMessage sends it: its title, a
// script, the headline in <h2>, then the detail.
func msgPage(head, detail string) string {
	return "<!DOCTYPE html><html><head><title>WLED Message</title><script>function B(){window.history.back()}</script>" +
		"<style>@import url('style.css');</style></head><body><h2>" + head + "</h2>" + detail + "<br><button onclick=B()>Back</button></body></html>"
}

// seen is one request the fake device read.
type seen struct {
	Method, Path string
	// Fields are the multipart parts in order: name=value for text parts,
	// name:filename:<size>:<md5> for the file.
	Fields []string
}

// fakeWLED is a loopback stand-in for a WLED device, written for this
// test: GET /json/info answers info; POST /update reads the form part by
// part (as WLED's server hands parts to its handler) and answers what
// answer says for the try (the first 1). A gate (status 401 or 503) is
// answered at the first file bytes, as WLED does, the rest left unread.
type fakeWLED struct {
	info   string
	answer func(try int) (status int, body string)
	// infoFn, when set, is asked for /json/info each time instead of info.
	infoFn func() string

	mu    sync.Mutex
	reqs  []seen
	tries int
}

func (d *fakeWLED) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func (d *fakeWLED) requests() []seen {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]seen(nil), d.reqs...)
}

func (d *fakeWLED) serve(w http.ResponseWriter, r *http.Request) {
	s := seen{Method: r.Method, Path: r.URL.Path}
	defer func() {
		d.mu.Lock()
		d.reqs = append(d.reqs, s)
		d.mu.Unlock()
	}()
	switch {
	case r.Method == "GET" && r.URL.Path == "/json/info" && d.infoFn != nil:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, d.infoFn())
		return
	case r.Method == "GET" && r.URL.Path == "/json/info":
		if d.info == "" {
			http.Error(w, "Not found", 404)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, d.info)
		return
	case r.Method != "POST" || r.URL.Path != "/update":
		http.Error(w, "Not found", 404)
		return
	}
	d.mu.Lock()
	d.tries++
	try := d.tries
	d.mu.Unlock()
	status, body := d.answer(try)
	mr, err := r.MultipartReader()
	if err != nil {
		s.Fields = append(s.Fields, "error: "+err.Error())
		http.Error(w, "bad form", 400)
		return
	}
	for {
		p, err := mr.NextPart()
		if err != nil {
			if err != io.EOF {
				s.Fields = append(s.Fields, "error: "+err.Error())
			}
			break
		}
		if p.FileName() == "" {
			v, _ := io.ReadAll(p)
			s.Fields = append(s.Fields, p.FormName()+"="+string(v))
			continue
		}
		if status == 401 || status == 503 {
			// Answered at the first chunk of the file.
			s.Fields = append(s.Fields, p.FormName()+":"+p.FileName()+":gated")
			break
		}
		h := md5.New()
		n, _ := io.Copy(h, p)
		s.Fields = append(s.Fields, fmt.Sprintf("%s:%s:%d:%s", p.FormName(), p.FileName(), n, hex.EncodeToString(h.Sum(nil))))
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func info(ver, release, arch string) string {
	return fmt.Sprintf(`{"ver":%q,"vid":2508290,"release":%q,"repo":"wled/WLED","name":"Desk","arch":%q,"uptime":77,"brand":"WLED","product":"FOSS","mac":"a842e3aabbcc"}`,
		ver, release, arch)
}

var (
	successBody = msgPage("Update successful!", "Rebooting now...")
	esp32Image  = wledImage(64<<10, 288, "0.15.5", "ESP32", 1, [3]byte{0, 15, 2})
)

func always(status int, body string) func(int) (int, string) {
	return func(int) (int, string) { return status, body }
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

func (l *events) messages() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var m []string
	for _, e := range l.ev {
		if e.Message != "" {
			m = append(m, e.Message)
		}
	}
	return strings.Join(m, " | ")
}

func (l *events) lastDone() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d int64
	for _, e := range l.ev {
		d = max(d, e.Done)
	}
	return d
}

// TestWLED is one table over WLED's answers and gates, and the release
// check: what Send returns (nil, a refusal with nothing of the image
// sent, or a DeviceError of a class, with the device's words and a reason
// naming what to do), and exactly which requests the device saw (no PIN,
// no unlock, no other request ever).
func TestWLED(t *testing.T) {
	md5Of := func(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }
	post := func(skip string, img []byte) seen {
		return seen{Method: "POST", Path: "/update", Fields: []string{"skipValidation=" + skip, fmt.Sprintf("update:fw.bin:%d:%s", len(img), md5Of(img))}}
	}
	gated := func(skip string) seen {
		return seen{Method: "POST", Path: "/update", Fields: []string{"skipValidation=" + skip, "update:fw.bin:gated"}}
	}
	getInfo := seen{Method: "GET", Path: "/json/info"}
	v4Image := wledImage(64<<10, 288, "0.15.5", "ESP32_V4", 1, [3]byte{})
	noMeta := wledImage(64<<10, 0, "", "", 0, [3]byte{})
	esp8266Image := wledImage(64<<10, 0x1010, "16.0.1", "ESP8266", 1, [3]byte{})
	gz := gzipped(t, esp8266Image)
	safe := wledImage(64<<10, 288, "0.15.6", "ESP32", 2, [3]byte{0, 15, 3})

	for _, tc := range []struct {
		name   string
		info   string
		image  []byte
		force  bool
		answer func(int) (int, string)
		// want: "" accepted; "refused: TEXT"; else the class.
		want    string
		noRetry bool
		words   string // in the DeviceError's words
		reason  []string
		reqs    []seen
		note    string // in an event's message
	}{
		{name: "success", info: info("0.15.5", "ESP32", "esp32"), image: esp32Image, answer: always(200, successBody),
			reqs: []seen{getInfo, post("", esp32Image)}},
		{name: "success 16.x, _V4 ignored", info: info("16.0.1", "ESP32", "esp32"), image: v4Image, answer: always(200, successBody),
			reqs: []seen{getInfo, post("", v4Image)}},
		{name: "_V4 not ignored before 0.15.5", info: info("0.15.4", "ESP32", "esp32"), image: v4Image,
			want: `refused: the image is WLED release "ESP32_V4" (WLED 0.15.5), the device runs release "ESP32" (WLED 0.15.4)`, reqs: []seen{getInfo}},
		{name: "release mismatch", info: info("0.15.5", "ESP8266", "esp8266"), image: esp32Image,
			want: `refused: the image is WLED release "ESP32" (WLED 0.15.5), the device runs release "ESP8266" (WLED 0.15.5): WLED takes only a build of its own release; nothing sent (--force`, reqs: []seen{getInfo}},
		{name: "metadata missing", info: info("0.15.5", "ESP32", "esp32"), image: noMeta,
			want: "refused: the image carries no WLED release metadata (the block WLED looks for at offset 256)", reqs: []seen{getInfo}},
		{name: "metadata past where WLED looks", info: info("0.15.5", "ESP32", "esp32"), image: wledImage(64<<10, 4096, "0.15.5", "ESP32", 1, [3]byte{}),
			want: "refused: the image carries no WLED release metadata", reqs: []seen{getInfo}},
		{name: "safe-from above the device", info: info("0.15.2", "ESP32", "esp32"), image: safe,
			want: "refused: the image (WLED 0.15.6) may be installed only over WLED 0.15.3 or later, and the device runs 0.15.2", reqs: []seen{getInfo}},
		{name: "esp8266 gzip to 0.15.5", info: info("0.15.5", "ESP8266", "esp8266"), image: gz,
			want: "refused: WLED 0.15.5 checks a gzipped image's compressed bytes", reqs: []seen{getInfo}},
		{name: "esp8266 gzip to 16.0.1", info: info("16.0.1", "ESP8266", "esp8266"), image: gz, answer: always(200, successBody),
			reqs: []seen{getInfo, post("", gz)}},
		{name: "device tells no release", info: `{"ver":"0.15.5","brand":"WLED","arch":"esp32"}`, image: esp32Image,
			want: `refused: WLED 0.15.5 tells no release in /json/info, so the image's release "ESP32" cannot be checked`, reqs: []seen{getInfo}},
		{name: "older WLED checks nothing: no metadata is refused", info: `{"ver":"0.14.4","vid":2405180,"arch":"esp32","brand":"WLED"}`, image: noMeta,
			want: "refused: WLED 0.14.4 checks no release metadata (0.15.2 added the check) and the image carries none, so nothing says it is a WLED build for this device's release; nothing sent (--force", reqs: []seen{getInfo}},
		{name: "older WLED, its own release's image goes", info: info("0.15.1", "ESP32", "esp32"), image: esp32Image, answer: always(200, successBody),
			reqs: []seen{getInfo, post("", esp32Image)}},
		{name: "older WLED, another release's image", info: info("0.15.0", "ESP8266", "esp8266"), image: esp32Image,
			want: `refused: the image is WLED release "ESP32" (WLED 0.15.5), the device runs release "ESP8266" (WLED 0.15.0)`, reqs: []seen{getInfo}},
		{name: "not WLED: 404", image: esp32Image, want: "refused: GET /json/info answered 404, not WLED's device info: is this a WLED device?", reqs: []seen{getInfo}},
		{name: "not WLED: other JSON", info: `{"temperature":21}`, image: esp32Image, want: "refused: GET /json/info did not answer as WLED does", reqs: []seen{getInfo}},
		{name: "force: no check, skipValidation=1", force: true, image: noMeta, answer: always(200, successBody),
			reqs: []seen{post("1", noMeta)}},

		{name: "device's release check", info: info("0.15.5", "ESP32", "esp32"), image: esp32Image,
			answer: always(500, msgPage("Update failed!", "Firmware release name mismatch: current='ESP32', uploaded='ESP32'. Enable 'Ignore firmware validation' to proceed anyway.")),
			want:   string(upload.ClassRejected), noRetry: true, words: "Update failed! Firmware release name mismatch", reason: []string{"release check"},
			reqs: []seen{getInfo, post("", esp32Image)}},
		{name: "device: metadata missing", force: false, info: info("0.15.5", "ESP32", "esp32"), image: esp32Image,
			answer: always(500, msgPage("Update failed!", "This firmware file is missing compatibility metadata. Enable 'Ignore firmware validation' to proceed anyway.")),
			want:   string(upload.ClassRejected), noRetry: true, words: "missing compatibility metadata", reqs: []seen{getInfo, post("", esp32Image)}},
		{name: "updater error", info: info("0.15.5", "ESP32", "esp32"), image: esp32Image,
			answer: always(500, msgPage("Update failed!", "Not Enough Space")),
			want:   string(upload.ClassRejected), words: "Update failed! Not Enough Space", reqs: []seen{getInfo, post("", esp32Image)}},
		{name: "gate: subnet", info: info("16.0.1", "ESP32", "esp32"), image: esp32Image,
			answer: always(401, msgPage("Access Denied", "Client is not on local subnet.")),
			want:   string(upload.ClassAuth), words: "Client is not on local subnet.", reason: []string{"own subnet", "does not work around"},
			reqs: []seen{getInfo, gated("")}},
		{name: "gate: PIN", info: info("16.0.1", "ESP32", "esp32"), image: esp32Image,
			answer: always(401, msgPage("Access Denied", "Please unlock settings using PIN code!")),
			want:   string(upload.ClassAuth), words: "Please unlock settings using PIN code!", reason: []string{"PIN", "never sends a PIN"},
			reqs: []seen{getInfo, gated("")}},
		{name: "gate: OTA lock", info: info("0.15.5", "ESP32", "esp32"), image: esp32Image,
			answer: always(401, msgPage("Access Denied", "Please unlock OTA in security settings!")),
			want:   string(upload.ClassAuth), words: "Please unlock OTA in security settings!", reason: []string{"OTA lock", "never unlocks"},
			reqs: []seen{getInfo, gated("")}},
		{name: "no OTA in this build", info: info("0.15.5", "ESP32", "esp32"), image: esp32Image,
			answer: always(501, msgPage("Not implemented", "This build does not support OTA update.")),
			want:   string(upload.ClassRejected), reason: []string{"WLED_DISABLE_OTA"}, reqs: []seen{getInfo, post("", esp32Image)}},
		{name: "200 without success", info: info("0.15.5", "ESP32", "esp32"), image: esp32Image,
			answer: always(200, "<html>Hello</html>"), want: string(upload.ClassRejected), reqs: []seen{getInfo, post("", esp32Image)}},
		{name: "503 once, then success", info: info("0.15.5", "ESP32", "esp32"), image: esp32Image,
			answer: func(try int) (int, string) {
				if try == 1 {
					return 503, ""
				}
				return 200, successBody
			},
			reqs: []seen{getInfo, gated(""), post("", esp32Image)}, note: "another upload to it is running"},
		{name: "503 twice: given up, no more tries", info: info("0.15.5", "ESP32", "esp32"), image: esp32Image, answer: always(503, ""),
			want: string(upload.ClassBusy), noRetry: true, reason: []string{"still running"}, reqs: []seen{getInfo, gated(""), gated("")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &fakeWLED{info: tc.info, answer: tc.answer}
			if d.answer == nil {
				d.answer = always(500, msgPage("Update failed!", "should not be asked"))
			}
			host, port := testkit.HostPort(t, d.start(t))
			tr := &Transport{SkipValidation: tc.force, BusyWait: 50 * time.Millisecond, IdleTimeout: 10 * time.Second}
			fw := upload.NewFirmware("fw.bin", tc.image, false)
			var ev events
			err := tr.Send(testkit.Ctx(t), upload.Target{Name: "dev", Host: host, Port: port, Protocol: upload.WLED}, fw, upload.Credentials{}, ev.emit)
			switch {
			case tc.want == "":
				if err != nil {
					t.Fatalf("Send = %v", err)
				}
				if got := ev.lastDone(); got != fw.Size() {
					t.Errorf("progress ended at %d, want %d", got, fw.Size())
				}
			case strings.HasPrefix(tc.want, "refused: "):
				var re *upload.RefusedError
				if !errors.As(err, &re) || !strings.Contains(re.Reason, strings.TrimPrefix(tc.want, "refused: ")) {
					t.Fatalf("Send = %v, want a refusal containing %q", err, strings.TrimPrefix(tc.want, "refused: "))
				}
			default:
				de := testkit.DeviceError(t, err, func(e *upload.DeviceError) string { return e.Reason })
				if string(de.Class) != tc.want || (de.NoRetry != "") != tc.noRetry || !strings.Contains(de.Words, tc.words) {
					t.Errorf("class %s noRetry %q words %q, want %s noRetry %v words ~%q (%v)", de.Class, de.NoRetry, de.Words, tc.want, tc.noRetry, tc.words, err)
				}
				for _, r := range tc.reason {
					if !strings.Contains(de.Reason, r) {
						t.Errorf("reason %q lacks %q", de.Reason, r)
					}
				}
			}
			if got := d.requests(); fmt.Sprint(got) != fmt.Sprint(tc.reqs) {
				t.Errorf("the device saw\n%v\nwant\n%v", got, tc.reqs)
			}
			if tc.note != "" && !strings.Contains(ev.messages(), tc.note) {
				t.Errorf("events %q lack %q", ev.messages(), tc.note)
			}
			// --force's warning goes to every result (Traits), once.
			if w := tr.Traits().Warning; tc.force != strings.Contains(w, "--force sends skipValidation=1") || strings.Contains(ev.messages(), "skipValidation") {
				t.Errorf("force %v: Traits().Warning %q; events %q", tc.force, w, ev.messages())
			}
		})
	}
}

// TestDecideVersions: which WLED versions check, and how.
func TestDecideVersions(t *testing.T) {
	for _, c := range []struct {
		ver  string
		want bool
	}{
		{"0.15.1", true}, {"0.14.4", true}, {"0.9.1", true}, {"0.15.2", false}, {"0.15.2-b1", false}, {"0.15.10", false},
		{"16.0.1", false}, {"17.0.0-devV5", false}, {"", false}, {"dev", false}, {"0.15", false},
	} {
		if got := versionBelow(c.ver, 0, 15, 2); got != c.want {
			t.Errorf("versionBelow(%q, 0.15.2) = %v, want %v", c.ver, got, c.want)
		}
	}
	// A device that tells no arch: the image's own header says ESP8266,
	// so the block is looked for at 0x1000.
	img := wledImage(64<<10, 0x1010, "0.15.5", "ESP8266", 1, [3]byte{})
	fw := upload.NewFirmware("fw.bin", img, false)
	if why, _ := Decide(devinfo.WLEDInfo{Ver: "0.15.5", Release: "ESP8266", Arch: "esp8266"}, fw); why != "" {
		t.Errorf("esp8266: %s", why)
	}
	if why, _ := Decide(devinfo.WLEDInfo{Ver: "0.15.5", Release: "ESP8266", Arch: "esp32"}, fw); !strings.Contains(why, "offset 256") {
		t.Errorf("an ESP32 looks at 256 only: %q", why)
	}
}

// TestTraits: WLED takes no filesystem image, and its devices never
// report the image's identity.
func TestTraits(t *testing.T) {
	tr := (&Transport{}).Traits()
	if tr.NoFilesystem == "" || !tr.NoImageIdentity || !tr.ChipUnchecked {
		t.Errorf("traits %+v", tr)
	}
	err := (&Transport{}).Send(testkit.Ctx(t), upload.Target{Host: "127.0.0.1", Port: 1}, upload.NewFirmware("fs.bin", []byte{1, 2, 3}, true), upload.Credentials{}, nil)
	var re *upload.RefusedError
	if !errors.As(err, &re) {
		t.Errorf("filesystem image: %v", err)
	}
}
