package cmd

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// tasmotaDevice is a small stand-in for a Tasmota device, for push end to
// end: the Referer check's silence, Basic auth, /up, /u2, /cm (Status 0,
// Backlog OtaUrl; Upgrade 1 — it then fetches the URL itself — and
// OtaUrl), and a restart onto the new image, during which its port is
// closed. It records any Status request made while it installs.
type tasmotaDevice struct {
	t        *testing.T
	addr     string
	password string

	mu                    sync.Mutex
	ln                    net.Listener
	srv                   *http.Server
	version               string
	next                  string
	otaURL                string
	up                    time.Time
	boots                 int
	installing            bool
	statusWhileInstalling int
	fetched               int64
	fetchMAC              bool
	uploads               int
	// probe: before its own download the device tries every other path
	// on push's file server; strays records what each was answered.
	probe  bool
	strays []string
	url    string // the OtaUrl push set
}

func startTasmotaDevice(t *testing.T, password string) *tasmotaDevice {
	d := &tasmotaDevice{t: t, addr: "127.0.0.1:0", password: password, version: "14.2.0(tasmota32s3)", next: "14.3.0(tasmota32s3)",
		otaURL: "http://ota.tasmota.com/tasmota32/release/tasmota32s3.bin", up: time.Now().Add(-time.Hour), boots: 7}
	d.listen()
	t.Cleanup(func() {
		d.mu.Lock()
		srv := d.srv
		d.mu.Unlock()
		srv.Close()
	})
	return d
}

func (d *tasmotaDevice) listen() {
	ln, err := net.Listen("tcp", d.addr)
	if err != nil {
		d.t.Error(err)
		return
	}
	srv := &http.Server{Handler: d}
	d.mu.Lock()
	d.ln, d.srv, d.addr = ln, srv, ln.Addr().String()
	d.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// install restarts the device onto its next image: its port closes for a
// while, as a restarting ESP32's does.
func (d *tasmotaDevice) install() {
	d.mu.Lock()
	d.installing = true
	srv := d.srv
	d.mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	srv.Close()
	// Longer than four of push's connects (tasmotaQuiet), so one meets the
	// closed port.
	time.Sleep(1200 * time.Millisecond)
	d.mu.Lock()
	d.version, d.up, d.installing = d.next, time.Now(), false
	d.boots++
	d.mu.Unlock()
	d.listen()
}

func (d *tasmotaDevice) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(d.addr)
	if !strings.HasPrefix(r.Referer(), "http://"+host) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
		return
	}
	if u, p, ok := r.BasicAuth(); d.password != "" && (!ok || u != "admin" || p != d.password) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		_, _ = io.WriteString(w, `{"WARNING":"Need user=<username>&password=<password>"}`)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case r.URL.Path == "/up":
		_, _ = io.WriteString(w, "<html>upgrade</html>")
	case r.URL.Path == "/u2" && r.Method == "POST":
		n, _ := io.Copy(io.Discard, r.Body)
		d.uploads++
		_, _ = io.WriteString(w, "<html><b>Hochladen</b> <b>Erfolgreich</b></html>")
		if n > 0 {
			go d.install()
		}
	case r.URL.Path == "/cm":
		cmnd := r.URL.Query().Get("cmnd")
		w.Header().Set("Content-Type", "application/json")
		switch {
		case cmnd == "Status 0":
			if d.installing {
				d.statusWhileInstalling++
			}
			up := int64(time.Since(d.up).Seconds())
			fmt.Fprintf(w, `{"StatusPRM":{"OtaUrl":%q,"Uptime":"0T00:00:00","BootCount":%d},"StatusFWR":{"Version":%q,"Hardware":"ESP32-S3"},"StatusMEM":{"Free":1800},"StatusSTS":{"UptimeSec":%d}}`,
				d.otaURL, d.boots, d.version, up)
		case strings.HasPrefix(cmnd, "Backlog OtaUrl "):
			u, _, _ := strings.Cut(strings.TrimPrefix(cmnd, "Backlog OtaUrl "), "; Upgrade 1")
			d.otaURL = u
			fmt.Fprintf(w, `{"OtaUrl":%q}`, u)
			go d.fetch(u)
		case strings.HasPrefix(cmnd, "OtaUrl "):
			d.otaURL = strings.TrimPrefix(cmnd, "OtaUrl ")
			fmt.Fprintf(w, `{"OtaUrl":%q}`, d.otaURL)
		}
	default:
		http.NotFound(w, r)
	}
}

