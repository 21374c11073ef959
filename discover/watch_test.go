package discover

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// eventLog collects a watch's events for one instance.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(inst string) func(Event) {
	return func(e Event) {
		if e.Device.Instance != inst {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.events = append(l.events, e)
	}
}

func (l *eventLog) kinds() []EventKind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ks []EventKind
	for _, e := range l.events {
		ks = append(ks, e.Kind)
	}
	return ks
}

func (l *eventLog) last() Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.events) == 0 {
		return Event{}
	}
	return l.events[len(l.events)-1]
}

func (l *eventLog) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

func watch(t *testing.T, cfg Config, emit func(Event)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, cfg, emit) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// TestWatchExpiry: a device that vanishes without a goodbye is removed when
// its SRV and A records expire, after the refresh queries of RFC 6762 §5.2.
func TestWatchExpiry(t *testing.T) {
	ifi := mdnsLoopback(t)
	r := newSplitResponder(t, ifi, "Expiring", "expiring", netip.MustParseAddr("127.43.5.2"))
	r.set(func(r *splitResponder) { r.ttl = 2 })
	var log eventLog
	watch(t, loCfg(ifi, "_ota._tcp"), log.add("Expiring"))
	waitFor(t, "added", 3*time.Second, func() bool { return log.n() > 0 })

	// While the device answers the refreshes, it stays, well past its TTL.
	time.Sleep(5 * time.Second)
	if k := log.kinds(); len(k) != 1 || k[0] != Added {
		t.Fatalf("events while answering refreshes: %v", k)
	}
	// (No count of refresh queries here: other browsers on lo, from tests
	// running in parallel, may refresh the cache for us with their queries.)

	// The device goes silent right after one last announcement: the cached
	// records start a fresh TTL then, so their whole refresh schedule falls
	// in the silence. (Going silent at an arbitrary point of a cycle leaves
	// anywhere from zero to four refresh queries before the expiry: other
	// browsers' queries and a loaded machine set the phase.)
	r.set(func(r *splitResponder) { r.silent = true })
	srvBefore, aBefore := r.count(dns.TypeSRV), r.count(dns.TypeA)
	r.announce()
	// The refresh queries below prove the TTL drives the expiry; the
	// deadline, far beyond the 2 s TTL so that a loaded CI machine cannot
	// miss it, catches an expiry that ignores the TTL (never, or minutes).
	// No measured duration is asserted: under load it says nothing.
	waitFor(t, "removal", 15*time.Second, func() bool { return log.n() > 1 })
	e := log.last()
	if e.Kind != Removed || e.Reason != "expired" {
		t.Fatalf("event %+v", e)
	}
	// Four refresh queries (80/85/90/95 %) for SRV and for A before giving up.
	if s, a := r.count(dns.TypeSRV)-srvBefore, r.count(dns.TypeA)-aBefore; s < 3 || a < 3 {
		t.Errorf("refresh queries before expiry: SRV %d, A %d (want 4 each)", s, a)
	}
}

// TestWatchGoodbyeAndChange: a new TXT is a change; goodbyes remove.
func TestWatchGoodbyeAndChange(t *testing.T) {
	ifi := mdnsLoopback(t)
	r := newSplitResponder(t, ifi, "Leaving", "leaving", netip.MustParseAddr("127.43.5.3"))
	var log eventLog
	watch(t, loCfg(ifi, "_ota._tcp"), log.add("Leaving"))
	waitFor(t, "added", 3*time.Second, func() bool { return log.n() > 0 })

	// A reboot onto a new version: no goodbye, a fresh announcement with a
	// new TXT (cache-flush replaces the old one).
	time.Sleep(1100 * time.Millisecond) // cache-flush spares records under 1 s old
	r.set(func(r *splitResponder) { r.txt = []string{"version=1.0.1"} })
	r.announce()
	waitFor(t, "change", 3*time.Second, func() bool { return log.n() > 1 })
	if e := log.last(); e.Kind != Changed || e.Device.TXT["version"] != "1.0.1" {
		t.Fatalf("event %+v", e)
	}

	r.goodbye()
	waitFor(t, "removal", 3*time.Second, func() bool { return log.n() > 2 })
	if e := log.last(); e.Kind != Removed || e.Reason != "goodbye" {
		t.Fatalf("event %+v", e)
	}
	if k := log.kinds(); len(k) != 3 {
		t.Errorf("events %v", k)
	}
}
