package detect

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testnet"
)

// Loopback fakes of each family's web server, written from the wire facts
// in docs/protocols/README.md (nothing of the client's): each records every
// request it gets, so the tests can check that detection sends allowed
// probes only, without credentials.

// seen is one request a fake got.
type seen struct {
	method, target string
	header         http.Header
	body           int64
}

type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

func (r *recorder) add(s seen) {
	r.mu.Lock()
	r.reqs = append(r.reqs, s)
	r.mu.Unlock()
}

func (r *recorder) all() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.reqs...)
}

// serveHTTP starts an HTTP fake on loopback; h answers every request.
func serveHTTP(t *testing.T, rec *recorder, h http.HandlerFunc) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		rec.add(seen{method: r.Method, target: r.RequestURI, header: r.Header.Clone(), body: n})
		h(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func gz(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = io.WriteString(w, s)
	_ = w.Close()
	return b.Bytes()
}

// routes answers by "METHOD target"; anything else is 404.
func routes(m map[string]func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h, ok := m[r.Method+" "+r.RequestURI]; ok {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	}
}

func text(code int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

func jsonBody(body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}
}

func gzPage(body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Encoding", "gzip") // always, asked or not
		_, _ = w.Write(gz(body))
	}
}

const husPage = `<!DOCTYPE html><html lang='en'><body>
<form method='POST' action='' enctype='multipart/form-data'>Firmware:<br><input type='file' accept='.bin,.bin.gz' name='firmware'><input type='submit' value='Update Firmware'></form>
<form method='POST' action='' enctype='multipart/form-data'>FileSystem:<br><input type='file' accept='.bin,.bin.gz,.image' name='filesystem'><input type='submit' value='Update FileSystem'></form>
</body></html>`

// oldHUSPage is ESP8266HTTPUpdateServer's page in its older releases: one
// form, its file input named update.
const oldHUSPage = `<html><body><form method='POST' action='' enctype='multipart/form-data'>
<input type='file' name='update'>
<input type='submit' value='Update'>
</form></body></html>`

// digestRequired is ESPAsyncWebServer's requestAuthentication(): Digest
// by default.
func digestRequired(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("WWW-Authenticate", `Digest realm="Login Required", qop="auth", nonce="0123456789abcdef0123456789abcdef", opaque="fedcba9876543210fedcba9876543210"`)
	w.WriteHeader(http.StatusUnauthorized)
}

// asyncPrefix routes like ESPAsyncWebServer with a GET handler on path:
// it also serves path + "/…" (so /update answers /update/identity);
// anything else, OPTIONS included, is 404 "Not found".
func asyncPrefix(path string, h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && (r.URL.Path == path || strings.HasPrefix(r.URL.Path, path+"/")) {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "Not found")
	}
}

// loginRequired is the Arduino WebServer's requestAuthentication().
func loginRequired(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("WWW-Authenticate", `Basic realm="Login Required"`)
	w.WriteHeader(http.StatusUnauthorized)
}

