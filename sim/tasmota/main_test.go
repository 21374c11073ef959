package tasmota

import (
	"testing"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

func TestMain(m *testing.M) { simtest.Main(m, Firmware) }
