package mdnsd

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/miekg/dns"
)

// Service is one DNS-SD service instance of a host.
type Service struct {
	// Instance is the user-visible instance name, for example
	// "OTS Firmware Main (ots-sim-01)". Any UTF-8 but control characters, at
	// most 63 bytes; dots and spaces are escaped on the wire as needed.
	Instance string
	// Type is the service type without the domain, for example "_ota._tcp".
	Type string
	// Port is the TCP or UDP port the service listens on.
	Port uint16
	// TXT holds "key=value" (or bare "key") items. Empty means a TXT record
	// holding one empty string, as RFC 6763 §6.1 requires.
	TXT []string
}

// Host is one simulated device: a ".local" host name, its addresses and
// services.
type Host struct {
	// Name is the host label without ".local", for example "ots-sim-01".
	Name string
	// Addrs are the addresses announced as A (IPv4) and AAAA (IPv6) records.
	Addrs []netip.Addr
	// Services are advertised with PTR, SRV and TXT records.
	Services []Service
}

const (
	classCacheFlush = 0x8000 // RFC 6762 §10.2, top bit of the rrclass
	classUnicast    = 0x8000 // RFC 6762 §5.4, top bit of the qclass (QU)
)

// hostEntry holds one host's records, built once by add and shared read-only
// by every response.
type hostEntry struct {
	label string // as given, e.g. "ots-sim-01"
	key   string
	src   netip.Addr // first IPv4 address: this device's replies come from it
	addrs []dns.RR   // A and AAAA, cache-flush
	rev   []dns.RR   // reverse-mapping PTRs, cache-flush
	revK  []string
	svcs  []*svcEntry
	enum  []dns.RR // _services._dns-sd._udp -> each of its types: every device answers for itself
	// probing: registered but not answering yet (the responder's probe
	// phase); guarded by the zone's lock.
	probing bool
	// spec is the Host it was built from, for a rename after a conflict;
	// given is the name the caller registered it under.
	spec  Host
	given string
}

type svcEntry struct {
	spec    int // index in host.spec.Services
	host    *hostEntry
	key     string // instance FQDN key
	typeKey string
	ptr     dns.RR   // type -> instance, shared
	srv     dns.RR   // cache-flush
	txt     dns.RR   // cache-flush
	extra   []dns.RR // SRV, TXT and addresses: the additionals of a PTR answer
}

type typeEntry struct {
	svcs []*svcEntry
}

// ttls are the record TTLs in seconds, per kind of record.
type ttls struct {
	ptr, txt, srv, addr, rev uint32
}

// espIDFTTLs are ESP-IDF's mdns TTLs (mdns_private.h MDNS_ANSWER_*_TTL):
// PTR and TXT 4500 s, SRV, A and AAAA 120 s; reverse-mapping PTRs 10 s
// (mdns_send.c, CONFIG_MDNS_RESPOND_REVERSE_QUERIES).
var espIDFTTLs = ttls{ptr: 4500, txt: 4500, srv: 120, addr: 120, rev: 10}

// uniformTTLs gives every record the same TTL (the override).
func uniformTTLs(s uint32) ttls { return ttls{ptr: s, txt: s, srv: s, addr: s, rev: s} }

// zone is the responder's record store and its answer logic; it does no I/O,
// so tests and the fuzzer drive it directly.
type zone struct {
	ttl        ttls
	servicesK  string
	mu         sync.RWMutex
	hosts      map[string]*hostEntry
	insts      map[string]*svcEntry
	types      map[string]*typeEntry
	rev        map[string][]*hostEntry
	hostsOrder []*hostEntry
}

func newZone(t ttls) *zone {
	k, _ := nameKey(servicesName)
	return &zone{
		ttl:       t,
		servicesK: k,
		hosts:     make(map[string]*hostEntry),
		insts:     make(map[string]*svcEntry),
		types:     make(map[string]*typeEntry),
		rev:       make(map[string][]*hostEntry),
	}
}

