package discover

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The cache's clock, not the wall clock: a record with a 2 s TTL is asked
// for again at 80/85/90/95 % of it (RFC 6762 §5.2) and goes exactly when
// the TTL runs out. TestWatchExpiry shows the same on the wire, where a
// loaded machine makes every measured duration meaningless.
func TestCacheExpiryFollowsTTL(t *testing.T) {
	c := newCache()
	t0 := time.Unix(1_000_000, 0)
	srv := &dns.SRV{Hdr: dns.RR_Header{Name: "x._ota._tcp.local.", Rrtype: dns.TypeSRV, Class: dns.ClassINET | classCacheFlush, Ttl: 2},
		Target: "x.local.", Port: 3232}
	c.add(srv, 1, netip.MustParseAddr("127.43.5.9"), t0)
	want := func(nameType) bool { return true }
	for i, frac := range []float64{0.80, 0.85, 0.90, 0.95} {
		before := t0.Add(time.Duration(float64(2*time.Second) * frac)).Add(-time.Millisecond)
		if qs := c.refreshes(before, want); len(qs) != 0 {
			t.Fatalf("refresh %d asked before %.0f %% of the TTL: %v", i, frac*100, qs)
		}
		at := t0.Add(time.Duration(float64(2*time.Second) * (frac + 0.02)))
		if qs := c.refreshes(at, want); len(qs) != 1 || qs[0].Qtype != dns.TypeSRV {
			t.Fatalf("refresh %d at %.0f %% of the TTL: %v", i, (frac+0.02)*100, qs)
		}
	}
	if qs := c.refreshes(t0.Add(1999*time.Millisecond), want); len(qs) != 0 {
		t.Errorf("a fifth refresh: %v", qs)
	}
	if removed, next := c.sweep(t0.Add(1999 * time.Millisecond)); removed || !next.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("before the TTL ran out: removed %v, next due %v", removed, next.Sub(t0))
	}
	if removed, _ := c.sweep(t0.Add(2 * time.Second)); !removed || len(c.get("x._ota._tcp.local.", dns.TypeSRV)) != 0 {
		t.Fatalf("the record outlived its TTL")
	}
}
