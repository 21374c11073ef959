package mdnsd

import (
	"bytes"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Name conflicts are resolved the way ESP-IDF's mdns component does it
// (mdns_receive.c, mdns_parse_packet; written down in docs/device-behaviour.md):
// a record for one of a host's unique names that arrives in a probe's
// authority section or in an authoritative answer, with other data than the
// host's own, is compared with it. An address record compares by its
// address bytes, an SRV by its RDATA length and then its bytes; the greater
// wins. A host still probing that loses renames itself (mangle) and probes
// again; an announced host that loses probes again under the same name, so
// the next loss renames it. Identical records are no conflict, which is also
// why a responder's own packets looping back never count.

// Collision outcomes, as ESP-IDF counts them.
const (
	colWon  = -1
	colNone = 0
	colLost = 1
)

// resolveConflicts looks at one received packet for claims on the names of
// this responder's hosts. r.mu must not be held.
func (r *Responder) resolveConflicts(pkt []byte) {
	var m dns.Msg
	if err := m.Unpack(pkt); err != nil {
		return
	}
	probe := !m.Response && len(m.Question) > 0 && len(m.Ns) > 0
	if !probe && !(m.Response && m.Authoritative) {
		return
	}
	rrs := slices.Concat(m.Answer, m.Ns, m.Extra)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	for e, l := range r.z.collisions(rrs) {
		if !r.z.isProbing(e) {
			r.log.Debug("mdnsd: announced name claimed by another host, probing again", "host", e.label)
			r.reprobe(e)
			continue
		}
		r.rename(e, l.host, l.svcs)
	}
}

// loss is what a host lost in a conflict: its host name, and the instance
// names of some services (indexes into spec.Services).
type loss struct {
	host bool
	svcs []int
}

// collisions finds, for each record, the host that owns its name (a direct
// lookup, so a fleet of hundreds costs no more per packet than one) and
// tells what each host lost.
func (z *zone) collisions(rrs []dns.RR) map[*hostEntry]*loss {
	out := make(map[*hostEntry]*loss)
	get := func(e *hostEntry) *loss {
		if out[e] == nil {
			out[e] = &loss{}
		}
		return out[e]
	}
	z.mu.RLock()
	defer z.mu.RUnlock()
	for _, rr := range rrs {
		if rr == nil {
			continue
		}
		key, ok := nameKey(rr.Header().Name)
		if !ok {
			continue
		}
		switch x := rr.(type) {
		case *dns.A, *dns.AAAA:
			if e := z.hosts[key]; e != nil && addrCollision(e, rr) == colLost {
				get(e).host = true
			}
		case *dns.SRV:
			if s := z.insts[key]; s != nil && srvCollision(s.srv.(*dns.SRV), x) == colLost {
				if l := get(s.host); !slices.Contains(l.svcs, s.spec) {
					l.svcs = append(l.svcs, s.spec)
				}
			}
		}
	}
	return out
}

// reprobe stops e's schedule and starts probing again. r.mu is held.
func (r *Responder) reprobe(e *hostEntry) {
	if t := r.timers[e]; t != nil {
		t.Stop()
	}
	r.z.setProbing(e, true)
	r.schedule(e, probeDelay+time.Duration(rand.IntN(probeJitterMax))*time.Millisecond, 0)
}

// rename replaces e, which lost a conflict while probing, by a host with
// mangled names, and probes for those. r.mu is held.
func (r *Responder) rename(e *hostEntry, hostLost bool, svcLost []int) {
	if t := r.timers[e]; t != nil {
		t.Stop()
		delete(r.timers, e)
	}
	spec := e.spec
	spec.Services = slices.Clone(spec.Services)
	var ne *hostEntry
	var err error
	// A mangled name may be one this responder already holds: mangle again.
	for range 16 {
		if hostLost {
			spec.Name = mangle(trimLocal(spec.Name))
		}
		for _, i := range svcLost {
			spec.Services[i].Instance = mangle(spec.Services[i].Instance)
		}
		r.z.remove(e.label)
		if ne, err = r.z.add(spec); err == nil {
			break
		}
		// Put the old one back until a free name is found (or not).
		if back, err2 := r.z.add(e.spec); err2 == nil {
			back.given = e.given
			e = back
		}
	}
	if err != nil {
		r.log.Warn("mdnsd: name conflict, no free name", "host", e.label, "err", err)
		r.z.setProbing(e, true)
		r.reprobe(e)
		return
	}
	ne.given = e.given
	// Warn: the user's device list no longer matches what the link sees.
	attrs := []any{"was", e.label, "host", ne.label}
	for _, i := range svcLost {
		attrs = append(attrs, "instance", spec.Services[i].Instance)
	}
	r.log.Warn("mdns name taken by another host on the link: renamed, as ESP-IDF does", attrs...)
	r.z.setProbing(ne, true)
	r.schedule(ne, probeDelay+time.Duration(rand.IntN(probeJitterMax))*time.Millisecond, 0)
}

// mangle is ESP-IDF's _mdns_mangle_name: a name ending in "-N" becomes
// "-(N+1)" ("ots-sim-01" → "ots-sim-2"), any other gets "-2" appended.
func mangle(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name + "-2"
	}
	digits := name[i+1:]
	if strings.Trim(digits, "0123456789") != "" {
		return name + "-2"
	}
	n, _ := strconv.Atoi(digits) // "" is 0, as strtol gives
	return name[:i] + "-" + strconv.Itoa(n+1)
}