// fetch is the device's own download of its new image, then its restart.
func (d *tasmotaDevice) fetch(u string) {
	time.Sleep(200 * time.Millisecond)
	d.mu.Lock()
	d.url = u
	probe := d.probe
	d.mu.Unlock()
	if probe {
		d.stray(u)
	}
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("x-ESP32-STA-MAC", "AA:BB:CC:DD:EE:FF")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Errorf("device fetch: %v", err)
		return
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d.mu.Lock()
	d.fetched = n
	d.mu.Unlock()
	if resp.StatusCode == 200 {
		d.install()
	}
}

// TestPushTasmota: push --protocol tasmota, by file and by URL, against a
// stand-in device: updated with --expect-version, unverified without it;
// no Status request while it installs; by URL its OtaUrl is back at the end.
func TestPushTasmota(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	for _, tc := range []struct {
		name   string
		args   []string
		want   string
		viaURL bool
	}{
		{name: "by file", args: []string{"--expect-version", "14.3.0"}, want: "updated"},
		{name: "by file, no --expect-version", want: "unverified"},
		{name: "by URL", args: []string{"--via-url", "--expect-version", "14.3.0"}, want: "updated", viaURL: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := startTasmotaDevice(t, "s3cret")
			old := d.otaURL
			args := append(append(append([]string{}, pushFast...), "--protocol", "tasmota", "--password", "s3cret", "--json"), tc.args...)
			code, out, errOut := runPushCmd(t, "", append(args, fw, d.addr)...)
			if !strings.Contains(out, `"outcome":"`+tc.want+`"`) {
				t.Fatalf("exit %d, want %s:\n%s\n%s", code, tc.want, out, errOut)
			}
			if strings.Contains(out+errOut, "s3cret") {
				t.Fatal("the password in the output")
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.statusWhileInstalling != 0 {
				t.Fatalf("%d Status requests while the device installed", d.statusWhileInstalling)
			}
			if tc.viaURL {
				if d.fetched == 0 || d.uploads != 0 || d.otaURL != old {
					t.Fatalf("fetched %d, uploads %d, OtaUrl at the end %q", d.fetched, d.uploads, d.otaURL)
				}
			} else if d.uploads != 1 {
				t.Fatalf("%d uploads", d.uploads)
			}
		})
	}
}

// TestPushViaURLFlags: --via-url and --serve-addr are checked before any
// work (exit 2).
func TestPushViaURLFlags(t *testing.T) {
	fw := writeTestFirmware(t, "1.0.1")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{args: []string{"--via-url"}, want: "--via-url needs --protocol tasmota"},
		{args: []string{"--via-url", "--protocol", "form"}, want: "--via-url needs --protocol tasmota"},
		{args: []string{"--serve-addr", "127.0.0.1", "--protocol", "tasmota"}, want: "needs --via-url"},
		{args: []string{"--via-url", "--protocol", "tasmota", "--serve-addr", "host.example"}, want: "IP address or IP:PORT"},
		{args: []string{"--via-url", "--protocol", "tasmota", "--filesystem"}, want: "firmware only"},
		{args: []string{"--via-url", "--protocol", "tasmota", "--serve-addr", "0.0.0.0:8000"}, want: "wildcard"},
		{args: []string{"--via-url", "--protocol", "tasmota", "--serve-addr", "[::]"}, want: "wildcard"},
		// Bound up front: not an address of this host (TEST-NET-1), a taken port.
		{args: []string{"--via-url", "--protocol", "tasmota", "--serve-addr", "192.0.2.1"}, want: "192.0.2.1 is not an address of this host"},
		{args: []string{"--via-url", "--protocol", "tasmota", "--serve-addr", taken.Addr().String()}, want: "is in use on this host"},
		{args: []string{"--protocol", "tasmota", "--filesystem"}, want: "firmware only"},
		{args: []string{"--protocol", "tasmota", "--expect-version", "14.3.0(tasmota)"}, want: "digits and dots"},
	} {
		code, _, errOut := runPushCmd(t, "", append(tc.args, fw, "127.0.0.1")...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d: %s", tc.args, code, errOut)
		}
	}
}

