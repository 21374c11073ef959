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
