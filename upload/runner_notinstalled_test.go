package upload

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// endFails is a family whose devices take the whole image, then refuse to
// install it with their own definite word (ESPHome's 0x84/0x8B/0x8D/0x93
// after 0x44).
type endFails struct {
	txtFleet
	class Class
	sends atomic.Int32
}

func (f *endFails) Send(_ context.Context, _ Target, fw *Firmware, _ Credentials, emit Emit) error {
	f.sends.Add(1)
	emit(Event{Phase: PhaseUploading, Done: fw.Size(), Total: fw.Size()})
	return &DeviceError{Class: f.class, Words: "0x8B", Taken: fw.Size(), Reason: "the image does not match its MD5", Err: ErrNotInstalled}
}

// A definite refusal after the whole image is a failure the device said:
// no "answer lost", no verification, and the class's retries apply.
func TestNotInstalledIsNoLostAnswer(t *testing.T) {
	fw := testFirmware(t, "1.0.0")
	for _, c := range []struct {
		class Class
		sends int32
	}{{ClassWriteFailed, 2}, {ClassRejected, 1}} {
		f := &endFails{txtFleet: txtFleet{devs: map[string]*txtDev{"10.0.0.9": {version: "1.0", build: "0000aaaa"}}}, class: c.class}
		o := Options{Transports: map[Protocol]Transport{"txtonly": f}, Observer: f, Retries: 2,
			StabilityWindow: time.Millisecond, VerifyTimeout: 5 * time.Second, RebootGrace: 100 * time.Millisecond,
			PollInterval: time.Millisecond, ProbeTimeout: time.Second, Seed: 1, Backoff: time.Millisecond, ExpectVersion: "2.0"}
		r := Run(context.Background(), fw, []Target{{Name: "d", Host: "10.0.0.9", Protocol: "txtonly"}}, o)[0]
		if r.Outcome != OutcomeFailed || strings.Contains(r.Message, "lost") || strings.Contains(r.Message, "not retried: ") {
			t.Errorf("%s: %s (%s)", c.class, r.Outcome, r.Message)
		}
		if n := f.sends.Load(); n != c.sends {
			t.Errorf("%s: sent %d times, want %d", c.class, n, c.sends)
		}
	}
}
