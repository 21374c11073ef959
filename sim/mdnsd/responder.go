package mdnsd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"

	"github.com/ots-ota/ots-ota/internal/ifaceguard"
)

const (
	mdnsPort = 5353
	// A host is probed, then announced, on the schedule of ESP-IDF's mdns
	// component (mdns_pcb.c): the first probe 120 ms plus a random 0–127 ms
	// after it was added, three probes 250 ms apart (the first asking for
	// unicast replies), the first announcement 250 ms after the last probe,
	// three announcements one second apart. While probing it does not answer.
	probeCount       = 3
	probeDelay       = 120 * time.Millisecond
	probeJitterMax   = 128 // ms, esp_random() & 0x7F
	probeGap         = 250 * time.Millisecond
	firstAnnounceGap = 250 * time.Millisecond
	announceCount    = 3
	announceGap      = time.Second
	// maxReadErrors bounds a run of read errors (e.g. Windows reporting ICMP
	// port unreachable on the next read) before Serve gives up.
	maxReadErrors = 100
)

// ErrNoMulticast reports an interface without the MULTICAST flag.
var ErrNoMulticast = errors.New("interface lacks the MULTICAST flag")

// Config configures a Responder.
type Config struct {
	// Interface is the only interface the responder uses. Required: there is
	// deliberately no "all interfaces" default.
	Interface *net.Interface
	// Logger receives debug and warning messages; nil discards them.
	Logger *slog.Logger
	// TTL, when set, is the TTL of every advertised record, so tests can
	// watch records expire in seconds. 0 means ESP-IDF's TTLs: PTR and TXT
	// 4500 s, SRV, A and AAAA 120 s, reverse-mapping PTRs 10 s. Rounded
	// down to whole seconds, at least 1 s.
	TTL time.Duration
}

// Responder answers mDNS and DNS-SD queries for a set of hosts on one
// interface. All methods are safe for concurrent use.
type Responder struct {
	ifi    *net.Interface
	log    *slog.Logger
	z      *zone
	conn   *net.UDPConn
	pc     *ipv4.PacketConn
	cmOK   bool           // control messages tell the arrival interface
	onLink []netip.Prefix // the interface's prefixes (RFC 6762 §11 source check)

	mu      sync.Mutex
	closed  bool
	serving bool
	timers  map[*hostEntry]*time.Timer
}

// New opens the mDNS socket on cfg.Interface: UDP port 5353 with
// SO_REUSEADDR (so it coexists with a system responder), the group
// 224.0.0.251 joined on that interface only, outgoing multicast pinned to it
// (IP_MULTICAST_IF), loopback of own multicast on, and TTL 255.
func New(cfg Config) (*Responder, error) {
	if cfg.Interface == nil {
		return nil, errors.New("mdnsd: Config.Interface is required")
	}
	ifi := cfg.Interface
	if ifi.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("mdnsd: interface %s is down", ifi.Name)
	}
	if ifi.Flags&net.FlagMulticast == 0 {
		return nil, fmt.Errorf("mdnsd: interface %s: %w%s", ifi.Name, ErrNoMulticast, multicastHint(ifi))
	}
	if err := ifaceguard.Check(ifi.Name); err != nil {
		return nil, fmt.Errorf("mdnsd: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := espIDFTTLs
	if cfg.TTL > 0 {
		t = uniformTTLs(uint32(min(max(cfg.TTL/time.Second, 1), 1<<31-1)))
	}

	prefixes, err := interfacePrefixes(ifi)
	if err != nil {
		return nil, fmt.Errorf("mdnsd: addresses of %s: %w", ifi.Name, err)
	}

	// Go binds a multicast address as the wildcard address of its port
	// with SO_REUSEADDR (so we coexist with a system responder). What
	// confines the socket to ifi: SO_BINDTODEVICE where Linux allows it,
	// the group joined on ifi only, IP_MULTICAST_IF, IP_MULTICAST_ALL off,
	// and the arrival-interface filter in serveOne.
	var devBound bool
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		devBound = bindToDevice(c, ifi.Name)
		return nil
	}}
	pconn, err := lc.ListenPacket(context.Background(), "udp4", mdnsGroup().String())
	if err != nil {
		return nil, fmt.Errorf("mdnsd: listen on %s port %d: %w", ifi.Name, mdnsPort, err)
	}
	conn, ok := pconn.(*net.UDPConn)
	if !ok {
		pconn.Close()
		return nil, fmt.Errorf("mdnsd: listen on %s: unexpected connection type %T", ifi.Name, pconn)
	}
	r := &Responder{
		ifi:    ifi,
		log:    log.With("iface", ifi.Name),
		z:      newZone(t),
		conn:   conn,
		pc:     ipv4.NewPacketConn(conn),
		onLink: prefixes,
		timers: make(map[*hostEntry]*time.Timer),
	}
	r.log.Debug("mdnsd: socket open", "bound_to_device", devBound)
	if err := r.setup(); err != nil {
		conn.Close()
		return nil, err
	}
	return r, nil
}

