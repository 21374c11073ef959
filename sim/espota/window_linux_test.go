package espota

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// The device's TCP window is lwIP's (about 5.7 KB), so a host that writes
// while the device erases sees its writes stop after its own send buffer
// plus that window. These tests use a client with a fixed 16 KiB SO_SNDBUF
// (Linux doubles it to 32 KiB) that counts the bytes its socket accepted,
// and read that count at the moment the device resumes reading.

func TestEraseStallVisibleEspota(t *testing.T) {
	cfg := simtest.Config(ArduinoSketch)
	stall, _ := core.ParseFault("stall@8KiB:500ms")
	cfg.Faults = []core.Fault{stall}
	d := simtest.Start(t, cfg)
	var accepted atomic.Int64
	seen := make(chan [2]int64, 1)
	core.PeekAt(d).OnPause(func(read int64) {
		select {
		case seen <- [2]int64{accepted.Load(), read}:
		default:
		}
	})

	img := simtest.ImageOf(t, "esp32s3", "1.0.1", 600<<10)
	c := espotaOpen(t, d.OTAAddr(), img)
	simtest.SetSndbuf(t, c, 16<<10)
	go func() { // the counts: read and dropped
		b := make([]byte, 4096)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
		}
	}()
	go simtest.WriteCounting(c, img, &accepted)
	var at [2]int64
	select {
	case at = <-seen:
	case <-time.After(20 * time.Second):
		t.Fatal("the stall never ended")
	}
	if inFlight := at[0] - at[1]; inFlight >= simtest.MaxInFlight {
		t.Errorf("%d bytes accepted beyond the %d the device had read, want < %d", inFlight, at[1], simtest.MaxInFlight)
	}
	t.Logf("in flight when the device resumed: %d bytes", at[0]-at[1])
}
