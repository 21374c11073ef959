package simtest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
)

// Timing is core.FastTiming with a stability window long enough to observe
// pending_verify.
func Timing() *core.Timing {
	t := core.FastTiming()
	return &t
}

// Config is a device of personality p with test timing and seed 1.
func Config(p core.Personality) core.Config {
	return core.Config{Personality: p, Timing: Timing(), Seed: 1}
}

// Start starts a device (with test timing unless cfg has its own) and
// closes it when the test ends.
func Start(t testing.TB, cfg core.Config) *core.Device {
	t.Helper()
	if cfg.Timing == nil {
		cfg.Timing = Timing()
	}
	d, err := core.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// Ctx is a context that ends after d or with the test.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// imageCache keeps built test images: building a 1 MB image takes a while
// under -race.
var imageCache sync.Map

type imgKey struct {
	chip, version string
	size          int
}

// Image is a small esp32s3 image of version (project ots-fw-main).
func Image(t testing.TB, version string) []byte { return ImageOf(t, "esp32s3", version, 0) }

// ImageOf is an image for chip of version, about size bytes (0 = small),
// built once per test binary.
func ImageOf(t testing.TB, chip, version string, size int) []byte {
	t.Helper()
	k := imgKey{chip: chip, version: version, size: size}
	if b, ok := imageCache.Load(k); ok {
		return b.([]byte)
	}
	b, err := core.Image(chip, "ots-fw-main", version, size)
	if err != nil {
		t.Fatalf("build image: %v", err)
	}
	imageCache.Store(k, b)
	return b
}

// EventLog collects events.
type EventLog struct {
	mu sync.Mutex
	ev []core.Event
}

// Events returns the events so far.
func (l *EventLog) Events() []core.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ev)
}

// Add is an OnEvent callback.
func (l *EventLog) Add(e core.Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

// Kinds lists the kinds of the events so far, in order.
func (l *EventLog) Kinds() []core.EventKind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var k []core.EventKind
	for _, e := range l.ev {
		k = append(k, e.Event)
	}
	return k
}

// Find returns the first event of kind k.
func (l *EventLog) Find(k core.EventKind) (core.Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.ev {
		if e.Event == k {
			return e, true
		}
	}
	return core.Event{}, false
}

// WaitCount waits until at least n events of kind k arrived: events are
// emitted after the state change that waiters see, so a test that has seen
// the state must still wait for the event.
func (l *EventLog) WaitCount(t testing.TB, k core.EventKind, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Count(k) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d %s event(s) expected, have %v", n, k, l.Kinds())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Count is how many events of kind k arrived.
func (l *EventLog) Count(k core.EventKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.ev {
		if e.Event == k {
			n++
		}
	}
	return n
}

// LastUpload is the device's latest upload record.
func LastUpload(t testing.TB, d *core.Device) core.UploadRecord {
	t.Helper()
	st := d.State()
	if len(st.Uploads) == 0 {
		t.Fatalf("no upload recorded")
	}
	return st.Uploads[len(st.Uploads)-1]
}

// WaitUploads waits until the device recorded n uploads.
func WaitUploads(t testing.TB, d *core.Device, n int) core.State {
	t.Helper()
	st, err := d.WaitState(Ctx(t, 10*time.Second), func(s core.State) bool { return len(s.Uploads) >= n })
	if err != nil {
		t.Fatalf("wait for %d uploads: %v", n, err)
	}
	return st
}

// Slot is the state of the slot labelled label.
func Slot(st core.State, label string) core.SlotState {
	for _, s := range st.Slots {
		if s.Label == label {
			return s
		}
	}
	return core.SlotState{}
}

// Corrupt returns a copy of b with one byte flipped at off.
func Corrupt(b []byte, off int) []byte {
	c := bytes.Clone(b)
	c[off] ^= 0xFF
	return c
}

// MustAddr parses an IP address or fails the test.
func MustAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// MustFault parses a fault spec or fails the test.
func MustFault(t *testing.T, s string) core.Fault {
	t.Helper()
	f, err := core.ParseFault(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// ProbeTCP says what a client trying to connect sees: "accepted",
// "refused" or "timeout" (after wait). A rebooting or dead device times
// out, as a chip off the network does, where the OS lets the sim do that.
func ProbeTCP(addr string, wait time.Duration) string {
	c, err := net.DialTimeout("tcp", addr, wait)
	switch {
	case err == nil:
		c.Close()
		return "accepted"
	case IsTimeout(err):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	}
	return err.Error()
}

// IsTimeout reports a deadline or timeout error.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