func (r *Responder) setup() error {
	if err := r.pc.JoinGroup(r.ifi, net.UDPAddrFromAddrPort(mdnsGroup())); err != nil {
		return fmt.Errorf("mdnsd: join %s on %s: %w", mdnsGroup().Addr(), r.ifi.Name, err)
	}
	if err := r.pc.SetMulticastInterface(r.ifi); err != nil {
		return fmt.Errorf("mdnsd: set multicast interface %s: %w", r.ifi.Name, err)
	}
	// Local browsers, the only audience on a loopback interface, hear us
	// only through multicast loopback; make sure it is on.
	if err := r.pc.SetMulticastLoopback(true); err != nil {
		return fmt.Errorf("mdnsd: enable multicast loopback: %w", err)
	}
	if err := r.pc.SetMulticastTTL(255); err != nil {
		return fmt.Errorf("mdnsd: set multicast TTL: %w", err)
	}
	if err := r.pc.SetControlMessage(ipv4.FlagInterface|ipv4.FlagDst, true); err != nil {
		// Windows: no arrival interface; fall back to accepting only sources
		// inside the interface's own prefixes.
		r.log.Debug("mdnsd: no arrival-interface info, filtering by source address", "err", err)
	} else {
		r.cmOK = true
	}
	if err := restrictMulticastAll(r.conn); err != nil {
		r.log.Debug("mdnsd: could not clear IP_MULTICAST_ALL", "err", err)
	}
	return nil
}

// Serve reads and answers queries until ctx is done or Close is called; it
// then returns nil. It fails at once after Close or while another Serve
// runs, and after a long run of read errors. Hosts may be added before or
// while it runs; Serve may be called again after it returned.
func (r *Responder) Serve(ctx context.Context) error {
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return fmt.Errorf("mdnsd: serve: %w", net.ErrClosed)
	case r.serving:
		r.mu.Unlock()
		return errors.New("mdnsd: serve: already serving")
	}
	r.serving = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.serving = false
		r.mu.Unlock()
	}()

	if err := r.conn.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("mdnsd: serve: %w", err)
	}
	// A past deadline wakes the blocked read when ctx ends. Wait for that
	// function on the way out so it cannot hit a later Serve.
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = r.conn.SetReadDeadline(time.Unix(1, 0))
		close(woken)
	})
	defer func() {
		if !stop() {
			<-woken
		}
	}()

	buf := make([]byte, 65536)
	errs := 0
	for {
		n, cm, src, err := r.pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Not ours: nobody else sets deadlines, but never spin on one.
				_ = r.conn.SetReadDeadline(time.Time{})
				continue
			}
			if errs++; errs >= maxReadErrors {
				return fmt.Errorf("mdnsd: read on %s: %w", r.ifi.Name, err)
			}
			r.log.Debug("mdnsd: read error", "err", err)
			continue
		}
		errs = 0
		r.serveOne(buf[:n], cm, src)
	}
}