// add validates h, builds its records and registers it. It fails on a host
// name or an instance (of the same type) that is already registered.
func (z *zone) add(h Host) (*hostEntry, error) {
	label, err := hostLabel(h.Name)
	if err != nil {
		return nil, err
	}
	fqdn := label + "." + localSuffix
	hkey, ok := nameKey(fqdn)
	if !ok {
		return nil, fmt.Errorf("host name %q does not form a valid DNS name", label)
	}
	if len(h.Addrs) == 0 {
		return nil, fmt.Errorf("host %s: no addresses", label)
	}
	if len(h.Addrs) > maxAddrs {
		return nil, fmt.Errorf("host %s: %d addresses, at most %d", label, len(h.Addrs), maxAddrs)
	}
	e := &hostEntry{label: label, key: hkey, spec: h, given: label}
	e.spec.Services = slices.Clone(h.Services)
	for _, a := range h.Addrs {
		if !a.IsValid() {
			return nil, fmt.Errorf("host %s: invalid address", label)
		}
		a = a.Unmap()
		hdr := dns.RR_Header{Name: fqdn, Class: dns.ClassINET | classCacheFlush, Ttl: z.ttl.addr}
		if a.Is4() {
			if !e.src.IsValid() {
				e.src = a
			}
			hdr.Rrtype = dns.TypeA
			e.addrs = append(e.addrs, &dns.A{Hdr: hdr, A: net.IP(a.AsSlice())})
		} else {
			hdr.Rrtype = dns.TypeAAAA
			e.addrs = append(e.addrs, &dns.AAAA{Hdr: hdr, AAAA: net.IP(a.AsSlice())})
		}
		// Zoned IPv6 addresses have no reverse name; they are still announced.
		if rname, err := dns.ReverseAddr(a.WithZone("").String()); err == nil {
			if rk, ok := nameKey(rname); ok {
				e.rev = append(e.rev, &dns.PTR{
					Hdr: dns.RR_Header{Name: rname, Rrtype: dns.TypePTR, Class: dns.ClassINET | classCacheFlush, Ttl: z.ttl.rev},
					Ptr: fqdn,
				})
				e.revK = append(e.revK, rk)
			}
		}
	}
	seen := make(map[string]bool)
	for i, s := range h.Services {
		typeFQDN, err := serviceType(s.Type)
		if err != nil {
			return nil, fmt.Errorf("host %s service %d: %w", label, i, err)
		}
		if err := checkInstance(s.Instance); err != nil {
			return nil, fmt.Errorf("host %s service %d: %w", label, i, err)
		}
		if s.Port == 0 {
			return nil, fmt.Errorf("host %s service %q: port 0", label, s.Instance)
		}
		txt, err := txtStrings(s.TXT)
		if err != nil {
			return nil, fmt.Errorf("host %s service %q: %w", label, s.Instance, err)
		}
		inst := escapeLabel(s.Instance) + "." + typeFQDN
		ikey, ok1 := nameKey(inst)
		tkey, ok2 := nameKey(typeFQDN)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("host %s service %q: name too long", label, s.Instance)
		}
		if seen[ikey] {
			return nil, fmt.Errorf("host %s: instance %q of %s listed twice", label, s.Instance, s.Type)
		}
		seen[ikey] = true
		se := &svcEntry{
			spec:    i,
			host:    e,
			key:     ikey,
			typeKey: tkey,
			ptr: &dns.PTR{
				Hdr: dns.RR_Header{Name: typeFQDN, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: z.ttl.ptr},
				Ptr: inst,
			},
			srv: &dns.SRV{
				Hdr:    dns.RR_Header{Name: inst, Rrtype: dns.TypeSRV, Class: dns.ClassINET | classCacheFlush, Ttl: z.ttl.srv},
				Port:   s.Port,
				Target: fqdn,
			},
			txt: &dns.TXT{
				Hdr: dns.RR_Header{Name: inst, Rrtype: dns.TypeTXT, Class: dns.ClassINET | classCacheFlush, Ttl: z.ttl.txt},
				Txt: txt,
			},
		}
		// RFC 6763 §12.1: SRV, TXT and the addresses go along with a PTR answer.
		se.extra = append([]dns.RR{se.srv, se.txt}, e.addrs...)
		e.svcs = append(e.svcs, se)
		if !slices.ContainsFunc(e.enum, func(rr dns.RR) bool { return rr.(*dns.PTR).Ptr == typeFQDN }) {
			e.enum = append(e.enum, &dns.PTR{
				Hdr: dns.RR_Header{Name: servicesName, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: z.ttl.ptr},
				Ptr: typeFQDN,
			})
		}
	}

	z.mu.Lock()
	defer z.mu.Unlock()
	if old, dup := z.hosts[hkey]; dup {
		return nil, fmt.Errorf("host %s: already registered as %s", label, old.label)
	}
	for _, s := range e.svcs {
		if old, dup := z.insts[s.key]; dup {
			return nil, fmt.Errorf("host %s: instance %s already registered by host %s", label, s.ptr.(*dns.PTR).Ptr, old.host.label)
		}
	}
	z.hosts[hkey] = e
	z.hostsOrder = append(z.hostsOrder, e)
	for _, rk := range e.revK {
		z.rev[rk] = append(z.rev[rk], e)
	}
	for _, s := range e.svcs {
		z.insts[s.key] = s
		t := z.types[s.typeKey]
		if t == nil {
			t = &typeEntry{}
			z.types[s.typeKey] = t
		}
		t.svcs = append(t.svcs, s)
	}
	return e, nil
}

