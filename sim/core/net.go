package core

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// The device on the network: the firmware's servers (Firmware.Servers) on
// sockets the device keeps across resets.

// servers are what a booted device listens with.
type servers struct {
	list []*running
}

// running is one of the firmware's servers for this boot.
type running struct {
	def  Server
	http *httpd         // Routes
	tcp  *streamd       // Stream
	pkt  PacketServer   // Packet
	pc   net.PacketConn // the socket pkt runs on
}

// netState is what the device keeps on the network across reboots: its
// listening sockets (held silent while it boots, where the OS allows) and
// the connections a reset left behind. Guarded by srvMu.
type netState struct {
	tcp  [numPorts]tcpPort
	udp  [numPorts]udpPort
	left []net.Conn // connections the last reset left open
}

// tcpPort is one listening socket and, while it is held, how to release it.
type tcpPort struct {
	ln      *net.TCPListener
	release func() error
}

// udpPort is a UDP socket, bound for the device's life.
type udpPort struct {
	pc    net.PacketConn
	quiet func() // stops the discarding while the device boots
}

func (d *Device) listenTCP(port int) (*net.TCPListener, error) {
	lc := net.ListenConfig{Control: LWIPSockopts}
	return rebind(d, "tcp", port, func(addr string) (*net.TCPListener, error) {
		l, err := lc.Listen(d.ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return l.(*net.TCPListener), nil
	})
}

func (d *Device) listenUDP(port int) (net.PacketConn, error) {
	var lc net.ListenConfig
	return rebind(d, "udp", port, func(addr string) (net.PacketConn, error) { return lc.ListenPacket(d.ctx, "udp", addr) })
}

// rebind listens on the device's address; a fixed port just released by the
// previous boot (or in TIME_WAIT) may need a moment, so it retries briefly.
func rebind[T any](d *Device, network string, port int, listen func(addr string) (T, error)) (T, error) {
	addr := net.JoinHostPort(d.s.IP.String(), strconv.Itoa(port))
	var (
		l   T
		err error
	)
	for i := 0; i < 20; i++ {
		if l, err = listen(addr); err == nil {
			return l, nil
		}
		if port == 0 || !Sleep(d.ctx, 50*time.Millisecond) {
			break
		}
	}
	return l, fmt.Errorf("listen on %s %s: %w", network, addr, err)
}

func portOf(a net.Addr) int {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.Port
	case *net.UDPAddr:
		return v.Port
	}
	return 0
}

// takeTCP returns p's listener, released from its hold, or a new one.
func (d *Device) takeTCP(p *tcpPort, port int) (*net.TCPListener, error) {
	if p.ln != nil {
		rel := p.release
		p.release = nil
		if rel == nil {
			return p.ln, nil
		}
		if err := rel(); err == nil {
			return p.ln, nil
		}
		p.ln.Close()
		p.ln = nil
	}
	ln, err := d.listenTCP(port)
	if err != nil {
		return nil, err
	}
	p.ln = ln
	return ln, nil
}

// holdTCP keeps p's listener silent through a reboot, or closes it where
// the OS cannot (connections are then refused).
func holdTCP(p *tcpPort) {
	if p.ln == nil || p.release != nil {
		return
	}
	if rel, ok := holdListener(p.ln); ok {
		p.release = rel
		return
	}
	p.ln.Close()
	p.ln = nil
}

func closeTCP(p *tcpPort) {
	if p.ln != nil {
		p.ln.Close()
	}
	*p = tcpPort{}
}

// takeUDP returns the UDP socket, stopping the boot-time discarding.
func (d *Device) takeUDP(u *udpPort, port int) (net.PacketConn, error) {
	if u.quiet != nil {
		u.quiet()
		u.quiet = nil
	}
	if u.pc != nil {
		return u.pc, nil
	}
	pc, err := d.listenUDP(port)
	if err != nil {
		return nil, err
	}
	u.pc = pc
	return pc, nil
}

