package sim

import (
	"os"
	"testing"

	"github.com/ots-ota/ots-ota/internal/ifaceguard"
)

// Nothing these tests start may browse or advertise beyond loopback.
func TestMain(m *testing.M) {
	ifaceguard.LoopbackOnly()
	os.Exit(m.Run())
}
