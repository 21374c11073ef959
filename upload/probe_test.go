package upload

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/internal/testnet"
	"github.com/ots-ota/ots-ota/sim"
)

// TestChooseProtocolFacts: what decides without a packet. The target is
// an address where nothing listens, so a decision that needed a probe
// would come back as an error instead.
func TestChooseProtocolFacts(t *testing.T) {
	dead := probeTarget(t, testnet.DeadAddr(t))
	with := func(f func(*Target)) Target { tg := dead; f(&tg); return tg }
	for _, tc := range []struct {
		name string
		t    Target
		h    Hint
		want Protocol // "" = a probe is needed
		path string
	}{
		{"explicit espota on target", with(func(t *Target) { t.Protocol = Espota }), Hint{Service: "_ota._tcp"}, Espota, ""},
		{"espota in hint", dead, Hint{Protocol: Espota, From: "--protocol", Service: "_ota._tcp"}, Espota, ""},
		{"arduino board", dead, Hint{Service: "_arduino._tcp", TXT: map[string]string{"board": "esp32s3", "tcp_check": "no"}}, Espota, ""},
		{"arduino auth_upload only", dead, Hint{Service: "_arduino._tcp.local.", TXT: map[string]string{"auth_upload": "yes"}}, Espota, ""},
		{"arduino key case", dead, Hint{Service: "_arduino._tcp", TXT: map[string]string{"Board": "x"}}, Espota, ""},
		{"ota service", dead, Hint{Service: "_ota._tcp"}, HTTP, ""},
		{"ota service path", dead, Hint{Service: "_ota._tcp", TXT: map[string]string{"path": "/fw"}}, HTTP, "/fw"},
		{"http in hint with _ota._tcp", dead, Hint{Protocol: HTTP, From: "the inventory", Service: "_ota._tcp"}, HTTP, ""},
		{"ots: _arduino._tcp without TXT", dead, Hint{Service: "_arduino._tcp"}, "", ""},
		{"board on another service is no proof", dead, Hint{Service: "_http._tcp", TXT: map[string]string{"board": "x"}}, "", ""},
		{"nothing known", dead, Hint{}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ChooseProtocol(httpCtx(t), tc.t, tc.h, time.Second)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("decided %+v without a device to probe", d)
				}
				return
			}
			if err != nil || d.Protocol != tc.want || d.Path != tc.path || d.Why == "" || d.Probed {
				t.Fatalf("got %+v, %v; want %q path %q, no probe", d, err, tc.want, tc.path)
			}
		})
	}
}

// ESPHome's own record decides with no packet sent (issue 20): its OTA
// port takes only its own magic.
func TestChooseProtocolESPHomeByRecord(t *testing.T) {
	d, err := ChooseProtocol(httpCtx(t), probeTarget(t, testnet.DeadAddr(t)), Hint{Service: "_esphomelib._tcp"}, time.Second)
	if err != nil || d.Protocol != ESPHome || d.Family != "esphome" || d.Probed || !strings.Contains(d.Why, "_esphomelib._tcp") {
		t.Fatalf("got %+v, %v", d, err)
	}
}

// Issue 19: WLED and Tasmota by mDNS or by word decide with no packet;
// without a port they go to the web port (80, or the target's).
func TestChooseProtocolWLEDTasmota(t *testing.T) {
	dead := probeTarget(t, testnet.DeadAddr(t))
	noPort := dead
	noPort.Port = 0
	webPort := noPort
	webPort.WebPort = 8080
	for _, tc := range []struct {
		name   string
		t      Target
		h      Hint
		want   Protocol
		family string
		port   int
	}{
		{"_wled._tcp at its SRV port", dead, Hint{Service: "_wled._tcp", TXT: map[string]string{"mac": "aabbccddeeff"}}, "wled", "wled", 0},
		{"_wled._tcp without a port", noPort, Hint{Service: "_wled._tcp"}, "wled", "wled", 80},
		{"--protocol wled, --web-port", webPort, Hint{Protocol: "wled", From: "--protocol"}, "wled", "wled", 8080},
		{"inventory tasmota", noPort, Hint{Protocol: "tasmota", From: "the inventory"}, "tasmota", "tasmota", 80},
		{"target's tasmota with its port", func() Target { tg := dead; tg.Protocol = "tasmota"; return tg }(), Hint{}, "tasmota", "tasmota", 0},
		{"--protocol http to _wled._tcp: WLED's own", dead, Hint{Protocol: HTTP, From: "--protocol", Service: "_wled._tcp"}, "wled", "wled", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ChooseProtocol(httpCtx(t), tc.t, tc.h, time.Second)
			if err != nil || d.Protocol != tc.want || d.Family != tc.family || d.Port != tc.port || d.Probed || d.Why == "" {
				t.Fatalf("got %+v, %v; want %s family %s port %d, no probe", d, err, tc.want, tc.family, tc.port)
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
	addr := testnet.SilentAddr(t)
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
	addr := testnet.SilentAddr(t)
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