func (r *Responder) serveOne(pkt []byte, cm *ipv4.ControlMessage, src net.Addr) {
	ua, ok := src.(*net.UDPAddr)
	if !ok {
		return
	}
	from := ua.AddrPort()
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	unicastDst := false
	var only netip.Addr // a query sent to one device's address reaches that device only
	if r.cmOK {
		if cm == nil || (cm.IfIndex != 0 && cm.IfIndex != r.ifi.Index) {
			return // arrived on another interface: not ours to answer
		}
		unicastDst = cm.Dst != nil && !cm.Dst.IsMulticast()
		if a, ok := netip.AddrFromSlice(cm.Dst); unicastDst && ok && r.z.isSource(a.Unmap()) {
			only = a.Unmap()
		}
	} else if !r.isOnLink(from.Addr()) {
		return
	}
	r.resolveConflicts(pkt)
	for _, out := range r.z.handle(pkt, from, unicastDst, r.log) {
		if only.IsValid() && out.from != only {
			continue
		}
		if out.to.IsValid() && !r.isOnLink(out.to.Addr()) {
			// RFC 6762 §11: unicast replies only to on-link sources.
			r.log.Debug("mdnsd: not answering off-link source", "src", out.to)
			continue
		}
		r.send(out.msg, out.to, out.from)
	}
}

func (r *Responder) isOnLink(a netip.Addr) bool {
	// A socket bound to 0.0.0.0 that multicasts through loopback may get
	// source 0.0.0.0 (lo's 127.0.0.1 is host-scoped; Linux then picks no
	// source), hashicorp/mdns's client among them. To 0.0.0.0 the kernel
	// delivers locally, so on loopback a reply there stays on this host.
	if a.IsUnspecified() && r.ifi.Flags&net.FlagLoopback != 0 {
		return true
	}
	for _, p := range r.onLink {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// send writes one packet; an invalid to means the mDNS group. The packet
// leaves through ifi (IP_PKTINFO where supported) and, when from is valid,
// from that source address, so each simulated device answers from its own
// address like a real one. Where the system refuses either, it falls back to
// the plain socket (still pinned to ifi by IP_MULTICAST_IF and, on Linux,
// SO_BINDTODEVICE when available).
func (r *Responder) send(b []byte, to netip.AddrPort, from netip.Addr) {
	if !to.IsValid() {
		to = mdnsGroup()
	}
	dst := net.UDPAddrFromAddrPort(to)
	cm := &ipv4.ControlMessage{IfIndex: r.ifi.Index}
	if from.Is4() {
		cm.Src = net.IP(from.AsSlice())
	}
	_, err := r.pc.WriteTo(b, cm, dst)
	if err != nil && cm.Src != nil && !errors.Is(err, net.ErrClosed) {
		r.log.Debug("mdnsd: send with source address failed, retrying without", "src", from, "err", err)
		cm.Src = nil
		_, err = r.pc.WriteTo(b, cm, dst)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		r.log.Debug("mdnsd: send with interface index failed, retrying without", "err", err)
		_, err = r.pc.WriteTo(b, nil, dst)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		r.log.Warn("mdnsd: send failed", "to", to, "err", err)
	}
}

// sendMsgs packs and multicasts messages from the given source address.
func (r *Responder) sendMsgs(msgs []*dns.Msg, from netip.Addr) {
	for _, m := range msgs {
		b, err := m.Pack()
		if err != nil {
			r.log.Warn("mdnsd: pack response", "err", err)
			continue
		}
		r.send(b, netip.AddrPort{}, from)
	}
}

// Add registers h, probes for its names and then announces it, as an
// ESP-IDF device does when its network comes up (see probeCount). It
// answers queries once probing is over. It fails when h is invalid, when its
// host name or one of its instance names (per service type) is already
// registered, or after Close. A name another responder on the link holds
// is resolved as ESP-IDF does (see resolveConflicts): the host may end up
// under another name; Remove and Withdraw still take the name given here.
func (r *Responder) Add(h Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("mdnsd: add %s: %w", h.Name, net.ErrClosed)
	}
	if cur, renamed := r.z.current(h.Name); renamed {
		return fmt.Errorf("mdnsd: add: host %s: already registered as %s", h.Name, cur)
	}
	e, err := r.z.add(h)
	if err != nil {
		return fmt.Errorf("mdnsd: add: %w", err)
	}
	r.z.setProbing(e, true)
	r.log.Debug("mdnsd: host added", "host", e.label, "services", len(e.svcs))
	r.schedule(e, probeDelay+time.Duration(rand.IntN(probeJitterMax))*time.Millisecond, 0)
	return nil
}

// schedule runs step n of e's probe-and-announce sequence after d. r.mu is held.
func (r *Responder) schedule(e *hostEntry, d time.Duration, n int) {
	r.timers[e] = time.AfterFunc(d, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		// Removed, re-added (a new entry) or closed meanwhile: stay quiet.
		if r.closed || r.timers[e] == nil || r.z.lookup(e.label) != e {
			return
		}
		r.step(e, n)
	})
}

