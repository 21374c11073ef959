package discover

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/ots-ota/ots-ota/devinfo"
	"github.com/ots-ota/ots-ota/internal/ifaceguard"
)

// Config says where and what to browse.
type Config struct {
	// Interfaces to use, one socket per interface and family; nil = every
	// interface that is up and multicast-capable (Interfaces).
	Interfaces []*net.Interface
	// Services to browse ("_ota._tcp"; ".local" optional); nil = DefaultServices.
	Services []string
	// IPv4Only skips the IPv6 sockets.
	IPv4Only bool
	// Logger; nil discards.
	Logger *slog.Logger
}

const (
	firstRequery = time.Second      // RFC 6762 §5.2: at least 1 s after the first query
	maxRequery   = 15 * time.Minute // then doubling up to this
	resolveGap   = 200 * time.Millisecond
	resolveTries = 5
	txtGrace     = 250 * time.Millisecond
	resolveDelay = 100 * time.Millisecond
)

// session is one browse: the sockets and the cache, driven by one goroutine.
type session struct {
	log      *slog.Logger
	conns    []*mconn
	pkts     chan packet
	done     chan struct{}
	cache    *cache
	services map[string]string // lower FQDN → "_svc._tcp"
	ifNames  map[int]string

	devices  map[string]Device // as last reported
	live     map[string]bool   // wire names (instances, hosts) of those devices
	asked    map[nameType]*ask // resolve queries sent for incomplete devices
	queryAt  time.Time
	queryGap time.Duration
}

type ask struct {
	last  time.Time
	tries int
}

func open(cfg Config) (*session, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ifs := cfg.Interfaces
	if len(ifs) == 0 {
		var err error
		if ifs, err = Interfaces(); err != nil {
			return nil, err
		}
	}
	svcs := cfg.Services
	if len(svcs) == 0 {
		svcs = DefaultServices
	}
	s := &session{
		log:      log,
		pkts:     make(chan packet, 4096),
		done:     make(chan struct{}),
		cache:    newCache(),
		services: make(map[string]string),
		ifNames:  make(map[int]string),
		devices:  make(map[string]Device),
		live:     make(map[string]bool),
		asked:    make(map[nameType]*ask),
	}
	for _, sv := range svcs {
		name, err := ServiceName(sv)
		if err != nil {
			return nil, err
		}
		s.services[lower(name+".local")] = name
	}
	// Every mDNS socket of the client (browse, watch, resolve) is opened
	// here: the test guard checked here cannot be bypassed by a caller
	// that builds Config.Interfaces itself.
	for _, ifi := range ifs {
		if err := ifaceguard.Check(ifi.Name); err != nil {
			return nil, err
		}
	}
	conns, err := openConns(ifs, cfg.IPv4Only, log)
	if err != nil {
		return nil, fmt.Errorf("open mDNS sockets: %w", err)
	}
	s.conns = conns
	raw := make(chan rawPacket, 4096)
	for _, c := range conns {
		s.ifNames[c.ifi.Index] = c.ifi.Name
		go c.read(raw, s.done)
	}
	go parse(raw, s.pkts, s.done)
	return s, nil
}

// ServiceName checks and normalises a service type: "_ota._tcp",
// "_ota._tcp.local." and "_OTA._TCP" all give "_ota._tcp".
func ServiceName(s string) (string, error) {
	t := strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "."), ".local"))
	parts := strings.Split(t, ".")
	if len(parts) != 2 || len(parts[0]) < 2 || len(parts[0]) > 16 || parts[0][0] != '_' ||
		(parts[1] != "_tcp" && parts[1] != "_udp") || strings.ContainsAny(parts[0][1:], "_ \\") {
		return "", fmt.Errorf("invalid service type %q (want e.g. _ota._tcp)", s)
	}
	return t, nil
}

func (s *session) close() {
	close(s.done)
	for _, c := range s.conns {
		c.close()
	}
}

// run drives the session until ctx ends, reporting changes to emit.
func (s *session) run(ctx context.Context, emit func(Event)) {
	s.queryGap = firstRequery
	now := time.Now()
	s.sendBrowse(now)
	s.queryAt = now.Add(s.queryGap)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := s.step(time.Now(), emit)
		timer.Reset(max(time.Until(next), time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case p := <-s.pkts:
			s.absorb(p)
			// Take what else is queued before rebuilding the device list:
			// a fleet's answers arrive together.
			for drained := 0; drained < 1024; drained++ {
				select {
				case p := <-s.pkts:
					s.absorb(p)
					continue
				default:
				}
				break
			}
		case <-timer.C:
		}
	}
}

