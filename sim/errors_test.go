package sim

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
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

// TestStartErrorTime: a fleet that fails to start says when, and that is
// before the devices that did start are stopped (review 7, defect 14: the
// CLI's error event came after their stopped events).
func TestStartErrorTime(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs 127.0.0.0/8 on the loopback interface (Linux)")
	}
	ln, err := net.Listen("tcp", "127.0.12.3:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	var log simtest.EventLog
	cfg := FleetConfig{N: 3, OTAPort: port, WebPort: -1, OnEvent: log.Add, Template: simtest.Config(Seed),
		Addrs: []netip.Addr{simtest.MustAddr(t, "127.0.12.2"), simtest.MustAddr(t, "127.0.12.3"), simtest.MustAddr(t, "127.0.12.4")}}
	_, err = StartFleet(context.Background(), cfg)
	var se *StartError
	if !errors.As(err, &se) || se.Device != "ots-sim-02" || se.At.IsZero() {
		t.Fatalf("StartFleet with 127.0.12.3:%d taken = %v, want a StartError for the second device with its time", port, err)
	}
	log.WaitCount(t, EventStopped, 2)
	for _, e := range log.Events() {
		if e.Event == EventStopped && e.Time.Before(se.At) {
			t.Errorf("%s stopped at %v, before the start failed at %v", e.Device, e.Time, se.At)
		}
	}
}