// remove unregisters a host by name and returns it with the service-type
// enumeration records that no instance backs any more (for goodbyes).
func (z *zone) remove(name string) (*hostEntry, []dns.RR) {
	key, ok := nameKey(trimLocal(name) + "." + localSuffix)
	if !ok {
		return nil, nil
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	e := z.hosts[key]
	if e == nil {
		return nil, nil
	}
	delete(z.hosts, key)
	z.hostsOrder = slices.DeleteFunc(z.hostsOrder, func(x *hostEntry) bool { return x == e })
	for _, rk := range e.revK {
		l := slices.DeleteFunc(z.rev[rk], func(x *hostEntry) bool { return x == e })
		if len(l) == 0 {
			delete(z.rev, rk)
		} else {
			z.rev[rk] = l
		}
	}
	var gone []dns.RR
	for _, s := range e.svcs {
		delete(z.insts, s.key)
		t := z.types[s.typeKey]
		if t == nil {
			continue
		}
		t.svcs = slices.DeleteFunc(t.svcs, func(x *svcEntry) bool { return x == s })
		if len(t.svcs) == 0 {
			delete(z.types, s.typeKey)
			typeFQDN := s.ptr.Header().Name
			for _, rr := range e.enum {
				if rr.(*dns.PTR).Ptr == typeFQDN && !slices.Contains(gone, rr) {
					gone = append(gone, rr)
				}
			}
		}
	}
	return e, gone
}

// setProbing marks a host as probing (not answering) or not.
func (z *zone) setProbing(e *hostEntry, on bool) {
	z.mu.Lock()
	e.probing = on
	z.mu.Unlock()
}

// isProbing reports whether e is still probing.
func (z *zone) isProbing(e *hostEntry) bool {
	z.mu.RLock()
	defer z.mu.RUnlock()
	return e.probing
}

// current is the label a host registered as name goes by now; renamed
// says it differs (a conflict renamed it). name itself when none is known.
func (z *zone) current(name string) (label string, renamed bool) {
	key, ok := nameKey(trimLocal(name) + "." + localSuffix)
	if !ok {
		return name, false
	}
	z.mu.RLock()
	defer z.mu.RUnlock()
	for _, e := range z.hostsOrder {
		if k, ok := nameKey(e.given + "." + localSuffix); ok && k == key {
			return e.label, e.key != key
		}
	}
	return name, false
}

// probe is a probe query for e (RFC 6762 §8.1, as ESP-IDF builds it): an
// ANY question for each instance name and for the host name, the proposed
// SRV and address records in the authority section; qu asks for unicast
// replies (the first probe does).
func (z *zone) probe(e *hostEntry, qu bool) *dns.Msg {
	m := new(dns.Msg)
	m.Compress = true
	cls := uint16(dns.ClassINET)
	if qu {
		cls |= classUnicast
	}
	for _, s := range e.svcs {
		m.Question = append(m.Question, dns.Question{Name: s.srv.Header().Name, Qtype: dns.TypeANY, Qclass: cls})
		m.Ns = append(m.Ns, s.srv)
	}
	m.Question = append(m.Question, dns.Question{Name: e.label + "." + localSuffix, Qtype: dns.TypeANY, Qclass: cls})
	m.Ns = append(m.Ns, e.addrs...)
	return m
}

// lookup returns the registered entry for a host name, or nil.
func (z *zone) lookup(name string) *hostEntry {
	key, ok := nameKey(trimLocal(name) + "." + localSuffix)
	if !ok {
		return nil
	}
	z.mu.RLock()
	defer z.mu.RUnlock()
	return z.hosts[key]
}

// isSource reports whether a is the address some host answers from.
func (z *zone) isSource(a netip.Addr) bool {
	z.mu.RLock()
	defer z.mu.RUnlock()
	for _, h := range z.hostsOrder {
		if h.src == a {
			return true
		}
	}
	return false
}

// all returns every registered host.
func (z *zone) all() []*hostEntry {
	z.mu.RLock()
	defer z.mu.RUnlock()
	return slices.Clone(z.hostsOrder)
}

// records returns every record of a host, for announcements and goodbyes.
// enum adds the service-type enumeration PTRs of its types.
func (z *zone) records(e *hostEntry, enum bool) []group {
	var gs []group
	for _, s := range e.svcs {
		gs = append(gs, group{ans: s.ptr, host: e}, group{ans: s.srv, host: e}, group{ans: s.txt, host: e})
	}
	for _, rr := range e.addrs {
		gs = append(gs, group{ans: rr, host: e})
	}
	for _, rr := range e.rev {
		gs = append(gs, group{ans: rr, host: e})
	}
	if enum {
		for _, rr := range e.enum {
			gs = append(gs, group{ans: rr, host: e})
		}
	}
	return gs
}

// group is one answer and the additional records that go with it
// (RFC 6763 §12); a group is never split across packets. host is the device
// the answer belongs to.
type group struct {
	ans   dns.RR
	extra []dns.RR
	host  *hostEntry
}

// answers collects the groups answering q's questions, without duplicates,
// and drops what q's known-answer section already holds (RFC 6762 §7.1).
func (z *zone) answers(q *dns.Msg) []group {
	known := knownAnswers(q)
	var gs []group
	seen := make(map[dns.RR]bool)
	addAns := func(h *hostEntry, rr dns.RR, extra []dns.RR) {
		if seen[rr] || known.has(rr) {
			return
		}
		seen[rr] = true
		gs = append(gs, group{ans: rr, extra: extra, host: h})
	}
	type qk struct {
		key   string
		qtype uint16
	}
	asked := make(map[qk]bool)

	z.mu.RLock()
	defer z.mu.RUnlock()
	for _, question := range q.Question {
		cls := question.Qclass &^ classUnicast
		if cls != dns.ClassINET && cls != dns.ClassANY {
			continue
		}
		key, ok := nameKey(question.Name)
		if !ok || asked[qk{key, question.Qtype}] {
			continue
		}
		asked[qk{key, question.Qtype}] = true
		qt := question.Qtype
		is := func(t uint16) bool { return qt == t || qt == dns.TypeANY }

		if key == z.servicesK && is(dns.TypePTR) {
			for _, h := range z.hostsOrder {
				if h.probing {
					continue
				}
				for _, rr := range h.enum {
					addAns(h, rr, nil)
				}
			}
			continue
		}
		if t := z.types[key]; t != nil {
			if is(dns.TypePTR) {
				for _, s := range t.svcs {
					if !s.host.probing {
						addAns(s.host, s.ptr, s.extra)
					}
				}
			}
			continue
		}
		if s := z.insts[key]; s != nil {
			if s.host.probing {
				continue
			}
			if is(dns.TypeSRV) {
				addAns(s.host, s.srv, s.host.addrs) // RFC 6763 §12.2
			}
			if is(dns.TypeTXT) {
				addAns(s.host, s.txt, nil)
			}
			continue
		}
		if h := z.hosts[key]; h != nil {
			if h.probing {
				continue
			}
			for _, rr := range h.addrs {
				if is(rr.Header().Rrtype) {
					addAns(h, rr, nil)
				}
			}
			continue
		}
		if hs := z.rev[key]; len(hs) > 0 && is(dns.TypePTR) {
			for _, h := range hs {
				if h.probing {
					continue
				}
				for i, rk := range h.revK {
					if rk == key {
						addAns(h, h.rev[i], nil)
					}
				}
			}
		}
	}
	return gs
}

// reply is one response message and the address it should come from: the
// device's own address, as if that device had answered (invalid: any).
type reply struct {
	msg  *dns.Msg
	from netip.Addr
}

// respond builds the responses to query q. Like a network of real devices,
// each device answers in its own packets: answers are grouped by host, and a
// host's answers are split over as many packets as needed. legacy selects
// the conventional unicast DNS form (RFC 6762 §6.7): per device one message
// with the query's ID and question, no cache-flush bits (TTLs as they are:
// ESP-IDF does not cap them as RFC 6762 §6.7 suggests),
// trimmed to 512 bytes or the query's EDNS0 size. It returns nil when there
// is nothing to answer.
func (z *zone) respond(q *dns.Msg, legacy bool) []reply {
	gs := z.answers(q)
	if len(gs) == 0 {
		return nil
	}
	var out []reply
	for _, part := range byHost(gs) {
		var from netip.Addr
		if h := part[0].host; h != nil {
			from = h.src
		}
		if legacy {
			out = append(out, reply{msg: z.legacyReply(q, part), from: from})
			continue
		}
		for _, m := range split(part, maxPayload, nil) {
			out = append(out, reply{msg: m, from: from})
		}
	}
	return out
}

// byHost partitions groups by host, keeping first-appearance order.
func byHost(gs []group) [][]group {
	idx := make(map[*hostEntry]int)
	var parts [][]group
	for _, g := range gs {
		i, ok := idx[g.host]
		if !ok {
			i = len(parts)
			idx[g.host] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], g)
	}
	return parts
}

