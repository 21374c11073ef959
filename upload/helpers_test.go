package upload

import (
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// The shared test kit, with upload's types.

var (
	startSim   = testkit.StartSim
	httpCtx    = testkit.Ctx
	httpTiming = testkit.FastTiming
)

// httpTarget is the device's OTA port as an HTTP Target.
func httpTarget(t testing.TB, addr, path string) Target {
	host, port := testkit.HostPort(t, addr)
	return Target{Name: "dev", Host: host, Port: port, Path: path, Protocol: HTTP}
}

func asDeviceError(t testing.TB, err error) *DeviceError {
	t.Helper()
	return testkit.DeviceError(t, err, func(de *DeviceError) string { return de.Reason })
}

// simOptions are the runner's options against simulated devices, with no
// transport yet: each test adds those it needs.
func simOptions() Options {
	return Options{
		Transports: map[Protocol]Transport{},
		Observer:   &DeviceObserver{Timeout: 200 * time.Millisecond},
		Parallel:   8, Retries: 3, Backoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		StabilityWindow: 700 * time.Millisecond, VerifyTimeout: 10 * time.Second, RebootGrace: 2 * time.Second,
		PollInterval: 5 * time.Millisecond, ProbeTimeout: 200 * time.Millisecond, Seed: 3,
	}
}
