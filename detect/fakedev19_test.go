package detect

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/fakedev"
	"github.com/ots-ota/ots-ota/internal/testnet"
)

// TestDetectIndependentFakes19: detection against the independent WLED
// and Tasmota fakes (internal/fakedev, written from the families' sources,
// not from this table): each is named and given its protocol, on the port
// it was found at, and none of them is changed: no upload, no command but
// the one Status 0 probe, no Status during an upgrade, no SetOption128.
func TestDetectIndependentFakes19(t *testing.T) {
	deadPort := func(t *testing.T) int {
		_, p, _ := net.SplitHostPort(testnet.DeadAddr(t))
		n, _ := strconv.Atoi(p)
		return n
	}
	urlWord := Evidence{Word: HTTP, WordFrom: "the URL (/update)"}
	for _, tc := range []struct {
		name   string
		wled   *fakedev.WLEDConfig
		tas    *fakedev.TasmotaConfig
		onWeb  bool // the fake is the web port; the OTA port is dead
		ev     Evidence
		want   Protocol
		family Family
	}{
		{name: "WLED by URL", wled: &fakedev.WLEDConfig{}, ev: urlWord, want: ProtoWLED, family: FamilyWLED},
		{name: "WLED behind its OTA lock, by URL", wled: &fakedev.WLEDConfig{OTALock: true}, ev: urlWord, want: ProtoWLED, family: FamilyWLED},
		{name: "WLED on 80", wled: &fakedev.WLEDConfig{Release: fakedev.WLED015, ESP8266: true}, onWeb: true, want: ProtoWLED, family: FamilyWLED},
		{name: "Tasmota on 80", tas: &fakedev.TasmotaConfig{}, onWeb: true, want: ProtoTasmota, family: FamilyTasmota},
		{name: "Tasmota with a password, German, on 80", tas: &fakedev.TasmotaConfig{Password: "pw", Language: "de"}, onWeb: true, want: ProtoTasmota, family: FamilyTasmota},
		{name: "Tasmota by URL", tas: &fakedev.TasmotaConfig{ESP8266: true}, ev: urlWord, want: ProtoTasmota, family: FamilyTasmota},
		{name: "Tasmota as _http._tcp", tas: &fakedev.TasmotaConfig{}, ev: Evidence{Service: "_http._tcp"}, want: ProtoTasmota, family: FamilyTasmota},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var port int
			var wd *fakedev.WLEDDevice
			var td *fakedev.TasmotaDevice
			switch {
			case tc.wled != nil:
				d, err := fakedev.StartWLED(*tc.wled)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { d.Close() })
				wd, port = d, d.Port()
			default:
				d, err := fakedev.StartTasmota(*tc.tas)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { d.Close() })
				td, port = d, d.Port()
			}
			tg := Target{Host: "127.0.0.1", Port: port, WebPort: -1}
			if tc.onWeb {
				tg.Port, tg.WebPort = deadPort(t), port
			}
			var sent []string
			det := Detector{ConnectTimeout: 2 * time.Second, RequestTimeout: 2 * time.Second,
				OnProbe: func(addr string, p Probe) { sent = append(sent, p.String()) }}
			d := det.Detect(context.Background(), tg, tc.ev)
			if d.Protocol != tc.want || d.Family != tc.family || d.Refused || d.Failure != nil || d.Web != tc.onWeb {
				t.Fatalf("got %+v (failure %v), want %s on the web port %v; probes %q", d, d.Failure, tc.want, tc.onWeb, sent)
			}
			if wd != nil && (wd.Uploads() != 0 || wd.Reverts() != 0 || wd.Boots() != 0) {
				t.Errorf("the WLED was changed: %d uploads, %d reverts, %d boots", wd.Uploads(), wd.Reverts(), wd.Boots())
			}
			if td != nil {
				if td.Uploads() != 0 || td.Upgrading() || len(td.SetOption128()) != 0 || td.Silences() != 0 || td.Boots() != 0 {
					t.Errorf("the Tasmota was changed or gated: %d uploads, upgrading %v, SO128 %v, %d silences", td.Uploads(), td.Upgrading(), td.SetOption128(), td.Silences())
				}
				for _, c := range td.Commands() {
					if c != "Status 0" {
						t.Errorf("detection ran %q on the Tasmota", c)
					}
				}
			}
			t.Logf("%s: %v", d.Why, sent)
		})
	}
}