// classCollision: ESP-IDF lets a class above IN win and one of 0 lose.
func classCollision(rr dns.RR) (int, bool) {
	switch c := rr.Header().Class &^ classCacheFlush; {
	case c > dns.ClassINET:
		return colLost, true
	case c == 0:
		return colWon, true
	}
	return colNone, false
}

func addrCollision(e *hostEntry, rr dns.RR) int {
	if c, ok := classCollision(rr); ok {
		return c
	}
	var theirs net.IP
	switch x := rr.(type) {
	case *dns.A:
		theirs = x.A.To4()
	case *dns.AAAA:
		theirs = x.AAAA.To16()
	}
	if theirs == nil || theirs.IsUnspecified() {
		return colLost // a denial: they win
	}
	var ours net.IP
	for _, a := range e.addrs {
		if sameData(a, rr) {
			return colNone // one of ours
		}
		if a.Header().Rrtype == rr.Header().Rrtype && ours == nil {
			switch y := a.(type) {
			case *dns.A:
				ours = y.A.To4()
			case *dns.AAAA:
				ours = y.AAAA.To16()
			}
		}
	}
	if ours == nil {
		return colLost // no address of that family here: they win
	}
	return compareWin(bytes.Compare(ours, theirs))
}

func srvCollision(ours, theirs *dns.SRV) int {
	if c, ok := classCollision(theirs); ok {
		return c
	}
	o, t := srvData(ours), srvData(theirs)
	if o == nil || t == nil {
		return colNone
	}
	if len(o) != len(t) {
		if len(t) > len(o) {
			return colLost
		}
		return colWon
	}
	return compareWin(bytes.Compare(o, t))
}

// srvData is an SRV's RDATA, its target uncompressed.
func srvData(s *dns.SRV) []byte {
	var buf [300]byte
	n, err := dns.PackDomainName(dns.Fqdn(s.Target), buf[6:], 0, nil, false)
	if err != nil {
		return nil
	}
	buf[0], buf[1] = byte(s.Priority>>8), byte(s.Priority)
	buf[2], buf[3] = byte(s.Weight>>8), byte(s.Weight)
	buf[4], buf[5] = byte(s.Port>>8), byte(s.Port)
	return buf[:6+n]
}

func compareWin(c int) int {
	switch {
	case c > 0:
		return colWon
	case c < 0:
		return colLost
	}
	return colNone
}
