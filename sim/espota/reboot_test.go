package espota

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestEspotaSilentAfterOK: ArduinoOTA restarts the chip right after the
// final OK, so an invitation sent then is never answered (not even once the
// device is back: the reboot lost it) and no second upload starts.
func TestEspotaSilentAfterOK(t *testing.T) {
	for _, p := range []core.Personality{ArduinoSketch, ESP8266Sketch} {
		t.Run(string(p), func(t *testing.T) {
			var ev simtest.EventLog
			cfg := simtest.Config(p)
			// ArduinoOTA's full 110 ms between the OK and the restart.
			cfg.Timing.RebootDelayMin = 110 * time.Millisecond
			cfg.Timing.RebootDelayMax = 110 * time.Millisecond
			cfg.OnEvent = ev.Add
			d := simtest.Start(t, cfg)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			const runs = 2
			for i := 0; i < runs; i++ {
				version := fmt.Sprintf("1.0.%d", 100+i)
				res, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, version), "")
				if err != nil || res.Final != "OK" {
					t.Fatalf("run %d: %+v %v", i, res, err)
				}
				u, err := net.Dial("udp", d.OTAAddr())
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(u, "0 %d 100 %s\n", ln.Addr().(*net.TCPAddr).Port, simtest.MD5Hex(make([]byte, 100)))
				u.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				n, err := u.Read(make([]byte, 64))
				u.Close()
				if !simtest.IsTimeout(err) {
					t.Fatalf("run %d: an invitation right after OK got %d bytes, %v; want silence", i, n, err)
				}
				if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), version); err != nil {
					t.Fatalf("run %d: %v", i, err)
				}
			}
			if n := ev.Count(core.EventUploadStarted); n != runs {
				t.Errorf("%d uploads started, want %d", n, runs)
			}
		})
	}
}
