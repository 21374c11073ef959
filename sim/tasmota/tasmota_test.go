package tasmota

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// silent sends a raw request and reports whether the device closed the
// connection without sending a byte.
func silent(t *testing.T, addr, req string) bool {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	return len(b) == 0 && err == nil
}

// TestRefererGate: the privileged pages answer only a Referer that names
// the device at index 7; anything else gets no byte at all.
func TestRefererGate(t *testing.T) {
	d := simtest.Start(t, variants[0].config())
	ip := d.IP().String()
	cases := []struct {
		name, referer string
		answered      bool
	}{
		{"none", "", false},
		{"other host", "http://192.168.1.9/", false},
		{"address", "http://" + ip + "/", true},
		{"address and port", "http://" + ip + ":80/up", true},
		{"host name, lower case", "http://" + d.Name() + "/", true},
		{"host name, upper case", "http://" + strings.ToUpper(d.Name()) + "/", true},
		{"https", "https://" + ip + "/", false},
		{"address later", "http://x/" + ip, false},
	}
	for _, c := range cases {
		for _, path := range []string{"/cm?cmnd=Status%202", "/up"} {
			t.Run(c.name+" "+path, func(t *testing.T) {
				req := "GET " + path + " HTTP/1.1\r\nHost: " + d.OTAAddr() + "\r\n"
				if c.referer != "" {
					req += "Referer: " + c.referer + "\r\n"
				}
				if got := !silent(t, d.OTAAddr(), req+"\r\n"); got != c.answered {
					t.Errorf("answered %v, want %v", got, c.answered)
				}
			})
		}
	}
	t.Run("SetOption128", func(t *testing.T) {
		if r := cm(t, d, "SetOption128 1"); r.body != `{"SetOption128":"ON"}` {
			t.Fatalf("got %q", r.body)
		}
		if silent(t, d.OTAAddr(), "GET /cm?cmnd=Status HTTP/1.1\r\nHost: x\r\n\r\n") {
			t.Error("SetOption128 1 did not open the gate")
		}
		cm(t, d, "SetOption128 0")
	})
}

// TestAuth: the web password: a Basic challenge on the pages, 401 JSON on
// /cm (Basic or user=&password= both pass), translated with the build.
func TestAuth(t *testing.T) {
	for _, lang := range []string{"", "de"} {
		t.Run("lang "+lang, func(t *testing.T) {
			cfg := variants[1].config()
			cfg.Password, cfg.Language = auth.NewSecret("s3cret"), lang
			d := simtest.Start(t, cfg)
			base := "http://" + d.OTAAddr()
			ref := map[string]string{"Referer": referer(d)}
			r := do(t, "GET", base+"/up", nil, ref)
			if r.code != 401 || r.header.Get("WWW-Authenticate") != `Basic realm="Login Required"` {
				t.Errorf("/up: %d %v", r.code, r.header)
			}
			req, _ := http.NewRequest("GET", base+"/up", nil)
			req.SetBasicAuth("admin", "s3cret")
			ok := do(t, "GET", base+"/up", nil, map[string]string{"Referer": referer(d), "Authorization": req.Header.Get("Authorization")})
			if ok.code != 200 {
				t.Errorf("/up with the password: %d", ok.code)
			}
			want := `{"WARNING":"Need user=<username>&password=<password>"}`
			if lang == "de" {
				want = `{"WARNING":"Benötige user=<Benutzername>&password=<Passwort>"}`
			}
			if r := cm(t, d, "Status 2"); r.code != 401 || r.body != want || r.header.Get("Content-Type") != "application/json" {
				t.Errorf("/cm: %d %q %v", r.code, r.body, r.header)
			}
			r = do(t, "GET", base+"/cm?user=admin&password=s3cret&cmnd=Status%202", nil, ref)
			if r.code != 200 || !strings.Contains(r.body, "StatusFWR") {
				t.Errorf("/cm with user and password: %d %q", r.code, r.body)
			}
			r = do(t, "GET", base+"/cm?cmnd=Status%202", nil, map[string]string{"Referer": referer(d), "Authorization": req.Header.Get("Authorization")})
			if r.code != 200 {
				t.Errorf("/cm with Basic: %d %q", r.code, r.body)
			}
		})
	}
}

