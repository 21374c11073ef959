package espota

import (
	"testing"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// The shared test kit, with upload's types.

var startSim = testkit.StartSim

// simImage is testkit.SimImage as firmware.
func simImage(t testing.TB, version string, size int) *upload.Firmware {
	return upload.NewFirmware("fw-"+version+".bin", testkit.SimImage(t, version, size), false)
}
