package upload

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/ots-ota/ots-ota/sim"
)

// Helpers shared by the transports' tests: a simulated device and a cached
// image, so each transport's tests do not grow their own copies.

var simImages sync.Map

// simImage is a valid esp32s3 app image of about size bytes (0 = small),
// built once per version and size.
func simImage(t testing.TB, version string, size int) *Firmware {
	t.Helper()
	k := version + "/" + strconv.Itoa(size)
	if fw, ok := simImages.Load(k); ok {
		return fw.(*Firmware)
	}
	b, err := sim.Image("esp32s3", "ots-fw-main", version, size)
	if err != nil {
		t.Fatalf("build image: %v", err)
	}
	fw := NewFirmware("fw-"+version+".bin", b, false)
	simImages.Store(k, fw)
	return fw
}

// startSim starts one simulated device (FastTiming and seed 1 unless cfg
// says otherwise) and stops it when the test ends.
func startSim(t testing.TB, cfg sim.Config) *sim.Device {
	t.Helper()
	if cfg.Timing == nil {
		tm := sim.FastTiming()
		cfg.Timing = &tm
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	d, err := sim.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start sim: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