// step sends probe n (n < probeCount) or announcement n-probeCount and
// schedules the next one. r.mu is held.
func (r *Responder) step(e *hostEntry, n int) {
	if n < probeCount {
		r.sendMsgs([]*dns.Msg{r.z.probe(e, n == 0)}, e.src)
		next := probeGap
		if n == probeCount-1 {
			next = firstAnnounceGap
		}
		r.schedule(e, next, n+1)
		return
	}
	if n == probeCount {
		r.z.setProbing(e, false)
	}
	r.sendMsgs(split(r.z.records(e, true), maxPayload, nil), e.src)
	if n+1 >= probeCount+announceCount {
		delete(r.timers, e)
		return
	}
	r.schedule(e, announceGap, n+1)
}

// Remove unregisters the host with the given name (without ".local") and
// sends goodbye records (TTL 0) so browsers drop it at once. Unknown names
// are ignored.
func (r *Responder) Remove(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, _ := r.z.current(name)
	e, gone := r.z.remove(cur)
	if e == nil {
		r.log.Debug("mdnsd: remove of unknown host", "host", name)
		return
	}
	if t := r.timers[e]; t != nil {
		t.Stop()
		delete(r.timers, e)
	}
	if r.closed {
		return
	}
	gs := r.z.records(e, false)
	for _, rr := range gone {
		gs = append(gs, group{ans: rr, host: e})
	}
	r.sendMsgs(split(gs, maxPayload, goodbyeForm), e.src)
	r.log.Debug("mdnsd: host removed", "host", e.label)
}

// Withdraw unregisters the host with the given name without a word: no
// goodbye, as a device that resets or loses power sends none (ESP-IDF's
// and Arduino's mDNS say goodbye only in mdns_free or when a service is
// removed). Caches keep it until its records expire or it announces again.
// Unknown names are ignored.
func (r *Responder) Withdraw(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, _ := r.z.current(name)
	e, _ := r.z.remove(cur)
	if e == nil {
		return
	}
	if t := r.timers[e]; t != nil {
		t.Stop()
		delete(r.timers, e)
	}
	r.log.Debug("mdnsd: host withdrawn silently", "host", e.label)
}

// Close sends goodbye records for every host still registered, closes the
// socket and makes Serve return. It is safe to call more than once.
func (r *Responder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	for e, t := range r.timers {
		t.Stop()
		delete(r.timers, e)
	}
	// Each device says goodbye for itself, as in announce.
	for _, e := range r.z.all() {
		r.sendMsgs(split(r.z.records(e, true), maxPayload, goodbyeForm), e.src)
	}
	r.closed = true
	r.mu.Unlock()
	if err := r.conn.Close(); err != nil {
		return fmt.Errorf("mdnsd: close: %w", err)
	}
	return nil
}

// interfacePrefixes lists ifi's IP prefixes; on a loopback interface that
// reports none it assumes 127.0.0.0/8 and ::1.
func interfacePrefixes(ifi *net.Interface) ([]netip.Prefix, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	var ps []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ones, _ := ipn.Mask.Size()
		ip = ip.Unmap()
		if ip.Is4() && ones > 32 {
			ones -= 96
		}
		ps = append(ps, netip.PrefixFrom(ip, ones).Masked())
	}
	if len(ps) == 0 && ifi.Flags&net.FlagLoopback != 0 {
		ps = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	return ps, nil
}

// mdnsGroup is 224.0.0.251:5353.
func mdnsGroup() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{224, 0, 0, 251}), mdnsPort)
}
