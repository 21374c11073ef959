package cmd

import (
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/ots-ota/ots-ota/sim/mdnsd"
)

// needMulticast skips a test that sends mDNS unless it runs where that
// is safe: Linux, inside a private network namespace with multicast on
// lo (OTS_OTA_MDNS_TESTS=1, as .ci/run sets up).
func needMulticast(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" || os.Getenv("OTS_OTA_MDNS_TESTS") != "1" {
		t.Skip("multicast test: run with OTS_OTA_MDNS_TESTS=1 inside `unshare -n` (see .ci/run)")
	}
}

// multicastLo is needMulticast plus the loopback interface the devices'
// responders bind.
func multicastLo(t *testing.T) *net.Interface {
	t.Helper()
	needMulticast(t)
	lo, err := mdnsd.LoopbackInterface()
	if err != nil {
		t.Skip(err)
	}
	return lo
}
