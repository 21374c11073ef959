package simtest

import (
	"os"
	"testing"

	"github.com/ots-ota/ots-ota/internal/ifaceguard"
	"github.com/ots-ota/ots-ota/sim/core"
)

// Main is a family's TestMain: its own personalities registered, as sim
// registers them, and nothing the tests start browses or advertises beyond
// loopback.
func Main(m *testing.M, fws ...core.Firmware) {
	ifaceguard.LoopbackOnly()
	core.Register(fws...)
	os.Exit(m.Run())
}