// TestUpload: GET /up then POST /u2?fsz=N installs, answers 200
// "Upload Successful", restarts; Version, BuildDateTime, Uptime and
// BootCount tell it.
func TestUpload(t *testing.T) {
	for _, v := range variants[:2] {
		t.Run(v.name, func(t *testing.T) {
			d := simtest.Start(t, v.config())
			before := status(t, d, "0")
			if got := before["StatusFWR"]["Version"]; got != "15.4.0(tasmota)" {
				t.Fatalf("Version %v", got)
			}
			time.Sleep(1100 * time.Millisecond)
			up := status(t, d, "11")["StatusSTS"]["UptimeSec"].(float64)
			r := upload(t, d, v.image(t, "tasmota", "15.5.0", 0), nil)
			if r.code != 200 || !strings.Contains(r.body, "Upload <font color='#47c266'>Successful</font>") ||
				!strings.Contains(r.body, "Device will restart in a few seconds") {
				t.Fatalf("got %d %q", r.code, r.body)
			}
			if got := r.header.Get("Server"); !strings.HasPrefix(got, "Tasmota/15.4.0 (") {
				t.Errorf("Server %q", got)
			}
			rebooted(t, d, 1)
			after := status(t, d, "0")
			fwr, prm := after["StatusFWR"], after["StatusPRM"]
			if fwr["Version"] != "15.5.0(tasmota)" || fwr["BuildDateTime"] == before["StatusFWR"]["BuildDateTime"] ||
				prm["BootCount"] != float64(2) || after["StatusSTS"]["UptimeSec"].(float64) >= up {
				t.Errorf("after: %v %v %v", fwr, prm, after["StatusSTS"])
			}
			if got := status(t, d, "2")["StatusFWR"]["Hardware"]; got == nil {
				t.Error("no Hardware")
			}
		})
	}
}

// TestUploadErrors: every error HandleUploadLoop sets, as the page says it
// (always 200), in English and German; nothing restarts.
func TestUploadErrors(t *testing.T) {
	img := func(v variant) []byte { return v.image(t, "tasmota", "15.5.0", 0) }
	bad := append([]byte{0x00}, make([]byte, 3000)...)
	cases := []struct {
		name  string
		v     variant
		lang  string
		send  func(t *testing.T, d *core.Device, v variant) reply
		want  string
		count bool
	}{
		{"no filename", variants[0], "", func(t *testing.T, d *core.Device, v variant) reply {
			body, ct := form(t, "", img(v))
			return do(t, "POST", "http://"+d.OTAAddr()+"/u2", bytes.NewReader(body), map[string]string{"Referer": referer(d), "Content-Type": ct})
		}, "No file selected", false},
		{"magic", variants[1], "", func(t *testing.T, d *core.Device, v variant) reply { return upload(t, d, bad, nil) }, "Magic byte is not 0xE9", false},
		{"magic de", variants[1], "de", func(t *testing.T, d *core.Device, v variant) reply { return upload(t, d, bad, nil) }, "Falsche Dateisignatur", false},
		{"fsz above the free space", variants[1], "", func(t *testing.T, d *core.Device, v variant) reply {
			body, ct := form(t, "fw.bin", img(v))
			return do(t, "POST", "http://"+d.OTAAddr()+"/u2?fsz=99999999", bytes.NewReader(body), map[string]string{"Referer": referer(d), "Content-Type": ct})
		}, "Program flash size is larger than real flash size", false},
		{"safeboot layout, from the app", variants[2], "", func(t *testing.T, d *core.Device, v variant) reply { return upload(t, d, img(v), nil) }, "Not enough space", false},
		{"safeboot layout, from the app, de", variants[2], "de", func(t *testing.T, d *core.Device, v variant) reply { return upload(t, d, img(v), nil) }, "Ungenügend Speicherplatz", false},
		{"after /rs", variants[0], "", func(t *testing.T, d *core.Device, v variant) reply {
			if r := do(t, "GET", "http://"+d.OTAAddr()+"/rs", nil, map[string]string{"Referer": referer(d)}); r.code != 200 {
				t.Fatalf("/rs: %d", r.code)
			}
			body, ct := form(t, "fw.bin", img(v))
			return do(t, "POST", "http://"+d.OTAAddr()+"/u2", bytes.NewReader(body), map[string]string{"Referer": referer(d), "Content-Type": ct})
		}, "File too large", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.v.config()
			cfg.Language = c.lang
			d := simtest.Start(t, cfg)
			r := c.send(t, d, c.v)
			failed := "Failed"
			if c.lang == "de" {
				failed = "fehlgeschlagen"
			}
			if r.code != 200 || !strings.Contains(r.body, failed+"</font></b><br><br>"+c.want) {
				t.Fatalf("got %d %v %q", r.code, r.err, r.body)
			}
			time.Sleep(100 * time.Millisecond)
			if st := d.State(); st.BootCount != 1 || st.Boot != st.Running {
				t.Errorf("a failed upload changed the device: %+v", st)
			}
		})
	}
}

