package wled

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// rebooter is a WLED device's /json/info over time: ver and an uptime
// that restarts when an update is accepted (it boots 300 ms later, the
// new ver then).
type rebooter struct {
	mu      sync.Mutex
	ver     string
	next    string
	bootAt  time.Time
	release string
}

func (r *rebooter) info() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	up := int64(time.Since(r.bootAt) / time.Second)
	if up < 0 {
		up = 0 // still booting: a real device is silent, this one tells a fresh boot
	}
	return fmt.Sprintf(`{"ver":%q,"vid":2508290,"release":%q,"arch":"esp32","uptime":%d,"brand":"WLED","mac":"a842e3aabbcc","name":"Desk"}`,
		r.ver, r.release, up)
}

func (r *rebooter) accept(int) (int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ver, r.bootAt = r.next, time.Now().Add(300*time.Millisecond)
	return 200, successBody
}

// TestRunWLED: the runner with this transport and the device observer
// (GET /json/info): with --expect-version the device is updated once it
// reports that ver after a restart (its uptime fell); without it the
// device is back but the image tells nothing to expect (unverified,
// image-has-no-identity); an image of another release is refused with
// nothing sent.
func TestRunWLED(t *testing.T) {
	for _, tc := range []struct {
		name, expect, release string
		outcome               upload.Outcome
		reason                upload.Reason
		posts                 int
	}{
		{"--expect-version", "0.15.5", "ESP32", upload.OutcomeUpdated, "", 1},
		{"no --expect-version", "", "ESP32", upload.OutcomeUnverified, upload.ReasonNoIdentity, 1},
		{"another release", "0.15.5", "ESP32-S3", upload.OutcomeRefused, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := &rebooter{ver: "0.15.4", next: "0.15.5", release: tc.release, bootAt: time.Now().Add(-time.Hour)}
			d := &fakeWLED{infoFn: dev.info, answer: dev.accept}
			host, port := testkit.HostPort(t, d.start(t))
			o := upload.Options{
				Transports: map[upload.Protocol]upload.Transport{upload.WLED: &Transport{IdleTimeout: 10 * time.Second}},
				Observer:   &upload.DeviceObserver{Timeout: time.Second},
				Parallel:   1, Retries: 1, Backoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
				StabilityWindow: 700 * time.Millisecond, VerifyTimeout: 15 * time.Second, RebootGrace: 2 * time.Second,
				PollInterval: 50 * time.Millisecond, ProbeTimeout: time.Second, Seed: 3, ExpectVersion: tc.expect,
			}
			fw := upload.NewFirmware("fw.bin", esp32Image, false)
			r := upload.Run(testkit.Ctx(t), fw, []upload.Target{{Name: "desk", Host: host, Port: port, Protocol: upload.WLED}}, o)[0]
			t.Logf("%s: %s (warnings %q)", r.Outcome, r.Message, r.Warnings)
			posts := 0
			for _, q := range d.requests() {
				if q.Method == "POST" {
					posts++
				}
			}
			if r.Outcome != tc.outcome || r.Reason != tc.reason || posts != tc.posts {
				t.Errorf("%s (%s) after %d POSTs, want %s (%s) after %d: %s", r.Outcome, r.Reason, posts, tc.outcome, tc.reason, tc.posts, r.Message)
			}
			if tc.reason == upload.ReasonNoIdentity && (!strings.Contains(r.Message, "which the image does not carry") || !strings.Contains(r.Message, "give --expect-version")) {
				t.Errorf("message %q does not say why, nor what to give", r.Message)
			}
			if tc.outcome == upload.OutcomeUpdated && (r.Running != "0.15.5" || r.From != "0.15.4" || r.VersionSource != "/json/info") {
				t.Errorf("from %q running %q (source %q)", r.From, r.Running, r.VersionSource)
			}
		})
	}
}