func (z *zone) legacyReply(q *dns.Msg, gs []group) *dns.Msg {
	m := newResponse()
	m.Id = q.Id
	m.Question = slices.Clone(q.Question)
	xf := legacyForm()
	inAns := make(map[dns.RR]bool)
	for _, g := range gs {
		inAns[g.ans] = true
		m.Answer = append(m.Answer, xf(g.ans))
	}
	inExtra := make(map[dns.RR]bool)
	for _, g := range gs {
		for _, rr := range g.extra {
			if !inAns[rr] && !inExtra[rr] {
				inExtra[rr] = true
				m.Extra = append(m.Extra, xf(rr))
			}
		}
	}
	size := dns.MinMsgSize
	if opt := q.IsEdns0(); opt != nil {
		size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxPayload)
		m.SetEdns0(uint16(size), false)
	}
	nAns := len(m.Answer)
	m.Truncate(size)
	// RFC 2181 §9: TC only when answers were cut, not for dropped
	// additionals; a resolver would otherwise retry over TCP, which mDNS
	// does not offer.
	m.Truncated = len(m.Answer) < nAns
	return m
}

// legacyForm returns a copier that clears the cache-flush bit
// (mdns_send.c sends the flush bit only to port 5353).
func legacyForm() func(dns.RR) dns.RR {
	return func(rr dns.RR) dns.RR {
		c := dns.Copy(rr)
		h := c.Header()
		h.Class &^= classCacheFlush
		return c
	}
}

