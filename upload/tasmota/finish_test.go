package tasmota

import (
	"strings"
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
