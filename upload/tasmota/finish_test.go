package tasmota

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// TestFinishQuietRule: Finish sends OtaUrl <old> only to a settled
// device (seen back on its firmware); to any other it sends nothing and
// names the command to run later.
func TestFinishQuietRule(t *testing.T) {
	const old = "http://ota.tasmota.com/tasmota32/release/tasmota32.bin"
	for _, tc := range []struct {
		name    string
		settled bool
		sent    bool
		warn    string
	}{
		{name: "settled: put back", settled: true, sent: true},
		{name: "not settled: nothing sent", settled: false, warn: "once it runs its firmware, set it back with the command OtaUrl " + old},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := byURL(t)
			dev := &fakeTasmota{otaURL: "http://127.0.0.1:1/tok/fw.bin"}
			tg := startFake(t, dev)
			srv.setRestore(tg.Addr(), old)
			tr := &Transport{ViaURL: true, Server: srv}
			w := tr.Finish(testkit.Ctx(t), tg, upload.Credentials{}, upload.Ending{Settled: tc.settled})
			if tc.warn == "" && w != "" || !strings.Contains(w, tc.warn) {
				t.Fatalf("warning %q, want %q", w, tc.warn)
			}
			sent := len(dev.seen()) > 0
			if sent != tc.sent {
				t.Fatalf("requests %q, want sent %v", dev.seen(), tc.sent)
			}
			dev.mu.Lock()
			defer dev.mu.Unlock()
			if tc.sent && dev.otaURL != old {
				t.Fatalf("OtaUrl %q, want %q", dev.otaURL, old)
			}
		})
	}
}

// TestFinishHidesURLSecrets: the old OtaUrl's userinfo and password-like
// query values appear in no warning, sent or not.
func TestFinishHidesURLSecrets(t *testing.T) {
	for _, tc := range []struct {
		old, shown string
	}{
		{"http://admin:hunter2@nas.lan/tasmota/fw.bin", "OtaUrl http://nas.lan/tasmota/fw.bin (with the credentials it had"},
		{"http://nas.lan/fw.bin?user=a&password=hunter2", "OtaUrl http://nas.lan/fw.bin?user=a&password=…"},
		{"http://nas.lan/fw.bin?token=hunter2", "OtaUrl http://nas.lan/fw.bin?token=…"},
		{"http://admin:hunter2@bad host/fw.bin", "OtaUrl http://bad host/fw.bin"},
	} {
		for _, settled := range []bool{false, true} {
			srv, _ := byURL(t)
			// settled, but the device answers nothing (no Referer passes
			// for "localhost"): the failure's warning.
			dev := &fakeTasmota{}
			tg := startFake(t, dev)
			tg.Host = "localhost"
			srv.setRestore(tg.Addr(), tc.old)
			tr := &Transport{ViaURL: true, Server: srv, IdleTimeout: 2 * time.Second}
			w := tr.Finish(testkit.Ctx(t), tg, upload.Credentials{}, upload.Ending{Settled: settled})
			if strings.Contains(w, "hunter2") || !strings.Contains(w, tc.shown) {
				t.Fatalf("%s (settled %v): warning %q, want %q and no secret", tc.old, settled, w, tc.shown)
			}
		}
	}
}

// logLines records what a logger was given.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	s := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

// TestServerLogs: the file server logs each fetch at Info itself; the
// Server adds nothing at Info, and names the address the server got, not
// the port 0 it asked for.
func TestServerLogs(t *testing.T) {
	_, fw := files(t, "tasmota32.bin", 5000)
	srv, fs := byURL(t)
	logs := &logLines{}
	srv.Logger = slog.New(logs)
	serve := srv.Serve
	srv.Serve = func(addr string, files map[string]string, onFetch func(Fetch)) (FileServer, error) {
		s, err := serve(addr, files, onFetch)
		fs.mu.Lock()
		fs.addr = "127.0.0.1:4321" // the port it got
		fs.mu.Unlock()
		return s, err
	}
	if _, err := srv.serverFor(netip.MustParseAddr("127.0.0.1"), srv.files(fw)); err != nil {
		t.Fatal(err)
	}
	srv.fetched(Fetch{Name: "fw.bin", Remote: "127.0.0.1:5555", Status: 200, Bytes: 5000})
	logs.mu.Lock()
	defer logs.mu.Unlock()
	bound := false
	for _, l := range logs.lines {
		if strings.HasPrefix(l, "INFO") {
			t.Errorf("an Info line the file server already logs: %q", l)
		}
		bound = bound || strings.Contains(l, "addr=127.0.0.1:4321")
		if strings.Contains(l, "addr=127.0.0.1:0") {
			t.Errorf("the requested port, not the bound one: %q", l)
		}
	}
	if !bound {
		t.Errorf("no line names the bound address: %q", logs.lines)
	}
}