// goodbyeForm returns a copy with TTL 0 (RFC 6762 §10.1).
func goodbyeForm(rr dns.RR) dns.RR {
	c := dns.Copy(rr)
	c.Header().Ttl = 0
	return c
}

func newResponse() *dns.Msg {
	m := new(dns.Msg)
	m.Response = true
	m.Authoritative = true
	m.Compress = true
	return m
}

// knownSet indexes a query's known answers by owner name.
type knownSet map[string][]dns.RR

// knownAnswers indexes a query's known answers; has counts only those
// whose TTL is at least half the true TTL (RFC 6762 §7.1).
func knownAnswers(q *dns.Msg) knownSet {
	if len(q.Answer) == 0 {
		return nil
	}
	ks := make(knownSet)
	for _, rr := range q.Answer {
		if rr == nil {
			continue
		}
		if k, ok := nameKey(rr.Header().Name); ok {
			ks[k] = append(ks[k], rr)
		}
	}
	return ks
}

func (ks knownSet) has(rr dns.RR) bool {
	if len(ks) == 0 {
		return false
	}
	k, ok := nameKey(rr.Header().Name)
	if !ok {
		return false
	}
	for _, kr := range ks[k] {
		if kr.Header().Ttl >= rr.Header().Ttl/2 && sameData(rr, kr) {
			return true
		}
	}
	return false
}

// sameData reports whether a and b have the same type and RDATA (names
// compared case-insensitively); TTL and class bits are ignored.
func sameData(a, b dns.RR) bool {
	if a.Header().Rrtype != b.Header().Rrtype {
		return false
	}
	eqName := func(x, y string) bool {
		kx, ok1 := nameKey(x)
		ky, ok2 := nameKey(y)
		return ok1 && ok2 && kx == ky
	}
	switch x := a.(type) {
	case *dns.PTR:
		y, ok := b.(*dns.PTR)
		return ok && eqName(x.Ptr, y.Ptr)
	case *dns.SRV:
		y, ok := b.(*dns.SRV)
		return ok && x.Port == y.Port && x.Priority == y.Priority && x.Weight == y.Weight && eqName(x.Target, y.Target)
	case *dns.TXT:
		y, ok := b.(*dns.TXT)
		return ok && slices.Equal(x.Txt, y.Txt)
	case *dns.A:
		y, ok := b.(*dns.A)
		return ok && x.A.Equal(y.A)
	case *dns.AAAA:
		y, ok := b.(*dns.AAAA)
		return ok && x.AAAA.Equal(y.AAAA)
	}
	return false
}
