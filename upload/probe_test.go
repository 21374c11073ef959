package upload

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/sim"
)

func TestDecideFromHint(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    Target
		h    Hint
		want Protocol // "" = a probe is needed
		path string
	}{
		{"explicit on target", Target{Protocol: Espota}, Hint{Service: "_ota._tcp"}, Espota, ""},
		{"explicit in hint", Target{}, Hint{Protocol: HTTP, Service: "_arduino._tcp", TXT: map[string]string{"board": "esp32"}}, HTTP, ""},
		{"url", Target{Path: "/ota/upload"}, Hint{}, HTTP, ""},
		{"arduino board", Target{}, Hint{Service: "_arduino._tcp", TXT: map[string]string{"board": "esp32s3", "tcp_check": "no"}}, Espota, ""},
		{"arduino auth_upload only", Target{}, Hint{Service: "_arduino._tcp.local.", TXT: map[string]string{"auth_upload": "yes"}}, Espota, ""},
		{"arduino key case", Target{}, Hint{Service: "_arduino._tcp", TXT: map[string]string{"Board": "x"}}, Espota, ""},
		{"ots: _arduino._tcp without TXT", Target{}, Hint{Service: "_arduino._tcp"}, "", ""},
		{"ots: _arduino._tcp empty TXT", Target{}, Hint{Service: "_arduino._tcp", TXT: map[string]string{}}, "", ""},
		{"ota service", Target{}, Hint{Service: "_ota._tcp"}, HTTP, ""},
		{"ota service path", Target{}, Hint{Service: "_ota._tcp", TXT: map[string]string{"path": "/fw"}}, HTTP, "/fw"},
		{"board on another service is no proof", Target{}, Hint{Service: "_http._tcp", TXT: map[string]string{"board": "x"}}, "", ""},
		{"nothing known", Target{Protocol: Auto}, Hint{}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := DecideFromHint(tc.t, tc.h)
			if ok != (tc.want != "") || d.Protocol != tc.want || d.Path != tc.path {
				t.Fatalf("got %+v %v, want %q path %q", d, ok, tc.want, tc.path)
			}
			if ok && (d.Why == "" || d.Probed) {
				t.Errorf("decision %+v: needs a reason and no probe", d)
			}
		})
	}
}

// The probe against each personality; the Arduino device must see no
// invitation (nothing but its own ready event).
func TestChooseProtocolAgainstSim(t *testing.T) {
	for _, tc := range []struct {
		p    sim.Personality
		hint Hint
		want Protocol
	}{
		{sim.Seed, Hint{}, HTTP},
		{sim.OTS, Hint{Service: "_arduino._tcp"}, HTTP},
		{sim.Arduino, Hint{}, Espota},
		{sim.Arduino, Hint{Service: "_arduino._tcp"}, Espota},
		{sim.ESP8266, Hint{}, Espota},
	} {
		t.Run(string(tc.p), func(t *testing.T) {
			var mu sync.Mutex
			var events []sim.EventKind
			cfg := sim.Config{Personality: tc.p, Password: auth.NewSecret("pw"), OnEvent: func(e sim.Event) {
				mu.Lock()
				events = append(events, e.Event)
				mu.Unlock()
			}}
			d := startSim(t, cfg)
			d2, err := ChooseProtocol(httpCtx(t), probeTarget(t, d.OTAAddr()), tc.hint, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if d2.Protocol != tc.want || !d2.Probed || d2.Why == "" {
				t.Fatalf("got %+v, want %s by probe", d2, tc.want)
			}
			time.Sleep(50 * time.Millisecond) // let a stray invitation show up
			mu.Lock()
			defer mu.Unlock()
			for _, k := range events {
				if k != sim.EventReady {
					t.Errorf("the probe caused a device event %s (all: %v)", k, events)
				}
			}
			if n := len(d.State().Uploads); n != 0 {
				t.Errorf("the probe started %d uploads", n)
			}
		})
	}
}

// A port that neither accepts nor refuses (a rebooting device): never
// espota, always unreachable; the HTTP transport says the same
// (TestHTTPSilentIsUnreachable, in transports_test.go).
func TestChooseProtocolSilentIsUnreachable(t *testing.T) {
	addr := silentOrSkip(t)
	tg := probeTarget(t, addr)
	_, err := ChooseProtocol(httpCtx(t), tg, Hint{Service: "_arduino._tcp"}, 200*time.Millisecond)
	de := asDeviceError(t, err)
	if de.Class != ClassUnreachable || !strings.Contains(de.Reason, "no answer") {
		t.Fatalf("got %+v", de)
	}
}

// A device probed while it reboots: it must not be taken for espota.
func TestChooseProtocolRebootingDevice(t *testing.T) {
	tm := httpTiming()
	tm.BootTime = 3 * time.Second
	d := startSim(t, sim.Config{Personality: sim.Seed, Timing: tm})
	addr := d.OTAAddr()
	d.Reboot()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.WaitState(ctx, func(s sim.State) bool { return s.Phase == sim.PhaseBooting }); err != nil {
		t.Fatal(err)
	}
	// Right after the reset the sim may still complete a handshake before
	// its listener is held; from then on the device is silent. Never espota.
	silent := false
	for i := 0; i < 10 && !silent; i++ {
		dec, err := ChooseProtocol(httpCtx(t), probeTarget(t, addr), Hint{}, 300*time.Millisecond)
		if d.State().Phase != sim.PhaseBooting {
			break
		}
		switch {
		case err == nil && dec.Protocol == Espota:
			t.Fatalf("a rebooting device was taken for espota: %+v", dec)
		case err != nil:
			if de := asDeviceError(t, err); de.Class != ClassUnreachable {
				t.Fatalf("got %+v, want unreachable", de)
			}
			silent = true
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !silent {
		t.Fatalf("the rebooting device never probed silent")
	}
}

func TestChooseProtocolCanceled(t *testing.T) {
	addr := silentOrSkip(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ChooseProtocol(ctx, probeTarget(t, addr), Hint{}, time.Second)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

// probeTarget is addr with the protocol left to auto.
func probeTarget(t *testing.T, addr string) Target {
	tg := httpTarget(t, addr, "")
	tg.Protocol = Auto
	return tg
}