// resetLeftConns resets what the last reset left open: the device that
// came back does not know those connections.
func (d *Device) resetLeftConns() {
	for _, c := range d.net.left {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
	d.net.left = nil
}

// leaveConn keeps a connection open but dead until the device is back
// (espota's data connection on a power loss or a reset).
func (d *Device) leaveConn(c net.Conn) {
	d.leftMu.Lock()
	d.leftOut = append(d.leftOut, c)
	d.leftMu.Unlock()
}

// startServers opens the listeners of the firmware and advertises the
// device. Ports chosen on the first start are kept for later boots.
func (d *Device) startServers() error {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	srv := &servers{}
	d.mu.Lock()
	ports := d.ports
	d.bootCtx, d.bootCancel = context.WithCancel(d.ctx)
	d.mu.Unlock()
	for _, def := range d.s.fw.Servers(d.env) {
		if def.Port == PortWeb && ports[PortWeb] < 0 {
			continue
		}
		r := &running{def: def}
		if def.Packet != nil {
			pc, err := d.takeUDP(&d.net.udp[def.Port], ports[def.Port])
			if err != nil {
				return err
			}
			ports[def.Port] = portOf(pc.LocalAddr())
			r.pc, r.pkt = pc, def.Packet(pc)
		} else {
			ln, err := d.takeTCP(&d.net.tcp[def.Port], ports[def.Port])
			if err != nil {
				return err
			}
			ports[def.Port] = portOf(ln.Addr())
			if def.Stream != nil {
				r.tcp = newStreamd(d, def, ln)
			} else {
				r.http = newHTTPD(d, def, ln)
			}
		}
		srv.list = append(srv.list, r)
	}
	d.mu.Lock()
	d.ports = ports
	d.srv = srv
	d.phase = PhaseUp
	d.refusing = false
	d.notifyLocked()
	d.mu.Unlock()
	d.leftMu.Lock()
	d.net.left = append(d.net.left, d.leftOut...)
	d.leftOut = nil
	d.leftMu.Unlock()
	d.resetLeftConns()
	for _, r := range srv.list {
		switch {
		case r.http != nil:
			r.http.start()
		case r.tcp != nil:
			r.tcp.start()
		default:
			r.pkt.Start()
		}
	}
	if d.s.MDNS != nil {
		if err := d.s.MDNS.Add(d.mdnsHost()); err != nil {
			d.log.Warn("mdns add", "err", err)
		}
	}
	return nil
}

// stopServers takes the device off the network. A reset (final false) is
// silent, as a chip that stops is: no mDNS goodbye, listeners held so that
// connection attempts time out, open connections left unanswered and
// unclosed, UDP ports still bound but deaf. Closing the device (final
// true) sends the goodbyes and closes everything.
func (d *Device) stopServers(final bool) {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	d.mu.Lock()
	srv := d.srv
	d.srv = nil
	if d.bootCancel != nil {
		d.bootCancel()
	}
	if d.phase == PhaseUp {
		d.phase = PhaseBooting
	}
	d.refusing = false
	d.notifyLocked()
	d.mu.Unlock()
	if srv != nil {
		if d.s.MDNS != nil {
			if final {
				d.s.MDNS.Remove(d.s.Name)
			} else {
				d.s.MDNS.Withdraw(d.s.Name)
			}
		}
		for _, r := range srv.list {
			switch {
			case r.http != nil:
				d.net.left = append(d.net.left, r.http.close(!final)...)
			case r.tcp != nil:
				d.net.left = append(d.net.left, r.tcp.close(!final)...)
			default:
				r.pkt.Stop()
			}
		}
	}
	n := &d.net
	if !final {
		for p := range n.tcp {
			holdTCP(&n.tcp[p])
		}
		for p := range n.udp {
			if u := &n.udp[p]; u.pc != nil && u.quiet == nil {
				u.quiet = discardUDP(u.pc)
			}
		}
		return
	}
	for p := range n.tcp {
		closeTCP(&n.tcp[p])
	}
	for p := range n.udp {
		u := &n.udp[p]
		if u.quiet != nil {
			u.quiet()
			u.quiet = nil
		}
		if u.pc != nil {
			u.pc.Close()
			u.pc = nil
		}
	}
	d.leftMu.Lock()
	n.left = append(n.left, d.leftOut...)
	d.leftOut = nil
	d.leftMu.Unlock()
	d.resetLeftConns()
}

// discardUDP reads and drops datagrams until the returned stop is called:
// the port stays bound (no ICMP unreachable) and silent while the device boots.
func discardUDP(pc net.PacketConn) (stop func()) {
	done := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				if stopping.Load() || errors.Is(err, net.ErrClosed) {
					return
				}
				if isTimeout(err) {
					// A deadline left over from the server that ran on the
					// socket. Clearing it may undo stop's deadline: stop
					// sets stopping first, so look again after clearing.
					_ = pc.SetReadDeadline(time.Time{})
					if stopping.Load() {
						return
					}
				}
			}
		}
	}()
	return func() {
		stopping.Store(true)
		_ = pc.SetReadDeadline(aLongTimeAgo)
		<-done
		_ = pc.SetReadDeadline(time.Time{})
	}
}

// closeListeners is the refuse fault: new connections are refused,
// running ones go on.
func (d *Device) closeListeners() {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	d.mu.Lock()
	srv, already := d.srv, d.refusing
	d.mu.Unlock()
	// A second refuse fault while the first holds: the caller extends the
	// window; the sockets are already closed.
	if srv == nil || already {
		return
	}
	for _, r := range srv.list {
		switch {
		case r.http != nil:
			r.http.closeListener()
			d.net.tcp[r.def.Port] = tcpPort{}
		case r.tcp != nil:
			r.tcp.closeListener()
			d.net.tcp[r.def.Port] = tcpPort{}
		default:
			r.pkt.Stop()
			u := &d.net.udp[r.def.Port]
			u.pc.Close()
			u.pc = nil
		}
	}
	d.mu.Lock()
	d.refusing = true
	d.notifyLocked()
	d.mu.Unlock()
}

func (d *Device) reopenListeners() error {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	d.mu.Lock()
	srv := d.srv
	ports := d.ports
	d.mu.Unlock()
	if srv == nil {
		return nil
	}
	for _, r := range srv.list {
		p := r.def.Port
		if r.http != nil || r.tcp != nil {
			ln, err := d.takeTCP(&d.net.tcp[p], ports[p])
			if err != nil {
				return err
			}
			if r.http != nil {
				r.http.reopen(ln)
			} else {
				r.tcp.reopen(ln)
			}
			continue
		}
		pc, err := d.takeUDP(&d.net.udp[p], ports[p])
		if err != nil {
			return err
		}
		r.pc, r.pkt = pc, r.def.Packet(pc)
		r.pkt.Start()
	}
	d.mu.Lock()
	d.refusing = false
	d.notifyLocked()
	d.mu.Unlock()
	return nil
}

// refreshPacketServers makes the UDP servers anew whose faults (latency,
// espota's switches) changed. It aborts a running session, so a server
// that is not Stale is left alone.
func (d *Device) refreshPacketServers() {
	d.srvMu.Lock()
	defer d.srvMu.Unlock()
	d.mu.Lock()
	srv := d.srv
	refusing := d.refusing
	d.mu.Unlock()
	if srv == nil || refusing {
		return
	}
	for _, r := range srv.list {
		if r.pkt == nil || !r.pkt.Stale() {
			continue
		}
		r.pkt.Stop()
		r.pkt = r.def.Packet(r.pc)
		r.pkt.Start()
	}
}
