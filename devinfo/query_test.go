package devinfo

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/internal/testnet"
	"github.com/ots-ota/ots-ota/sim"
)

func startSim(t *testing.T, p sim.Personality, ext bool, password string) *sim.Device {
	t.Helper()
	ft := sim.FastTiming()
	cfg := sim.Config{
		Personality: p, Extensions: ext, Timing: &ft, Version: "1.2.3", Project: "ots-fw-main",
		IP: netip.MustParseAddr("127.0.0.1"),
	}
	if password != "" {
		cfg.Password = auth.NewSecret(password)
	}
	d, err := sim.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

func webPort(t *testing.T, d *sim.Device) int {
	if d.WebAddr() == "" {
		return -1
	}
	_, p, err := net.SplitHostPort(d.WebAddr())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range p {
		n = n*10 + int(c-'0')
	}
	return n
}

// TXT records as each personality advertises it (device-contract.md §1, §4).
func txtFor(p sim.Personality, ext bool) map[string]string {
	switch {
	case p == sim.Arduino || p == sim.ESP8266:
		m := map[string]string{"board": "esp32s3", "tcp_check": "no", "ssh_upload": "no", "auth_upload": "yes"}
		if ext {
			m["version"], m["project"], m["chip"] = "1.2.3", "ots-fw-main", "esp32s3"
		}
		return m
	case ext:
		a := "bearer"
		if p == sim.OTS {
			a = "none"
		}
		return map[string]string{"version": "1.2.3", "project": "ots-fw-main", "chip": "esp32s3", "auth": a, "path": "/update", "api": "1"}
	default:
		return nil // seed and OTS advertise no TXT
	}
}

func TestQueryPersonalities(t *testing.T) {
	type want struct {
		proto, version string
		vsrc           Source
		auth           Fact
		state          string
		note           string
	}
	tests := []struct {
		p    sim.Personality
		ext  bool
		pass string
		want want
	}{
		{sim.Seed, false, "tok", want{ProtoHTTP, "", "", Fact{}, "", "seed firmware without ots-ota extensions exposes no version"}},
		{sim.Seed, true, "tok", want{ProtoHTTP, "1.2.3", FromOTAStatus, Fact{"bearer", FromTXT}, "factory", ""}},
		{sim.OTS, false, "", want{ProtoHTTP, "1.2.3", FromAPIStatus, Fact{}, "", ""}},
		{sim.OTS, true, "", want{ProtoHTTP, "1.2.3", FromOTAStatus, Fact{"none", FromTXT}, "factory", ""}},
		{sim.Arduino, false, "pw", want{ProtoEspota, "", "", Fact{"required", FromTXT}, "", "ArduinoOTA firmware exposes no version"}},
		{sim.Arduino, true, "pw", want{ProtoEspota, "1.2.3", FromTXT, Fact{"required", FromTXT}, "", ""}},
		{sim.ESP8266, false, "", want{ProtoEspota, "", "", Fact{"required", FromTXT}, "", "ArduinoOTA"}},
	}
	for _, tt := range tests {
		name := string(tt.p)
		if tt.ext {
			name += "+extensions"
		}
		t.Run(name, func(t *testing.T) {
			d := startSim(t, tt.p, tt.ext, tt.pass)
			tgt := Target{Name: d.Name(), Host: "127.0.0.1", Port: d.OTAPort(), WebPort: webPort(t, d), TXT: txtFor(tt.p, tt.ext)}
			f, err := Query(context.Background(), tgt, Options{Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			w := tt.want
			if !f.Reachable || f.Protocol != (Fact{w.proto, FromProbe}) {
				t.Errorf("reachable %v protocol %+v, want %s (notes %q)", f.Reachable, f.Protocol, w.proto, f.Notes)
			}
			if f.Version.Value != w.version || f.Version.Source != w.vsrc {
				t.Errorf("version %+v, want %q from %q (notes %q)", f.Version, w.version, w.vsrc, f.Notes)
			}
			if w.note == "" && f.VersionNote != "" || !strings.Contains(f.VersionNote, w.note) {
				t.Errorf("version note %q, want %q", f.VersionNote, w.note)
			}
			if f.Auth != w.auth {
				t.Errorf("auth %+v, want %+v", f.Auth, w.auth)
			}
			// w.state "factory": whatever the running factory image's state is.
			if wantState := w.state; wantState == "factory" && f.State != (Fact{string(d.State().AppState), FromOTAStatus}) ||
				wantState == "" && f.State.Known() {
				t.Errorf("state %+v, want %q (device: %s)", f.State, w.state, d.State().AppState)
			}
			if tt.ext && tt.p.DefaultOTAPort() == 3232 && tt.p != sim.Arduino {
				st := d.State()
				if f.Running != (Fact{st.Running, FromOTAStatus}) || f.Chip.Value != st.Chip || f.IDF.Value != st.IDFVer || f.Uptime.Source != FromOTAStatus {
					t.Errorf("facts %+v do not match the device %+v", f, st)
				}
			}
			// The OTS firmware as shipped tells no uptime: unknown, not 0.
			if tt.p == sim.OTS && !tt.ext && f.Uptime.Known() {
				t.Errorf("uptime %+v, want unknown (the OTS /api/status tells none)", f.Uptime)
			}
			if len(d.State().Uploads) != 0 {
				t.Errorf("info started an upload: %+v", d.State().Uploads)
			}
		})
	}
}

// TestQueryOnlyGets checks that nothing but GET ever reaches a device.
func TestQueryOnlyGets(t *testing.T) {
	var nonGet atomic.Int32
	var seen atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if r.Method != http.MethodGet {
			nonGet.Add(1)
		}
		switch r.URL.Path {
		case "/ota/status":
			w.Write([]byte(`{"version":"3.0.0","state":"pending_verify","running":"ota_1","auth":"basic"}`))
		case "/api/status":
			w.Write([]byte(`{"firmwareVersion":"2.0.0"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	f, err := Query(context.Background(), Target{Host: ap.Addr().String(), Port: int(ap.Port()), WebPort: int(ap.Port())}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if nonGet.Load() != 0 || seen.Load() != 2 {
		t.Errorf("requests: %d, non-GET %d", seen.Load(), nonGet.Load())
	}
	if f.Version != (Fact{"3.0.0", FromOTAStatus}) || f.Auth != (Fact{"basic", FromOTAStatus}) || f.State.Value != "pending_verify" {
		t.Errorf("facts %+v", f)
	}
}

func TestQueryUnreachable(t *testing.T) {
	// A listener that never accepts: connects succeed at the kernel, but a
	// closed one refuses. Use a blackhole dialer to stand in for a silent device.
	silent := func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Err: timeoutErr{}}
	}
	start := time.Now()
	f, err := Query(context.Background(), Target{Host: "192.0.2.1", Port: 3232}, Options{Timeout: 100 * time.Millisecond, Dial: silent})
	if err != nil {
		t.Fatal(err)
	}
	if f.Reachable || f.Protocol.Known() || !strings.Contains(f.VersionNote, "did not answer") {
		t.Errorf("facts %+v", f)
	}
	if len(f.Notes) == 0 || !strings.Contains(f.Notes[0], "timed out") {
		t.Errorf("notes %q", f.Notes)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	if _, err := Query(context.Background(), Target{}, Options{}); err == nil {
		t.Error("empty target accepted")
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestQueryCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f, err := Query(ctx, Target{Host: "127.0.0.1", Port: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Version.Known() {
		t.Errorf("facts %+v", f)
	}
}

// TestQueryRefused: a refused TCP connect alone is no sighting of an
// espota device (review 68 #2), whether the protocol was probed or given by
// the inventory (#1); an mDNS record (TXT) makes it one. The port's UDP
// socket takes datagrams in silence, as ArduinoOTA does (else nothing
// listens there: TestQueryNothingListens).
func TestQueryRefused(t *testing.T) {
	quiet, _ := testnet.QuietUDP(t)
	port := testnet.PortOf(t, quiet)
	txt := map[string]string{"board": "esp32s3", "auth_upload": "yes"}
	tests := []struct {
		name      string
		proto     string
		txt       map[string]string
		reachable bool
		src       Source
	}{
		{"probed, no mDNS", "", nil, false, FromProbe},
		{"probed, mDNS", "", txt, true, FromProbe},
		{"inventory espota, no mDNS", ProtoEspota, nil, false, FromTarget},
		{"inventory espota, mDNS", ProtoEspota, txt, true, FromTarget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Query(context.Background(), Target{Host: "127.0.0.1", Port: port, Protocol: tt.proto, TXT: tt.txt}, Options{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if f.Reachable != tt.reachable || f.Unconfirmed == tt.reachable || f.Protocol != (Fact{ProtoEspota, tt.src}) {
				t.Errorf("reachable %v unconfirmed %v protocol %+v, want reachable %v (notes %q)", f.Reachable, f.Unconfirmed, f.Protocol, tt.reachable, f.Notes)
			}
			if !tt.reachable && (len(f.Notes) == 0 || !strings.Contains(f.Notes[0], "not confirmed") || !strings.Contains(f.VersionNote, "nothing confirms")) {
				t.Errorf("notes %q, version note %q", f.Notes, f.VersionNote)
			}
			if tt.reachable && (f.Auth != Fact{"required", FromTXT}) {
				t.Errorf("auth %+v", f.Auth)
			}
		})
	}
}

// TestQuerySilentSkipsWeb: once the OTA port timed out, the web port is not
// tried, so a silent device costs one timeout, not two (review 68 #8).
func TestQuerySilentSkipsWeb(t *testing.T) {
	var dials atomic.Int32
	silent := func(ctx context.Context, _, _ string) (net.Conn, error) {
		dials.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f, err := Query(context.Background(), Target{Host: "192.0.2.1", Port: 3232, WebPort: 80}, Options{Timeout: 50 * time.Millisecond, Dial: silent})
	if err != nil {
		t.Fatal(err)
	}
	if dials.Load() != 1 || f.Reachable {
		t.Errorf("%d dials, reachable %v, notes %q", dials.Load(), f.Reachable, f.Notes)
	}
	if len(f.Notes) == 0 || !strings.Contains(f.Notes[0], "timed out") {
		t.Errorf("notes %q: a dial that ran out of its own time is a timeout, not a cancel", f.Notes)
	}
}

// TestQueryBadOTAStatus: a malformed /ota/status is one note, and the version
// reason says it answered (review 68 #4).
func TestQueryBadOTAStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ota/status" {
			w.Write([]byte(`{"version":1,"project":2,"uptime_s":-5}`))
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	f, err := Query(context.Background(), Target{Host: ap.Addr().String(), Port: int(ap.Port()), WebPort: -1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range f.Notes {
		if strings.Contains(n, "\n") {
			t.Errorf("note spans lines: %q", n)
		}
	}
	if !f.Reachable || !strings.Contains(f.VersionNote, "/ota/status answered") {
		t.Errorf("reachable %v, version note %q", f.Reachable, f.VersionNote)
	}
}

// TestQuerySlowBody: a body that outlives the request's timeout is "timed
// out", not "cancelled" (review 68 #4).
func TestQuerySlowBody(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.Write([]byte(`{"firmwareVersion":`))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	_, err := GetAPIStatus(context.Background(), srv.Listener.Addr().String(), Options{Timeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("err %v, want timed out", err)
	}
}

// TestQueryConnectErr: a device that does not answer keeps the first
// failed connect for its caller to word (ConnectErr); the notes say a
// missing route in words, never the system's "connect: network is
// unreachable", whether the port was probed or the protocol given.
func TestQueryConnectErr(t *testing.T) {
	noRoute := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}
	dial := func(context.Context, string, string) (net.Conn, error) { return nil, noRoute }
	for _, proto := range []string{"", ProtoHTTP} {
		f, err := Query(context.Background(), Target{Host: "192.0.2.1", Port: 3232, WebPort: 80, Protocol: proto},
			Options{Timeout: time.Second, Dial: dial})
		if err != nil {
			t.Fatal(err)
		}
		if f.Reachable || !errors.Is(f.ConnectErr, syscall.ENETUNREACH) {
			t.Errorf("protocol %q: reachable %v, connect error %v", proto, f.Reachable, f.ConnectErr)
		}
		for _, n := range f.Notes {
			if strings.Contains(n, "connect:") || strings.Contains(n, "network is unreachable") {
				t.Errorf("protocol %q: note %q holds the system's words", proto, n)
			}
		}
		if len(f.Notes) == 0 || !strings.Contains(f.Notes[0], "no route to the device") {
			t.Errorf("protocol %q: notes %q", proto, f.Notes)
		}
	}
	d := startSim(t, sim.Seed, true, "")
	f, err := Query(context.Background(), Target{Host: "127.0.0.1", Port: d.OTAPort(), WebPort: -1}, Options{Timeout: time.Second})
	if err != nil || !f.Reachable || f.ConnectErr != nil {
		t.Errorf("a device that answers: reachable %v, connect error %v, %v", f.Reachable, f.ConnectErr, err)
	}
}
