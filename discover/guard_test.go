package discover

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/ifaceguard"
)

// With OTS_OTA_TEST_IFACES set, nothing opens an mDNS socket on another
// interface: not a named one, not the default set, not one a caller put in
// Config itself. The refusals come before any socket exists, so this test
// is safe anywhere.
func TestGuardRefusesOtherInterfaces(t *testing.T) {
	t.Setenv(ifaceguard.Env, "lo")
	other := &net.Interface{Index: 9999, Name: "ots-guard0", MTU: 1500, Flags: net.FlagUp | net.FlagMulticast}
	oneLine := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: not refused", what)
		}
		if msg := err.Error(); !strings.Contains(msg, "ots-guard0") || !strings.Contains(msg, ifaceguard.Env) || strings.Contains(msg, "\n") {
			t.Errorf("%s: %q: want one line naming the interface and %s", what, msg, ifaceguard.Env)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := Config{Interfaces: []*net.Interface{other}}
	_, err := Browse(ctx, cfg, BrowseOptions{Timeout: time.Second})
	oneLine("Browse", err)
	oneLine("Watch", Watch(ctx, cfg, func(Event) {}))
	r := &Resolver{Config: cfg, NoOS: true}
	_, err = r.Lookup(ctx, "ots-guard.local")
	var re *ResolveError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, ifaceguard.Env) {
		t.Errorf("Lookup: %v: want the guard's refusal as the reason", err)
	}
}

// An interface named by the user (--interface) that exists but is not
// listed is refused.
func TestGuardRefusesANamedInterface(t *testing.T) {
	t.Setenv(ifaceguard.Env, "ots-guard-none0")
	lo := strings.Split(ifaceguard.LoopbackNames(), ",")[0]
	if _, err := net.InterfaceByName(lo); err != nil {
		t.Skipf("no loopback interface here: %v", err)
	}
	_, err := InterfacesByName([]string{lo})
	if err == nil || !strings.Contains(err.Error(), "interface "+lo+" is not in "+ifaceguard.Env) {
		t.Errorf("InterfacesByName(%s): %v: want the guard's refusal", lo, err)
	}
}

// With no interface named, only the listed ones are used.
func TestGuardNarrowsTheDefault(t *testing.T) {
	t.Setenv(ifaceguard.Env, "ots-guard-none0")
	if ifs, err := Interfaces(); err == nil || !strings.Contains(err.Error(), ifaceguard.Env) {
		t.Errorf("Interfaces with no listed interface present: %v, %v: want an error naming %s", ifs, err, ifaceguard.Env)
	}
	t.Setenv(ifaceguard.Env, ifaceguard.LoopbackNames())
	ifs, err := Interfaces()
	if err != nil {
		t.Skipf("loopback is not up and multicast-capable here: %v", err)
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback == 0 {
			t.Errorf("Interfaces gave %s, not a loopback interface", ifi.Name)
		}
	}
}

// The system resolver (which may itself send mDNS on every interface) is
// not asked for .local names while the guard is on.
func TestGuardKeepsLocalNamesFromTheSystemResolver(t *testing.T) {
	t.Setenv(ifaceguard.Env, "lo")
	r := &Resolver{NoMDNS: true}
	_, err := r.Lookup(context.Background(), "ots-guard.local")
	var re *ResolveError
	if !errors.As(err, &re) || !strings.Contains(re.Reason, ifaceguard.Env) {
		t.Errorf("Lookup: %v: want a refusal naming %s", err, ifaceguard.Env)
	}
}