// tasmota answers like Tasmota: Server header on its pages, /cm only to a
// Referer naming the device (else it closes without a word). With a web
// password every page is a bare 401 challenge, which may lack the Server
// header; /cm then answers its JSON warning (here without the header, so
// that the JSON is what tells).
func tasmota(password bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !password {
			w.Header().Set("Server", "Tasmota/14.3.0 (ESP32-DevKit)")
		}
		switch {
		case password && r.RequestURI != "/cm?cmnd=Status%200":
			loginRequired(w, r)
		case r.RequestURI == "/cm?cmnd=Status%200":
			if !strings.HasPrefix(strings.ToUpper(r.Referer()), "HTTP://127.0.0.1") {
				hj, _ := w.(http.Hijacker)
				c, _, _ := hj.Hijack()
				c.Close()
				return
			}
			w.Header().Set("Content-Type", "application/json")
			if password {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"WARNING":"Need user=<username>&password=<password>"}`)
				return
			}
			_, _ = io.WriteString(w, `{"Status":{"Module":1},"StatusFWR":{"Version":"14.3.0(tasmota)","Hardware":"ESP32-D0WD-V3"}}`)
		case r.RequestURI == "/":
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<!DOCTYPE html><html><head><title>Tasmota</title></head></html>")
		default:
			http.NotFound(w, r)
		}
	}
}

// esphomeOTA is ESPHome's native OTA port: 5 bytes that are not the magic
// get the error byte 0x80, then the connection is closed.
func esphomeOTA(t *testing.T, rec *recorder) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 5)
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				// Record the request line the bytes begin, for the check.
				rest := make([]byte, 256)
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, _ := c.Read(rest)
				line, _, _ := strings.Cut(string(b)+string(rest[:n]), "\r\n")
				if m, tg, ok := strings.Cut(line, " "); ok {
					tg, _, _ = strings.Cut(tg, " ")
					rec.add(seen{method: m, target: tg, header: http.Header{}})
				}
				if !bytes.Equal(b, []byte{0x6C, 0x26, 0xF7, 0x5C, 0x45}) {
					_, _ = c.Write([]byte{0x80})
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// checkProbes fails for any request that is not an allowed probe, has a
// body, or carries credentials.
func checkProbes(t *testing.T, name string, reqs []seen) {
	t.Helper()
	for _, r := range reqs {
		p := Probe{Kind: KindHTTP, Method: r.method, Target: r.target, Referer: r.header.Get("Referer") != ""}
		if !Allowed(p) {
			t.Errorf("%s: detection sent %s, which is not an allowed probe", name, p)
		}
		for _, h := range []string{"Authorization", "Proxy-Authorization", "Cookie"} {
			if r.header.Get(h) != "" {
				t.Errorf("%s: %s carried %s", name, p, h)
			}
		}
		if r.body != 0 || r.header.Get("Content-Length") != "" {
			t.Errorf("%s: %s carried a body", name, p)
		}
	}
}

// TestDetectFamilies: each family's fake, probed the way push probes a
// URL target (the word http) or a plain HOST:PORT (no word), is told apart,
// with allowed probes only.
func TestDetectFamilies(t *testing.T) {
	urlWord := Evidence{Word: HTTP, WordFrom: "the URL (/update)"}
	for _, tc := range []struct {
		name string
		ota  func(*testing.T, *recorder) int // the upload port; nil: a dead one
		web  func(*testing.T, *recorder) int // the web port; nil: none
		// webIsOTA: the web port is the upload port (a URL to the web app).
		webIsOTA bool
		ev       Evidence
		want     Protocol
		family   Family
		refused  bool
	}{
		{name: "seed", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /update": text(405, "Specified method is invalid for this resource")})), want: HTTP, family: FamilySeed},
		{name: "seed with /ota/status", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /ota/status": jsonBody(`{"project":"p","version":"1.0.0","state":"valid","running":"ota_0"}`)})), ev: urlWord, want: HTTP, family: FamilySeed},
		{name: "OTS web app by URL", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /api/status": jsonBody(`{"firmwareVersion":"2.1.0"}`), "GET /": text(200, "<html>OTS</html>")})),
			webIsOTA: true, ev: Evidence{Word: HTTP, WordFrom: "the URL (/ota/upload)"}, want: HTTP, family: FamilyOTS},
		{name: "arduino-esp32 HTTPUpdateServer", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){"GET /update": text(200, husPage)})), ev: urlWord, want: ProtoForm, family: FamilyHTTPUpdateServer},
		{name: "ESP8266HTTPUpdateServer behind auth", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /update": loginRequired,
			"OPTIONS /update": func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Access-Control-Allow-Headers", "*")
				w.Header().Set("Access-Control-Allow-Origin", "*")
				text(200, "y")(w, r)
			}})), want: ProtoForm, family: FamilyHTTPUpdateServer},
		{name: "arduino-esp32 HTTPUpdateServer with credentials", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /update": loginRequired})), refused: true, family: FamilyWebUploader},
		{name: "ESP8266HTTPUpdateServer before core 3.1.0, with credentials", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /update": loginRequired})), ev: urlWord, refused: true, family: FamilyWebUploader},
		{name: "AsyncElegantOTA with Digest auth", ota: fake(asyncPrefix("/update", digestRequired)), refused: true, family: FamilyWebUploader},
		{name: "WLED with its OTA lock", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /update": loginRequired, "GET /json/info": jsonBody(`{"ver":"0.15.5","brand":"WLED"}`)})), ev: urlWord, want: ProtoWLED, family: FamilyWLED},
		{name: "old ESP8266HTTPUpdateServer form name='update'", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){"GET /update": text(200, oldHUSPage)})), ev: urlWord, refused: true, family: FamilyWebUploader},
		{name: "ElegantOTA v3 async: /update/identity is the page", ota: fake(asyncPrefix("/update", gzPage("<html><head><title>ElegantOTA Lite</title></head></html>"))), ev: urlWord, want: ProtoElegantOTA, family: FamilyElegantOTA3},
		{name: "ElegantOTA v3", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){"GET /update": gzPage("<html><head><title>ElegantOTA Lite</title></head></html>")})), ev: urlWord, want: ProtoElegantOTA, family: FamilyElegantOTA3},
		{name: "ElegantOTA v2", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /update": gzPage("<html><div id=app></div></html>"), "GET /update/identity": jsonBody(`{"id":"3C71BF4A2B10","hardware":"ESP8266"}`)})), ev: urlWord, refused: true, family: FamilyElegantOTA2},
		{name: "ESPEasy", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /update": text(200, husPage), "GET /json": jsonBody(`{"System":{"Build":20100,"Git Build":"mega-20241019"},"WiFi":{"Hostname":"espeasy"}}`)})), ev: urlWord, want: ProtoForm, family: FamilyESPEasy},
		{name: "WLED", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /update": gzPage("<html>WLED Update</html>"), "GET /": gzPage("<html>WLED</html>"),
			"GET /json/info": jsonBody(`{"ver":"0.15.5","vid":2504110,"brand":"WLED","arch":"esp32"}`)})), ev: urlWord, want: ProtoWLED, family: FamilyWLED},
		{name: "WLED on 80, nothing on the OTA port", web: fake(routes(map[string]func(http.ResponseWriter, *http.Request){
			"GET /json/info": jsonBody(`{"ver":"0.15.5","brand":"WLED"}`)})), want: ProtoWLED, family: FamilyWLED},
		{name: "Tasmota", ota: fake(tasmota(false)), ev: urlWord, want: ProtoTasmota, family: FamilyTasmota},
		{name: "Tasmota with a password", ota: fake(tasmota(true)), want: ProtoTasmota, family: FamilyTasmota},
		{name: "ESPHome native OTA", ota: esphomeOTA, refused: true, family: FamilyESPHome},
		{name: "_http._tcp host answering 405 only", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){"GET /update": text(405, "Method Not Allowed")})),
			ev: Evidence{Service: "_http._tcp"}, refused: true},
		{name: "printer seen as _http._tcp, inventory says http", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){"GET /": text(200, "<html>LaserJet</html>")})),
			ev: Evidence{Service: "_http._tcp", Word: HTTP, WordFrom: "the inventory"}, refused: true},
		{name: "printer seen as _http._tcp", ota: fake(routes(map[string]func(http.ResponseWriter, *http.Request){"GET /": text(200, "<html>LaserJet</html>")})),
			ev: Evidence{Service: "_http._tcp"}, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			tg := Target{Host: "127.0.0.1", WebPort: -1}
			if tc.ota != nil {
				tg.Port = tc.ota(t, rec)
			} else {
				a := testnet.DeadAddr(t)
				_, p, _ := net.SplitHostPort(a)
				tg.Port, _ = strconv.Atoi(p)
			}
			if tc.web != nil {
				tg.WebPort = tc.web(t, rec)
			}
			if tc.webIsOTA {
				tg.WebPort = tg.Port
			}
			var sent []string
			det := Detector{ConnectTimeout: 2 * time.Second, RequestTimeout: 2 * time.Second,
				OnProbe: func(addr string, p Probe) { sent = append(sent, addr+" "+p.String()) }}
			d := det.Detect(context.Background(), tg, tc.ev)
			if d.Refused != tc.refused || d.Protocol != tc.want || d.Family != tc.family || d.Failure != nil || nestedParens(d.Why) {
				t.Fatalf("got %+v (failure %v), want %q family %q refused %v\nprobes: %q", d, d.Failure, tc.want, tc.family, tc.refused, sent)
			}
			reqs := rec.all()
			checkProbes(t, tc.name, reqs)
			if len(reqs) == 0 {
				t.Errorf("the fake saw no request")
			}
			t.Logf("%s: %s", d.Why, strings.Join(sent, ", "))
		})
	}
}

// fake makes a family fake from a handler.
func fake(h http.HandlerFunc) func(*testing.T, *recorder) int {
	return func(t *testing.T, rec *recorder) int { return serveHTTP(t, rec, h) }
}

// An ArduinoOTA device: TCP refused, the UDP port quiet. Detection sends
// one empty datagram and decides espota; no invitation, no HTTP.
func TestDetectArduinoOTA(t *testing.T) {
	addr, got := testnet.QuietUDP(t)
	host, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	var sent []Probe
	det := Detector{ConnectTimeout: time.Second, OnProbe: func(_ string, p Probe) { sent = append(sent, p) }}
	d := det.Detect(context.Background(), Target{Host: host, Port: port, WebPort: -1}, Evidence{})
	if d.Protocol != Espota || !d.Probed || d.Refused {
		t.Fatalf("got %+v", d)
	}
	if g := got(); len(g) != 1 || len(g[0]) != 0 {
		t.Errorf("the device got %q, want one empty datagram", g)
	}
	if fmt.Sprint(sent) != fmt.Sprint([]Probe{probeTCP, probeUDP}) {
		t.Errorf("probes %v, want a TCP connect and one datagram", sent)
	}
}

// Detect sends no probe outside the allowed list, whatever the table asks:
// the device sees nothing, and the decision is a refusal that says so.
func TestDetectSendsOnlyAllowed(t *testing.T) {
	rec := &recorder{}
	port := serveHTTP(t, rec, routes(nil))
	post := Probe{Kind: KindHTTP, Method: "POST", Target: "/update"}
	det := Detector{ConnectTimeout: time.Second, RequestTimeout: time.Second,
		decide: func(Evidence) Decision { return Decision{Need: &Step{Probe: post}} }}
	d := det.Detect(context.Background(), Target{Host: "127.0.0.1", Port: port, WebPort: -1}, Evidence{})
	if !d.Refused || d.Protocol != "" || !strings.Contains(d.Why, "POST /update, which is not one of its read-only probes; nothing sent") {
		t.Fatalf("got %+v", d)
	}
	if reqs := rec.all(); len(reqs) != 0 {
		t.Errorf("the device got %v", reqs)
	}
}
