package espota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Listener is the TCP listener espota devices connect back to. One
// serves a whole fleet: the runner creates it once, hands it to every
// Transport, and closes it at the end. Connections are told apart by
// the connecting device's source address; while one upload waits for a
// device's connect-back, another upload to the same IP (a second device on
// the same address but another port) waits its turn before it invites.
//
// With no host IP it binds, lazily, the local address that routes to each
// device (127.0.0.1 for 127.0.0.x), so the invitation's UDP source, which is
// where the device connects back, is an address it listens on. With no host
// port it takes a random free port and reuses it on every address it binds.
type Listener struct {
	hostIP net.IP // nil: per device, the routing address
	port   int    // 0 until the first bind, when none was asked for
	log    *slog.Logger

	mu      sync.Mutex
	lns     map[string]net.Listener // by bound IP
	waiting map[netip.Addr]*espotaTurn
	turns   map[netip.Addr]chan struct{}
	closed  bool
	wg      sync.WaitGroup
}

// NewListener prepares the connect-back listener on hostIP:hostPort
// (espota's -I/-P; "" and 0 for the defaults above). An explicit host IP is
// bound at once, so a taken port fails before any device is touched.
func NewListener(hostIP string, hostPort int, log *slog.Logger) (*Listener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if hostPort < 0 || hostPort > 65535 {
		return nil, fmt.Errorf("espota listener: host port %d out of range", hostPort)
	}
	l := &Listener{port: hostPort, log: log, lns: map[string]net.Listener{},
		waiting: map[netip.Addr]*espotaTurn{}, turns: map[netip.Addr]chan struct{}{}}
	if hostIP != "" {
		ip := net.ParseIP(hostIP)
		if ip == nil {
			return nil, fmt.Errorf("espota listener: host IP %q is not an IP address", hostIP)
		}
		l.hostIP = ip
		l.mu.Lock()
		_, err := l.bindLocked(ip)
		l.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Port is the TCP port devices connect back to (0 before the first bind).
func (l *Listener) Port() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.port
}

// Close stops listening; uploads waiting for a connect-back fail.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	for _, ln := range l.lns {
		_ = ln.Close()
	}
	for _, w := range l.waiting {
		w.closeOnce.Do(func() { close(w.gone) })
	}
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// bindLocked listens on ip (once) and returns the address devices reach.
func (l *Listener) bindLocked(ip net.IP) (*net.TCPAddr, error) {
	if l.closed {
		return nil, errors.New("espota listener closed")
	}
	key := ip.String()
	if ln, ok := l.lns[key]; ok {
		return ln.Addr().(*net.TCPAddr), nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(key, strconv.Itoa(l.port)))
	if err != nil && l.port != 0 && len(l.lns) > 0 {
		// The port chosen at random on another address is taken here.
		ln, err = net.Listen("tcp", net.JoinHostPort(key, "0"))
	}
	if err != nil {
		return nil, fmt.Errorf("cannot listen for espota connect-backs on %s: %w", net.JoinHostPort(key, strconv.Itoa(l.port)), err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	if l.port == 0 {
		l.port = addr.Port
	}
	l.lns[key] = ln
	l.wg.Add(1)
	go l.serve(ln)
	l.log.Debug("espota listener", "addr", addr.String())
	return addr, nil
}

// serve hands each connection to the upload waiting for its source IP and
// closes any other.
func (l *Listener) serve(ln net.Listener) {
	defer l.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Debug("espota accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		ip := ap.Addr().Unmap()
		l.mu.Lock()
		w := l.waiting[ip]
		if w == nil && err == nil && len(l.waiting) == 1 && len(l.turns) == 1 {
			// Behind NAT (Docker, a VPN) the device appears from another
			// address. When this listener only ever served one device it
			// can only be that one, as espota.py assumes. In a fleet it
			// might be a late connect-back of another device (to a copy
			// of its invitation) that would take this device's image:
			// refused.
			for _, only := range l.waiting {
				w = only
			}
			l.log.Debug("espota connect-back from another address than the device's", "remote", ap.String(), "device", w.device.String())
		}
		delivered := false
		if err == nil && w != nil && !w.got {
			w.got = true
			w.conn <- c
			delivered = true
		}
		if !delivered {
			for _, t := range l.waiting {
				t.strangers = append(t.strangers[:min(len(t.strangers), 3)], ap.Addr().String())
			}
		}
		l.mu.Unlock()
		if !delivered {
			l.log.Debug("espota connection from an address no upload waits for", "remote", c.RemoteAddr().String())
			_ = c.Close()
		}
	}
}

// espotaTurn is one upload's claim on a device IP, from its invitation to
// the device's connect-back.
type espotaTurn struct {
	l         *Listener
	device    netip.Addr
	local     *net.TCPAddr // where the device must connect: the UDP source and the invitation's port
	bindUDP   net.IP       // the UDP socket's local IP; nil = the OS's choice
	slot      chan struct{}
	conn      chan net.Conn
	gone      chan struct{} // closed when the listener closes
	closeOnce sync.Once
	got       bool     // guarded by l.mu
	strangers []string // guarded by l.mu: refused connect-backs from other addresses meanwhile
	released  bool
}

// reserve binds for device (if not yet) and waits until no other upload
// waits for a connect-back from the same IP.
func (l *Listener) reserve(ctx context.Context, device netip.Addr) (*espotaTurn, error) {
	device = device.Unmap()
	route := l.hostIP
	if route == nil || route.IsUnspecified() {
		// connect(2) on a UDP socket picks the source address without
		// sending anything.
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(device, 9)))
		if err != nil {
			return nil, fmt.Errorf("no route to %s: %w", device, err)
		}
		route = c.LocalAddr().(*net.UDPAddr).IP
		_ = c.Close()
	}
	bind := route
	if l.hostIP != nil {
		bind = l.hostIP
	}
	l.mu.Lock()
	addr, err := l.bindLocked(bind)
	slot := l.turns[device]
	if slot == nil {
		slot = make(chan struct{}, 1)
		l.turns[device] = slot
	}
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case slot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	t := &espotaTurn{l: l, device: device, local: &net.TCPAddr{IP: route, Port: addr.Port}, slot: slot,
		conn: make(chan net.Conn, 1), gone: make(chan struct{})}
	if !bind.IsUnspecified() {
		t.bindUDP = bind
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-slot
		return nil, errors.New("espota listener closed")
	}
	l.waiting[device] = t
	l.mu.Unlock()
	return t, nil
}

// accept waits for the device's connection.
func (t *espotaTurn) accept(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case c := <-t.conn:
		return c, nil
	case <-timer.C:
		return nil, errNoConnectBack
	case <-t.gone:
		return nil, errors.New("espota listener closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

var errNoConnectBack = errors.New("no connection from the device")

// refused lists the addresses whose connections were refused while this
// upload waited (at most 4).
func (t *espotaTurn) refused() []string {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	return append([]string(nil), t.strangers...)
}

// release ends the claim: a connection arriving later is refused, and the
// next upload to the same IP may invite.
func (t *espotaTurn) release() {
	l := t.l
	l.mu.Lock()
	if t.released {
		l.mu.Unlock()
		return
	}
	t.released = true
	if l.waiting[t.device] == t {
		delete(l.waiting, t.device)
	}
	l.mu.Unlock()
	select {
	case c := <-t.conn:
		_ = c.Close() // arrived after the upload gave up
	default:
	}
	<-t.slot
}