// step sends what is due, expires records, reports changes and returns
// when it next needs to run.
func (s *session) step(now time.Time, emit func(Event)) time.Time {
	if !now.Before(s.queryAt) {
		s.sendBrowse(now)
		s.queryGap = min(s.queryGap*2, maxRequery)
		s.queryAt = now.Add(s.queryGap)
	}
	_, next := s.cache.sweep(now)
	// RFC 6762 §5.2: refresh the records that keep a device alive.
	if qs := s.cache.refreshes(now, s.interested); len(qs) > 0 {
		s.sendQuestions(qs, nil)
	}
	s.update(now, emit)
	if qs, resolveNext := s.resolveQuestions(now); len(qs) > 0 || !resolveNext.IsZero() {
		if len(qs) > 0 {
			s.sendQuestions(qs, nil)
		}
		next = earliest(next, resolveNext)
	}
	return earliest(next, s.queryAt)
}

// interested selects the records worth refreshing: PTRs of browsed
// services, and the SRV, TXT and address records of devices reported.
func (s *session) interested(nt nameType) bool {
	switch nt.rtype {
	case dns.TypePTR:
		_, ok := s.services[nt.name]
		return ok
	case dns.TypeSRV, dns.TypeTXT, dns.TypeA, dns.TypeAAAA:
		return s.live[nt.name]
	}
	return false
}

func (s *session) absorb(p packet) {
	// RFC 6762 §6: an mDNS response comes from port 5353, also when it
	// answers a legacy query of ours sent from another port (§6.7: the reply
	// goes to that port, from 5353). Anything else is not an mDNS responder.
	if p.src.Port() != mdnsPort {
		return
	}
	for _, sec := range [][]dns.RR{p.msg.Answer, p.msg.Extra} {
		for _, rr := range sec {
			if rr == nil {
				continue
			}
			switch rr.Header().Rrtype {
			case dns.TypePTR, dns.TypeSRV, dns.TypeTXT, dns.TypeA, dns.TypeAAAA:
				if rr.Header().Class&^classCacheFlush != dns.ClassINET {
					continue
				}
				s.cache.add(rr, p.ifi.Index, p.src.Addr(), p.when)
			}
		}
	}
}

// update rebuilds the device list from the cache and reports differences.
func (s *session) update(now time.Time, emit func(Event)) {
	cur := s.assemble()
	for k, d := range cur {
		old, ok := s.devices[k]
		switch {
		case !ok:
			emit(Event{Kind: Added, Device: d, Time: now})
		case !same(old, d):
			emit(Event{Kind: Changed, Device: d, Time: now})
		}
	}
	for k, d := range s.devices {
		if _, ok := cur[k]; ok {
			continue
		}
		reason := "expired"
		if s.cache.byeNames[d.fqdn] || s.cache.byeNames[d.hostFQDN] {
			reason = "goodbye"
		}
		emit(Event{Kind: Removed, Device: d, Reason: reason, Time: now})
	}
	s.devices = cur
	clear(s.live)
	for _, d := range cur {
		s.live[d.fqdn], s.live[d.hostFQDN] = true, true
	}
}

// assemble builds every complete device (PTR → SRV → address) from the cache.
func (s *session) assemble() map[string]Device {
	web := make(map[string]int)
	for _, e := range s.cache.get(webService+".local.", dns.TypePTR) {
		if srv := s.cache.latest(e.rr.(*dns.PTR).Ptr, dns.TypeSRV); srv != nil {
			t := srv.rr.(*dns.SRV)
			web[lower(t.Target)] = int(t.Port)
		}
	}
	out := make(map[string]Device)
	for svcName, svc := range s.services {
		for _, e := range s.cache.get(svcName, dns.TypePTR) {
			inst := e.rr.(*dns.PTR).Ptr
			label, _, ok := splitInstance(inst)
			if !ok {
				continue
			}
			srvE := s.cache.latest(inst, dns.TypeSRV)
			if srvE == nil {
				continue
			}
			srv := srvE.rr.(*dns.SRV)
			d := Device{Instance: label, Service: svc, Host: hostName(srv.Target), Port: int(srv.Port),
				WebPort: web[lower(srv.Target)], Seen: srvE.recv, fqdn: lower(inst), hostFQDN: lower(srv.Target)}
			ifs := map[string]bool{s.ifNames[srvE.ifIndex]: true}
			for _, ae := range s.hostAddrEntries(srv.Target, srvE.src) {
				if a := s.entryAddr(ae); a.IsValid() && !slices.Contains(d.Addrs, a) {
					d.Addrs = append(d.Addrs, a)
					ifs[s.ifNames[ae.ifIndex]] = true
				}
				if ae.recv.After(d.Seen) {
					d.Seen = ae.recv
				}
			}
			if len(d.Addrs) == 0 {
				continue
			}
			slices.SortFunc(d.Addrs, compareAddr)
			if txt := s.cache.latest(inst, dns.TypeTXT); txt != nil {
				d.TXT = parseTXTRecord(txt.rr.(*dns.TXT).Txt)
			}
			for n := range ifs {
				if n != "" {
					d.Interfaces = append(d.Interfaces, n)
				}
			}
			slices.Sort(d.Interfaces)
			out[d.Key()] = d
		}
	}
	return out
}

