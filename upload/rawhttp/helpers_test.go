package rawhttp

import (
	"testing"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/post"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// eraseWindow is the body bytes below which a device counts as erasing.
const eraseWindow = post.EraseWindow

// The shared test kit, with upload's types.

var (
	startSim   = testkit.StartSim
	httpCtx    = testkit.Ctx
	httpTiming = testkit.FastTiming
)

// simImage is testkit.SimImage as firmware.
func simImage(t testing.TB, version string, size int) *upload.Firmware {
	return upload.NewFirmware("fw-"+version+".bin", testkit.SimImage(t, version, size), false)
}

// httpTarget is the device's OTA port as an HTTP Target.
func httpTarget(t testing.TB, addr, path string) upload.Target {
	host, port := testkit.HostPort(t, addr)
	return upload.Target{Name: "dev", Host: host, Port: port, Path: path, Protocol: upload.HTTP}
}

func asDeviceError(t testing.TB, err error) *upload.DeviceError {
	t.Helper()
	return testkit.DeviceError(t, err, func(de *upload.DeviceError) string { return de.Reason })
}
