package discover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/ots-ota/ots-ota/internal/ifaceguard"
)

// Resolver turns host names into addresses: ".local" names by its own mDNS
// query first (the OS cannot on Windows without Bonjour, nor on Android),
// then by the OS resolver. Answers are kept for a short while. It is safe
// for concurrent use.
type Resolver struct {
	// Config says which interfaces to ask on (Services is ignored).
	Config Config
	// Timeout bounds the mDNS query; 0 = 1.5 s.
	Timeout time.Duration
	// CacheFor bounds how long an answer is reused; 0 = 10 s.
	CacheFor time.Duration
	// LookupOS is the fallback; nil = net.DefaultResolver.
	LookupOS func(ctx context.Context, host string) ([]netip.Addr, error)
	// NoOS skips the OS resolver for ".local" names.
	NoOS bool
	// NoMDNS skips the mDNS query (--inventory-only).
	NoMDNS bool

	mu    sync.Mutex
	cache map[string]cached
}

// osTimeout bounds one lookup by the system's resolver.
const osTimeout = 5 * time.Second

type cached struct {
	addrs []netip.Addr
	until time.Time
}

// ResolveError says a name did not resolve, and what to try.
type ResolveError struct {
	Host   string
	Reason string
}

func (e *ResolveError) Error() string { return e.Plain() + "; " + e.Hint() }

// Plain is the error without what to try, for output that carries the
// hint apart (--json).
func (e *ResolveError) Plain() string { return fmt.Sprintf("cannot resolve %s: %s", e.Host, e.Reason) }

// Hint is what to try when a name does not resolve.
func (e *ResolveError) Hint() string {
	return "try --interface, the device's IP address, or an inventory entry"
}

// Remember stores addresses learnt elsewhere (a browse) for host.
func (r *Resolver) Remember(host string, addrs []netip.Addr) {
	if len(addrs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = make(map[string]cached)
	}
	r.cache[lower(host)] = cached{slices.Clone(addrs), time.Now().Add(r.cacheFor())}
}

func (r *Resolver) cacheFor() time.Duration {
	if r.CacheFor > 0 {
		return r.CacheFor
	}
	return 10 * time.Second
}

// IsLocal reports whether host is an mDNS name.
func IsLocal(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return strings.HasSuffix(h, ".local") && len(h) > len(".local")
}

// Lookup resolves host (an IP literal is returned as is).
func (r *Resolver) Lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	key := lower(host)
	r.mu.Lock()
	if c, ok := r.cache[key]; ok && time.Now().Before(c.until) {
		r.mu.Unlock()
		return slices.Clone(c.addrs), nil
	}
	r.mu.Unlock()

	var reasons []string
	if IsLocal(host) && !r.NoMDNS {
		addrs, err := r.lookupMDNS(ctx, host)
		if err == nil && len(addrs) > 0 {
			r.Remember(host, addrs)
			return addrs, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			reasons = append(reasons, err.Error())
		} else {
			reasons = append(reasons, fmt.Sprintf("no mDNS answer within %v", r.timeout()))
		}
		if r.NoOS {
			return nil, &ResolveError{host, strings.Join(reasons, ", and ")}
		}
	}
	look := r.LookupOS
	if look == nil {
		// The system's resolver may send mDNS on every interface (nss-mdns,
		// Bonjour), which the test guard forbids.
		if _, guarded := ifaceguard.Allowed(); guarded && IsLocal(host) {
			reasons = append(reasons, "the system resolver is not asked for .local names while "+ifaceguard.Env+" is set")
			return nil, &ResolveError{host, strings.Join(reasons, ", and ")}
		}
		look = func(ctx context.Context, h string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", h)
		}
	}
	// The system's resolver may try mDNS or LLMNR itself, for seconds.
	octx, cancel := context.WithTimeout(ctx, osTimeout)
	addrs, err := look(octx, host)
	cancel()
	if err == nil && len(addrs) > 0 {
		for i, a := range addrs {
			addrs[i] = a.Unmap()
		}
		r.Remember(host, addrs)
		return addrs, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	reasons = append(reasons, osReason(err))
	return nil, &ResolveError{host, strings.Join(reasons, ", and ")}
}

// osReason words a system resolver's failure in a few words: Go's errors
// carry the dial chain ("dial udp 10.0.0.53:53: connect: network is
// unreachable"), of which a user can act on the last part only.
func osReason(err error) string {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return "the system resolver returned no address"
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return "the system resolver has no such name"
	case errors.As(err, &dnsErr) && dnsErr.IsTimeout:
		return "the system resolver timed out"
	case errors.As(err, &dnsErr) && (strings.Contains(dnsErr.Err, "dial ") || strings.Contains(dnsErr.Err, "connect: ")):
		return "the system resolver could not reach a DNS server (" + lastPart(dnsErr.Err) + ")"
	case errors.As(err, &dnsErr):
		return "system resolver: " + lastPart(dnsErr.Err)
	}
	return "system resolver: " + lastPart(err.Error())
}

// lastPart is the innermost message of a "a: b: c" chain.
func lastPart(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

func (r *Resolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 1500 * time.Millisecond
}

// lookupMDNS asks for host's A and AAAA records (RFC 6762 §5.1 one-shot,
// repeated at 0, 250 ms and 1 s) and returns the first answer's addresses,
// waiting 50 ms more for the other family.
func (r *Resolver) lookupMDNS(ctx context.Context, host string) ([]netip.Addr, error) {
	cfg := r.Config
	cfg.Services = []string{"_ota._tcp"} // unused; open wants one
	s, err := open(cfg)
	if err != nil {
		return nil, err
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	name := dns.Fqdn(host)
	qs := []dns.Question{{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	if !cfg.IPv4Only {
		qs = append(qs, dns.Question{Name: name, Qtype: dns.TypeAAAA, Qclass: dns.ClassINET})
	}
	resend := []time.Duration{250 * time.Millisecond, 750 * time.Millisecond}
	s.sendQuestions(qs, nil)
	tick := time.NewTimer(resend[0])
	defer tick.Stop()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return s.addrsOf(name), nil
		case <-settle:
			return s.addrsOf(name), nil
		case <-tick.C:
			s.sendQuestions(qs, nil)
			if resend = resend[1:]; len(resend) > 0 {
				tick.Reset(resend[0])
			}
		case p := <-s.pkts:
			s.absorb(p)
			if settle == nil && len(s.addrsOf(name)) > 0 {
				settle = time.After(50 * time.Millisecond)
			}
		}
	}
}

func (s *session) addrsOf(name string) []netip.Addr {
	var out []netip.Addr
	for _, e := range s.addrEntries(name) {
		if a := s.entryAddr(e); a.IsValid() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, compareAddr)
	return out
}

// compareAddr sorts IPv4 before IPv6, then by address.
func compareAddr(a, b netip.Addr) int {
	if a.Is4() != b.Is4() {
		if a.Is4() {
			return -1
		}
		return 1
	}
	return a.Compare(b)
}