// TestUploadNoReferer: the upload loop runs before the Referer check: the
// image becomes the boot image, the client gets nothing, nothing restarts.
func TestUploadNoReferer(t *testing.T) {
	v := variants[1]
	d := simtest.Start(t, v.config())
	body, ct := form(t, "fw.bin", v.image(t, "tasmota", "15.5.0", 0))
	req := fmt.Sprintf("POST /u2 HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", d.OTAAddr(), ct, len(body), body)
	if !silent(t, d.OTAAddr(), req) {
		t.Fatal("the device answered an upload without Referer")
	}
	st := d.State()
	if st.Boot == st.Running || st.BootCount != 1 {
		t.Errorf("want the image staged and no restart: %+v", st)
	}
	if version(t, d) != "15.4.0(tasmota)" {
		t.Error("version changed without a restart")
	}
}

// fileServer serves images by name and records each fetch's path and
// headers.
type fileServer struct {
	*httptest.Server
	mu      sync.Mutex
	fetches []*http.Request
	delay   time.Duration
}

func newFileServer(t *testing.T, files map[string][]byte) *fileServer {
	fs := &fileServer{}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.mu.Lock()
		fs.fetches = append(fs.fetches, r)
		delay := fs.delay
		fs.mu.Unlock()
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if delay > 0 {
			w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
			time.Sleep(delay)
			w.Write(b[len(b)/2:])
			return
		}
		w.Write(b)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fileServer) paths() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []string
	for _, r := range fs.fetches {
		out = append(out, r.URL.Path)
	}
	return out
}

// TestUpgradeByURL (ESP32): Backlog OtaUrl …; Upgrade 1 over /cm: the
// device fetches the image itself, with its MAC, and restarts into it.
func TestUpgradeByURL(t *testing.T) {
	v := variants[1]
	fs := newFileServer(t, map[string][]byte{"fw.bin": v.image(t, "tasmota", "15.5.0", 0)})
	d := simtest.Start(t, v.config())
	if r := cm(t, d, "Backlog OtaUrl "+fs.URL+"/fw.bin; Upgrade 1"); r.code != 200 || r.body != "{}" {
		t.Fatalf("Backlog: %d %q", r.code, r.body)
	}
	waitVersion(t, d, "15.5.0(tasmota)")
	if p := fs.paths(); len(p) != 1 || p[0] != "/fw.bin" {
		t.Fatalf("fetches %v", p)
	}
	fs.mu.Lock()
	h := fs.fetches[0].Header
	fs.mu.Unlock()
	mac := status(t, d, "5")["StatusNET"]["Mac"]
	if h.Get("x-ESP32-STA-MAC") != mac || h.Get("User-Agent") != "ESP32-http-Update" {
		t.Errorf("headers %v (mac %v)", h, mac)
	}
	if got := status(t, d, "1")["StatusPRM"]["OtaUrl"]; got != fs.URL+"/fw.bin" {
		t.Errorf("OtaUrl %v", got)
	}
	if r := cm(t, d, "Upgrade"); r.body != `{"Upgrade":"1 or >15.5.0 to upgrade"}` {
		t.Errorf("Upgrade: %q", r.body)
	}
}

