// Package testkit holds what the tests of upload and of its transport
// packages share: a simulated device, test images, contexts and loopback
// addresses. It does not import upload, so that upload's own tests can use
// it too; the helpers that need upload's types are one-line adapters in each
// test package.
package testkit

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim"
)

// StartSim starts one simulated device (FastTiming and seed 1 unless cfg
// says otherwise) and stops it when the test ends.
func StartSim(t testing.TB, cfg sim.Config) *sim.Device {
	t.Helper()
	if cfg.Timing == nil {
		cfg.Timing = FastTiming()
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	d, err := sim.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start sim: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// FastTiming is sim.FastTiming, to tweak per test.
func FastTiming() *sim.Timing {
	tm := sim.FastTiming()
	return &tm
}

var images sync.Map

// SimImage is a valid esp32s3 app image of about size bytes (0 = small),
// built once per version and size.
func SimImage(t testing.TB, version string, size int) []byte {
	t.Helper()
	k := version + "/" + strconv.Itoa(size)
	if b, ok := images.Load(k); ok {
		return b.([]byte)
	}
	b, err := sim.Image("esp32s3", "ots-fw-main", version, size)
	if err != nil {
		t.Fatalf("build image: %v", err)
	}
	images.Store(k, b)
	return b
}

// Ctx is a context that ends with the test, or after a minute.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// HostPort splits a host:port address.
func HostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// DeviceError is errors.As into E for a test, which fails when err holds no
// E and reports one whose reason (why) is empty: every device error says why.
func DeviceError[E error](t testing.TB, err error, why func(E) string) E {
	t.Helper()
	var e E
	if !errors.As(err, &e) {
		t.Fatalf("want a %T, got %T %v", e, err, err)
	}
	if why(e) == "" {
		t.Errorf("%T without a reason: %+v", e, e)
	}
	return e
}