// parseTXTRecord is devinfo.ParseTXT, with the single empty string (RFC
// 6763 §6.1: "no TXT data") meaning none.
func parseTXTRecord(txt []string) map[string]string {
	m := devinfo.ParseTXT(txt)
	if len(m) == 0 {
		return nil
	}
	return m
}

// resolveQuestions asks directly for what incomplete instances lack (SRV,
// TXT, addresses), a few times, a little apart.
func (s *session) resolveQuestions(now time.Time) ([]dns.Question, time.Time) {
	var qs []dns.Question
	var next time.Time
	need := func(name string, rtype uint16, since time.Time) {
		nt := nameType{lower(name), rtype}
		// Give records that travel as additionals, or in the device's next
		// packet, a moment before asking (RFC 6763 §12).
		if wait := since.Add(resolveDelay); s.asked[nt] == nil && now.Before(wait) {
			next = earliest(next, wait)
			return
		}
		a := s.asked[nt]
		if a == nil {
			a = &ask{}
			s.asked[nt] = a
		}
		if a.tries >= resolveTries {
			return
		}
		due := a.last.Add(resolveGap << a.tries)
		if a.tries > 0 && now.Before(due) {
			next = earliest(next, due)
			return
		}
		a.tries++
		a.last = now
		qs = append(qs, dns.Question{Name: name, Qtype: rtype, Qclass: dns.ClassINET})
		next = earliest(next, now.Add(resolveGap<<a.tries))
	}
	wanted := make(map[nameType]bool)
	for svcName := range s.services {
		for _, e := range s.cache.get(svcName, dns.TypePTR) {
			inst := e.rr.(*dns.PTR).Ptr
			srv := s.cache.latest(inst, dns.TypeSRV)
			if srv == nil {
				wanted[nameType{lower(inst), dns.TypeSRV}] = true
				need(inst, dns.TypeSRV, e.recv)
				continue
			}
			if s.cache.latest(inst, dns.TypeTXT) == nil {
				wanted[nameType{lower(inst), dns.TypeTXT}] = true
				need(inst, dns.TypeTXT, srv.recv)
			}
			host := srv.rr.(*dns.SRV).Target
			if len(s.cache.get(host, dns.TypeA)) == 0 && len(s.cache.get(host, dns.TypeAAAA)) == 0 {
				wanted[nameType{lower(host), dns.TypeA}] = true
				need(host, dns.TypeA, srv.recv)
			}
		}
	}
	for nt := range s.asked {
		if !wanted[nt] {
			delete(s.asked, nt) // complete again: ask afresh next time
		}
	}
	return qs, next
}