// stray asks push's file server for everything but the one URL it was
// given: the root (a listing), the token's directory, the token alone,
// another name beside the image, the image under another token or none,
// a path that climbs back to it, a companion the push does not serve,
// and the right URL with a method other than GET and HEAD.
func (d *tasmotaDevice) stray(u string) {
	i := strings.LastIndex(u, "/")
	dir, name := u[:i], u[i+1:]
	j := strings.LastIndex(dir, "/")
	root, token := dir[:j], dir[j+1:]
	other := []byte(token)
	other[0] ^= 1 // another token of the same length (base64url stays printable)
	if other[0] == '/' || other[0] == '.' {
		other[0] = 'A'
	}
	tries := []struct{ method, url string }{
		{"GET", root + "/"},
		{"GET", dir + "/"},
		{"GET", dir},
		{"GET", dir + "/other.bin"},
		{"GET", dir + "/fw-minimal.bin"},
		{"GET", dir + "/" + name + ".gz"},
		{"GET", root + "/" + string(other) + "/" + name},
		{"GET", root + "/" + name},
		{"GET", dir + "/../" + token + "/" + name},
		{"GET", dir + "/%2e%2e/" + name},
		{"POST", u},
		{"PUT", u},
	}
	for _, tr := range tries {
		req, err := http.NewRequest(tr.method, tr.url, nil)
		if err != nil {
			d.t.Errorf("%s %s: %v", tr.method, tr.url, err)
			continue
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			d.t.Errorf("%s %s: %v", tr.method, tr.url, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		d.mu.Lock()
		d.strays = append(d.strays, fmt.Sprintf("%s %s: %d %d bytes", tr.method, strings.TrimPrefix(tr.url, root), resp.StatusCode, len(b)))
		d.mu.Unlock()
	}
}

// TestPushFileServerRefusesStrays: the file server push starts for
// --via-url answers only the one URL it gave the device: every other path
// (listings, other names, other tokens, climbing paths, other methods) is
// refused with no body, and once push has returned nothing listens there.
func TestPushFileServerRefusesStrays(t *testing.T) {
	t.Parallel()
	fw := writeTestFirmware(t, "1.0.1")
	d := startTasmotaDevice(t, "")
	d.probe = true
	args := append(append([]string{}, pushFast...), "--protocol", "tasmota", "--via-url", "--expect-version", "14.3.0", "--json", fw, d.addr)
	code, out, errOut := runPushCmd(t, "", args...)
	if code != 0 || !strings.Contains(out, `"outcome":"updated"`) {
		t.Fatalf("exit %d:\n%s\n%s", code, out, errOut)
	}
	d.mu.Lock()
	u, strays, fetched := d.url, d.strays, d.fetched
	d.mu.Unlock()
	if fetched == 0 || len(strays) != 12 {
		t.Fatalf("fetched %d bytes; %d stray requests answered: %q", fetched, len(strays), strays)
	}
	t.Logf("served %s; stray requests: %q", u, strays)
	for _, s := range strays {
		// 404 for every path, 405 for the right path with another method;
		// never a byte of body (no listing, no hint).
		if !strings.HasSuffix(s, ": 404 0 bytes") && !(strings.Contains(s, "/fw.bin: 405 0 bytes") && !strings.HasPrefix(s, "GET")) {
			t.Errorf("stray request answered %s", s)
		}
	}
	// push has returned: its server is gone, the URL answers nothing.
	resp, err := http.Get(u)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("after push, %s answered %s", u, resp.Status)
	}
}
