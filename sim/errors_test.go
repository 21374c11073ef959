package sim

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

// TestStartErrorsTyped: callers learn which device failed and why from the
// error's type, not its text.
func TestStartErrorsTyped(t *testing.T) {
	_, err := Start(context.Background(), Config{Name: "dev-x", IP: netip.MustParseAddr("192.0.2.1")})
	var se *StartError
	if !errors.As(err, &se) || se.Device != "dev-x" || !errors.Is(err, ErrNotLoopback) {
		t.Fatalf("Start(192.0.2.1) = %v, want a StartError for dev-x wrapping ErrNotLoopback", err)
	}
	_, err = StartFleet(context.Background(), FleetConfig{N: 1, Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}})
	if !errors.Is(err, ErrNotLoopback) {
		t.Fatalf("StartFleet(192.0.2.1) = %v, want ErrNotLoopback", err)
	}
}