// TestMinimalTwoStep (ESP8266): the full image does not fit beside the
// running one; the device fetches the -minimal one, boots it, and the
// minimal build fetches the full image from OtaUrl.
func TestMinimalTwoStep(t *testing.T) {
	v := variants[0]
	full := v.image(t, "tasmota", "15.5.0", 150<<10)
	files := map[string][]byte{"fw.bin": full, "fw-minimal.bin": v.image(t, "minimal", "15.5.0", 60<<10)}
	fs := newFileServer(t, files)
	cfg := v.config()
	cfg.SlotSize, cfg.ImageSize = 256<<10, 150<<10
	var ev simtest.EventLog
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	if r := cm(t, d, "OtaUrl "+fs.URL+"/fw.bin"); r.body != `{"OtaUrl":"`+fs.URL+`/fw.bin"}` {
		t.Fatalf("OtaUrl: %q", r.body)
	}
	r := cm(t, d, "Upgrade 1")
	if r.body != `{"Upgrade":"Version 15.4.0 from `+fs.URL+`/fw.bin"}` {
		t.Fatalf("Upgrade: %q", r.body)
	}
	rebooted(t, d, 1)
	waitVersion(t, d, "15.5.0(minimal)")
	waitVersion(t, d, "15.5.0(tasmota)")
	want := []string{"/fw.bin", "/fw-minimal.bin", "/fw.bin"}
	if p := fs.paths(); strings.Join(p, " ") != strings.Join(want, " ") {
		t.Errorf("fetches %v, want %v", p, want)
	}
	fs.mu.Lock()
	for _, r := range fs.fetches {
		if r.Header.Get("x-ESP8266-STA-MAC") == "" || r.Header.Get("x-ESP8266-version") == "" {
			t.Errorf("fetch %s headers %v", r.URL.Path, r.Header)
		}
	}
	fs.mu.Unlock()
	if st := d.State(); st.BootCount != 3 {
		t.Errorf("boots %d, want 3", st.BootCount)
	}
}

// TestSafeboot (ESP32 safeboot layout): Upgrade 1 restarts into safeboot,
// which fetches OtaUrl and restarts into the new app; and the upload page's
// way: /u4?u4=fct&api= ("false", restart), then "true", then /u2.
func TestSafeboot(t *testing.T) {
	v := variants[2]
	t.Run("by URL", func(t *testing.T) {
		fs := newFileServer(t, map[string][]byte{"fw.bin": v.image(t, "tasmota", "15.5.0", 0)})
		d := simtest.Start(t, v.config())
		cm(t, d, "OtaUrl "+fs.URL+"/fw.bin")
		cm(t, d, "Upgrade 1")
		waitVersion(t, d, "15.5.0(tasmota)")
		if st := d.State(); st.BootCount != 3 {
			t.Errorf("boots %d, want 3 (app, safeboot, new app)", st.BootCount)
		}
		if p := fs.paths(); len(p) != 1 {
			t.Errorf("fetches %v", p)
		}
	})
	t.Run("by file", func(t *testing.T) {
		d := simtest.Start(t, v.config())
		u4 := func() reply {
			return do(t, "GET", "http://"+d.OTAAddr()+"/u4?u4=fct&api=", nil, map[string]string{"Referer": referer(d)})
		}
		if r := u4(); r.body != "false" {
			t.Fatalf("first /u4: %d %q", r.code, r.body)
		}
		rebooted(t, d, 1)
		if got := version(t, d); got != "15.4.0(safeboot)" {
			t.Fatalf("in safeboot: %q", got)
		}
		if r := u4(); r.body != "true" {
			t.Fatalf("second /u4: %q", r.body)
		}
		if r := upload(t, d, v.image(t, "tasmota", "15.5.0", 0), nil); r.code != 200 || !strings.Contains(r.body, "Successful") {
			t.Fatalf("upload: %d %q", r.code, r.body)
		}
		waitVersion(t, d, "15.5.0(tasmota)")
	})
	t.Run("no safeboot", func(t *testing.T) {
		d := simtest.Start(t, variants[1].config())
		if r := do(t, "GET", "http://"+d.OTAAddr()+"/u4?u4=fct&api=", nil, map[string]string{"Referer": referer(d)}); r.body != "none" {
			t.Fatalf("got %q", r.body)
		}
	})
}

