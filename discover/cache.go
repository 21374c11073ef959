package discover

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	classCacheFlush = 0x8000 // RFC 6762 §10.2, top bit of an answer's class
	// goodbyeGrace: a record with TTL 0 is deleted one second later
	// (RFC 6762 §10.1), so a quick re-announcement wins.
	goodbyeGrace = time.Second
)

// nameType indexes the cache.
type nameType struct {
	name  string // lower-case, fully qualified
	rtype uint16
}

// entry is one cached record.
type entry struct {
	rr      dns.RR
	ifIndex int
	src     netip.Addr // the packet's source address
	recv    time.Time
	ttl     time.Duration
	// stage counts the refresh queries sent for this copy (RFC 6762 §5.2:
	// at 80, 85, 90 and 95 % of the TTL), jitter spreads them by up to 2 %.
	stage  int
	jitter float64
	// goodbye: withdrawn (TTL 0) or flushed by a newer unique record; the
	// record then lives until deadline, one second (RFC 6762 §10.1, §10.2).
	goodbye  bool
	deadline time.Time
}

func (e *entry) expires() time.Time {
	if e.goodbye {
		return e.deadline
	}
	return e.recv.Add(e.ttl)
}

// refreshAt is when the next refresh query for e is due (zero: none left).
func (e *entry) refreshAt() time.Time {
	if e.goodbye || e.stage >= 4 {
		return time.Time{}
	}
	frac := 0.80 + 0.05*float64(e.stage) + e.jitter
	return e.recv.Add(time.Duration(float64(e.ttl) * frac))
}

// cache holds the records heard, with RFC 6762 expiry semantics.
type cache struct {
	m map[nameType]map[string]*entry // keyed by rdata text
	// byeNames remembers names whose records ended in a goodbye, so a
	// removal can say why.
	byeNames map[string]bool
}

func newCache() *cache {
	return &cache{m: make(map[nameType]map[string]*entry), byeNames: make(map[string]bool)}
}

func lower(name string) string { return strings.ToLower(dns.Fqdn(name)) }

func rdataKey(rr dns.RR) string {
	s := rr.String()
	h := rr.Header().String()
	return strings.ToLower(strings.TrimPrefix(s, h))
}

// add merges one received record; it reports whether the cache changed in
// a way that matters to devices (a new record, new data, or a goodbye).
func (c *cache) add(rr dns.RR, ifIndex int, src netip.Addr, now time.Time) bool {
	h := rr.Header()
	nt := nameType{lower(h.Name), h.Rrtype}
	key := rdataKey(rr)
	set := c.m[nt]
	if h.Ttl == 0 {
		e := set[key]
		if e == nil || e.goodbye {
			return false
		}
		e.goodbye, e.deadline = true, now.Add(goodbyeGrace)
		c.byeNames[byeName(rr)] = true
		return true
	}
	changed := false
	if h.Class&classCacheFlush != 0 {
		// Unique record: older copies with other data go within a second
		// (RFC 6762 §10.2), unless they arrived in the last second.
		for k, e := range set {
			if k != key && now.Sub(e.recv) > time.Second && !e.goodbye {
				e.goodbye, e.deadline = true, now.Add(goodbyeGrace)
				changed = true
			}
		}
	}
	if set == nil {
		set = make(map[string]*entry)
		c.m[nt] = set
	}
	e := set[key]
	if e == nil {
		e = &entry{}
		set[key] = e
		changed = true
	} else if e.goodbye {
		changed = true
	}
	cp := dns.Copy(rr)
	cp.Header().Class &^= classCacheFlush
	*e = entry{rr: cp, ifIndex: ifIndex, src: src.Unmap(), recv: now, ttl: time.Duration(h.Ttl) * time.Second, jitter: rand.Float64() * 0.02}
	delete(c.byeNames, byeName(rr))
	return changed
}

// byeName is the name a goodbye speaks for: a PTR withdraws its target
// (the instance), other records their owner.
func byeName(rr dns.RR) string {
	if p, ok := rr.(*dns.PTR); ok {
		return lower(p.Ptr)
	}
	return lower(rr.Header().Name)
}

// get returns the records of a name and type, including those in their
// last second after a goodbye.
func (c *cache) get(name string, rtype uint16) []*entry {
	set := c.m[nameType{lower(name), rtype}]
	out := make([]*entry, 0, len(set))
	for _, e := range set {
		out = append(out, e)
	}
	return out
}

// latest is the most recently received record, preferring those not said
// goodbye to (a flushed TXT gives way to its successor at once); nil when none.
func (c *cache) latest(name string, rtype uint16) *entry {
	var best *entry
	for _, e := range c.m[nameType{lower(name), rtype}] {
		switch {
		case best == nil, best.goodbye && !e.goodbye:
			best = e
		case e.goodbye && !best.goodbye:
		case e.recv.After(best.recv):
			best = e
		}
	}
	return best
}

// sweep deletes expired records. It reports whether any went and the
// earliest time anything is due (an expiry or a refresh).
func (c *cache) sweep(now time.Time) (removed bool, next time.Time) {
	for nt, set := range c.m {
		for k, e := range set {
			if !now.Before(e.expires()) {
				delete(set, k)
				removed = true
				continue
			}
			next = earliest(next, e.expires())
			next = earliest(next, e.refreshAt())
		}
		if len(set) == 0 {
			delete(c.m, nt)
		}
	}
	return removed, next
}

// refreshes returns the questions due now for the records want selects,
// advancing their refresh stage.
func (c *cache) refreshes(now time.Time, want func(nameType) bool) []dns.Question {
	var qs []dns.Question
	asked := make(map[nameType]bool)
	for nt, set := range c.m {
		if !want(nt) {
			continue
		}
		for _, e := range set {
			at := e.refreshAt()
			if at.IsZero() || now.Before(at) {
				continue
			}
			for e.stage < 4 && !now.Before(e.refreshAt()) {
				e.stage++
			}
			if !asked[nt] {
				asked[nt] = true
				qs = append(qs, dns.Question{Name: e.rr.Header().Name, Qtype: nt.rtype, Qclass: dns.ClassINET})
			}
		}
	}
	return qs
}

func earliest(a, b time.Time) time.Time {
	switch {
	case b.IsZero():
		return a
	case a.IsZero() || b.Before(a):
		return b
	}
	return a
}
