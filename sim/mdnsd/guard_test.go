package mdnsd

import (
	"net"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/internal/ifaceguard"
)

// The responder refuses an interface OTS_OTA_TEST_IFACES does not list,
// before it opens a socket.
func TestGuardRefusesOtherInterfaces(t *testing.T) {
	t.Setenv(ifaceguard.Env, "lo")
	other := &net.Interface{Index: 9999, Name: "ots-guard0", MTU: 1500, Flags: net.FlagUp | net.FlagMulticast}
	r, err := New(Config{Interface: other})
	if err == nil {
		r.Close()
		t.Fatal("responder opened on an interface the guard does not list")
	}
	if msg := err.Error(); !strings.Contains(msg, "ots-guard0") || !strings.Contains(msg, ifaceguard.Env) {
		t.Errorf("error %q: want the interface and %s named", msg, ifaceguard.Env)
	}
}