// TestStatusDuringUpgrade: with the fault armed, a Status command while the
// device fetches its image corrupts the upgrade; without one the upgrade
// goes through.
func TestStatusDuringUpgrade(t *testing.T) {
	v := variants[1]
	for _, ask := range []bool{true, false} {
		t.Run(fmt.Sprintf("status %v", ask), func(t *testing.T) {
			fs := newFileServer(t, map[string][]byte{"fw.bin": v.image(t, "tasmota", "15.5.0", 0)})
			fs.delay = 300 * time.Millisecond
			cfg := v.config()
			cfg.Faults = []core.Fault{simtest.MustFault(t, "status-during-upgrade")}
			var ev simtest.EventLog
			cfg.OnEvent = ev.Add
			d := simtest.Start(t, cfg)
			cm(t, d, "OtaUrl "+fs.URL+"/fw.bin")
			cm(t, d, "Upgrade 1")
			if ask {
				ev.WaitCount(t, core.EventUploadStarted, 1)
				cm(t, d, "Status 0")
				ev.WaitCount(t, core.EventUploadFailed, otaAttempts-1) // every attempt of this upgrade
				if _, ok := ev.Find(core.EventFault); !ok {
					t.Error("no fault event")
				}
				if got := version(t, d); got != "15.4.0(tasmota)" || d.State().BootCount != 1 {
					t.Errorf("after a corrupted upgrade: %q, boots %d", got, d.State().BootCount)
				}
				return
			}
			defer func() {
				if t.Failed() {
					t.Logf("uploads %+v", d.State().Uploads)
				}
			}()
			rebooted(t, d, 1) // no Status meanwhile: waitVersion would ask
			if got := version(t, d); got != "15.5.0(tasmota)" {
				t.Errorf("Version %q", got)
			}
			if _, ok := ev.Find(core.EventFault); ok {
				t.Error("a fault fired without a Status")
			}
		})
	}
}

// TestCommands: the /cm answers a client reads.
func TestCommands(t *testing.T) {
	d := simtest.Start(t, variants[0].config())
	cases := map[string]string{
		"Upgrade":      `{"Upgrade":"1 or >15.4.0 to upgrade"}`,
		"OtaUrl":       `{"OtaUrl":"http://ota.tasmota.com/tasmota/release/tasmota.bin.gz"}`,
		"Nope":         `{"Command":"Unknown"}`,
		"Status 99":    `{"Command":"Error"}`,
		"SetOption128": `{"SetOption128":"OFF"}`,
	}
	for c, want := range cases {
		if r := cm(t, d, c); r.body != want {
			t.Errorf("%s: %q, want %q", c, r.body, want)
		}
	}
	long := "http://127.0.0.1/" + strings.Repeat("a", 120)
	r := cm(t, d, "OtaUrl "+long)
	var m map[string]string
	json.Unmarshal([]byte(r.body), &m)
	if len(m["OtaUrl"]) != 100 {
		t.Errorf("OtaUrl kept %d characters", len(m["OtaUrl"]))
	}
	all := status(t, d, "0")
	for _, k := range []string{"Status", "StatusPRM", "StatusFWR", "StatusNET", "StatusSTS"} {
		if all[k] == nil {
			t.Errorf("Status 0 has no %s", k)
		}
	}
	if r := cm(t, d, "Status"); !strings.HasPrefix(r.body, `{"Status":{"Module":0`) || strings.Contains(r.body, "StatusFWR") {
		t.Errorf("Status: %q", r.body)
	}
	if r := do(t, "GET", "http://"+d.OTAAddr()+"/nope?a=1", nil, nil); r.code != 404 || r.body != "File Not Found\n\nURI: /nope\nMethod: GET\nArguments: 1\n a: 1\n" {
		t.Errorf("404: %d %q", r.code, r.body)
	}
	if r := cm(t, d, "Status 2"); r.header.Get("Server") != "Tasmota/15.4.0 (ESP8266EX)" || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", r.header)
	}
}