// sendBrowse multicasts the PTR questions, with the PTRs already known as
// known answers (RFC 6762 §7.1) so that only new devices answer.
func (s *session) sendBrowse(now time.Time) {
	var qs []dns.Question
	var known []dns.RR
	names := append(slices.Sorted(mapKeys(s.services)), webService+".local.")
	for _, n := range names {
		qs = append(qs, dns.Question{Name: n, Qtype: dns.TypePTR, Qclass: dns.ClassINET})
		for _, e := range s.cache.get(n, dns.TypePTR) {
			left := e.expires().Sub(now)
			if left < e.ttl/2 {
				continue // RFC 6762 §7.1: only those with at least half their TTL
			}
			rr := dns.Copy(e.rr)
			rr.Header().Ttl = uint32(left / time.Second)
			known = append(known, rr)
		}
	}
	s.sendQuestions(qs, known)
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// sendQuestions multicasts one query on every socket, in packets the
// socket's interface carries whole.
func (s *session) sendQuestions(qs []dns.Question, known []dns.RR) {
	packed := make(map[int][][]byte)
	for _, c := range s.conns {
		bs, ok := packed[c.maxQuery]
		if !ok {
			for _, msg := range queryMessages(qs, known, c.maxQuery) {
				b, err := msg.Pack()
				if err != nil {
					s.log.Debug("mdns: pack query", "err", err)
					continue
				}
				bs = append(bs, b)
			}
			packed[c.maxQuery] = bs
		}
		for _, b := range bs {
			if err := c.send(b); err != nil {
				s.log.Debug("mdns: query not sent", "err", err)
			}
		}
	}
}

// queryMessages builds a query of at most maxSize bytes; known answers that
// do not fit go in follow-up packets, with TC set on all but the last (RFC 6762
// §7.2).
func queryMessages(qs []dns.Question, known []dns.RR, maxSize int) []*dns.Msg {
	known = slices.Clone(known)
	slices.SortFunc(known, func(a, b dns.RR) int { return cmp.Compare(a.String(), b.String()) })
	newMsg := func() *dns.Msg {
		m := new(dns.Msg)
		m.Compress = true
		m.RecursionDesired = false
		return m
	}
	var msgs []*dns.Msg
	m := newMsg()
	m.Question = qs
	for _, rr := range known {
		m.Answer = append(m.Answer, rr)
		if m.Len() > maxSize && len(m.Answer) > 1 {
			m.Answer = m.Answer[:len(m.Answer)-1]
			m.Truncated = true
			msgs = append(msgs, m)
			m = newMsg()
			m.Answer = []dns.RR{rr}
		}
	}
	return append(msgs, m)
}

// BrowseOptions bound a one-shot browse.
type BrowseOptions struct {
	// Timeout is how long to listen; 0 = 2 s.
	Timeout time.Duration
	// Count, when positive, ends the browse as soon as that many devices
	// are found, and returns no more than that many.
	Count int
	// Until, when set, ends the browse as soon as it holds for the devices
	// found so far.
	Until func([]Device) bool
}

// Browse lists the devices that answer within the timeout, sorted by
// instance name. When ctx is cancelled it returns what it found so far
// with ctx's error.
func Browse(ctx context.Context, cfg Config, o BrowseOptions) ([]Device, error) {
	s, err := open(cfg)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	bctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	found := make(map[string]Device)
	var grace *time.Timer
	s.run(bctx, func(e Event) {
		switch e.Kind {
		case Added, Changed:
			found[e.Device.Key()] = e.Device
		case Removed:
			delete(found, e.Device.Key())
		}
		counted := o.Count > 0 && len(found) >= o.Count
		enough := counted
		if !enough && o.Until != nil && e.Kind != Removed {
			enough = o.Until(slices.Collect(mapValues(found)))
		}
		if !enough {
			return
		}
		if counted {
			// A fleet answers one query in a burst that a loaded host reads
			// over several packets: wait until it has been quiet for a
			// moment, so the first Count by name are the same every time.
			if grace == nil {
				grace = time.AfterFunc(txtGrace, cancel)
			} else if e.Kind != Removed {
				grace.Reset(txtGrace)
			}
			return
		}
		// Enough devices: stop, but give a TXT record that travels in a
		// packet of its own a moment to arrive.
		for _, d := range found {
			if d.TXT == nil {
				if grace == nil {
					grace = time.AfterFunc(txtGrace, cancel)
				}
				return
			}
		}
		cancel()
	})
	if grace != nil {
		grace.Stop()
	}
	out := slices.SortedFunc(mapValues(found), func(a, b Device) int {
		return cmp.Or(compareNames(a.Instance, b.Instance), cmp.Compare(a.Service, b.Service))
	})
	if o.Count > 0 && len(out) > o.Count {
		// A fleet answers in one burst: the first Count by name, the same
		// ones every time.
		out = out[:o.Count]
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	return out, nil
}

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// Watch reports devices as they come, change and go, until ctx ends; it
// then returns nil. emit is called from one goroutine, in order.
func Watch(ctx context.Context, cfg Config, emit func(Event)) error {
	s, err := open(cfg)
	if err != nil {
		return err
	}
	defer s.close()
	s.run(ctx, emit)
	return nil
}

// addrEntries are the A and AAAA records of a host.
// hostAddrEntries are the address records of host that the device which
// sent the SRV (from src) announced itself, when it did: two devices that
// claim one host name (a conflict not yet resolved, or never resolved by a
// careless responder) must not become one device with both addresses. A
// device's records come from its own address; a proxy that answers for
// others (src matching no address) gets all of them.
func (s *session) hostAddrEntries(host string, src netip.Addr) []*entry {
	all := s.addrEntries(host)
	var own []*entry
	for _, e := range all {
		if src.IsValid() && e.src == src {
			own = append(own, e)
		}
	}
	if len(own) > 0 {
		return own
	}
	return all
}

func (s *session) addrEntries(host string) []*entry {
	return append(s.cache.get(host, dns.TypeA), s.cache.get(host, dns.TypeAAAA)...)
}

// entryAddr is an address record's address; link-local IPv6 addresses get
// the zone of the interface they were heard on.
func (s *session) entryAddr(e *entry) netip.Addr {
	var a netip.Addr
	switch rr := e.rr.(type) {
	case *dns.A:
		a, _ = netip.AddrFromSlice(rr.A.To4())
	case *dns.AAAA:
		a, _ = netip.AddrFromSlice(rr.AAAA)
		if a.IsLinkLocalUnicast() {
			a = a.WithZone(s.ifNames[e.ifIndex])
		}
	}
	return a
}