// TestChecks: what no Tasmota build is.
func TestChecks(t *testing.T) {
	cases := []struct {
		name string
		cfg  func(c *core.Config)
		err  string
	}{
		{"safeboot on esp8266", func(c *core.Config) { c.Chip = "esp8266"; c.Safeboot = true }, "ESP32 layout"},
		{"language", func(c *core.Config) { c.Language = "fr" }, "en and de"},
		{"user", func(c *core.Config) { c.Username = "root" }, "Username"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := simtest.Config(Tasmota)
			c.cfg(&cfg)
			if _, err := core.Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("got %v, want %q", err, c.err)
			}
		})
	}
}

// TestFaults: the core's HTTP faults act here too: a write failing is
// Update's error, which Tasmota shows as "Not enough space".
func TestFaults(t *testing.T) {
	cfg := variants[1].config()
	cfg.Faults = []core.Fault{simtest.MustFault(t, "error@50%")}
	d := simtest.Start(t, cfg)
	r := upload(t, d, variants[1].image(t, "tasmota", "15.5.0", 0), nil)
	if r.code != 200 || !strings.Contains(r.body, "Failed</font></b><br><br>Not enough space") {
		t.Fatalf("got %d %q", r.code, r.body)
	}
}

// TestUploadNoPassword: with a web password, an upload without
// credentials is written all the same (the loop checks nothing), then the
// answer is the Basic challenge and nothing restarts.
func TestUploadNoPassword(t *testing.T) {
	v := variants[1]
	cfg := v.config()
	cfg.Password = auth.NewSecret("s3cret")
	d := simtest.Start(t, cfg)
	body, ct := form(t, "fw.bin", v.image(t, "tasmota", "15.5.0", 0))
	r := do(t, "POST", "http://"+d.OTAAddr()+"/u2", bytes.NewReader(body), map[string]string{"Referer": referer(d), "Content-Type": ct})
	if r.code != 401 || r.body != "" {
		t.Fatalf("got %d %q", r.code, r.body)
	}
	time.Sleep(50 * time.Millisecond)
	if st := d.State(); st.Boot == st.Running || st.BootCount != 1 {
		t.Errorf("want the image staged and no restart: %+v", st)
	}
}

// TestErrorStays: an error no answer showed (the Referer gate swallowed
// it) stays: the next upload is ignored and its answer shows the old error.
func TestErrorStays(t *testing.T) {
	v := variants[1]
	d := simtest.Start(t, v.config())
	body, ct := form(t, "fw.bin", append([]byte{0}, make([]byte, 3000)...))
	req := fmt.Sprintf("POST /u2 HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", ct, len(body), body)
	if !silent(t, d.OTAAddr(), req) {
		t.Fatal("answered without Referer")
	}
	r := upload(t, d, v.image(t, "tasmota", "15.5.0", 0), nil)
	if r.code != 200 || !strings.Contains(r.body, "Magic byte is not 0xE9") {
		t.Fatalf("got %d %q", r.code, r.body)
	}
	if r := upload(t, d, v.image(t, "tasmota", "15.5.0", 0), nil); !strings.Contains(r.body, "Successful") {
		t.Fatalf("once shown, the error is gone: %q", r.body)
	}
	rebooted(t, d, 1)
}
