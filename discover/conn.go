package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/ots-ota/ots-ota/internal/ifaceguard"
)

const mdnsPort = 5353

var (
	group4 = netip.AddrPortFrom(netip.AddrFrom4([4]byte{224, 0, 0, 251}), mdnsPort)
	group6 = netip.AddrPortFrom(netip.MustParseAddr("ff02::fb"), mdnsPort)
)

// rawPacket is a datagram as read, before parsing: readers only copy, so
// the socket's buffer drains as fast as it fills when a fleet answers at once.
type rawPacket struct {
	b    []byte
	ifi  *net.Interface
	src  netip.AddrPort
	when time.Time
}

// packet is one received mDNS message.
type packet struct {
	msg  *dns.Msg
	ifi  *net.Interface
	src  netip.AddrPort
	when time.Time
}

// mconn is one socket: one interface, one address family. Go mDNS
// libraries that share a socket across interfaces see nothing on Windows
// (anchors.md §3.2); one socket per interface, joined and pinned to it,
// works everywhere.
type mconn struct {
	ifi    *net.Interface
	v6     bool
	legacy bool // bound to an ephemeral port: only unicast replies reach it
	conn   *net.UDPConn
	p4     *ipv4.PacketConn
	p6     *ipv6.PacketConn
	cmOK   bool
	log    *slog.Logger
	// maxQuery is the largest query this interface carries unfragmented
	// (its MTU less IP and UDP headers, at most mDNS's 9000 bytes).
	maxQuery int
}

func maxQueryFor(ifi *net.Interface, v6 bool) int {
	hdr := 28
	if v6 {
		hdr = 48
	}
	return min(max(ifi.MTU-hdr, 512), 9000)
}

// openConns opens an IPv4 and (unless v4only) an IPv6 socket on each
// interface. It fails only when no socket at all could be opened.
func openConns(ifs []*net.Interface, v4only bool, log *slog.Logger) ([]*mconn, error) {
	var out []*mconn
	var errs []error
	for _, ifi := range ifs {
		c, err := open4(ifi, log)
		if err != nil {
			errs = append(errs, err)
			log.Debug("mdns: no IPv4 socket", "iface", ifi.Name, "err", err)
		} else {
			out = append(out, c)
		}
		if v4only || !hasIPv6(ifi) {
			continue
		}
		c6, err := open6(ifi, log)
		if err != nil {
			log.Debug("mdns: no IPv6 socket", "iface", ifi.Name, "err", err)
			continue
		}
		out = append(out, c6)
	}
	if len(out) == 0 {
		if len(errs) == 0 {
			return nil, errors.New("no usable network interface")
		}
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func hasIPv6(ifi *net.Interface) bool {
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() == nil {
			return true
		}
	}
	return false
}

func listen(network, addr string, ifi *net.Interface) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		bindToDevice(c, ifi.Name)
		return nil
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("unexpected socket type %T", pc)
	}
	_ = uc.SetReadBuffer(1 << 20) // a fleet answers at once
	return uc, nil
}

func open4(ifi *net.Interface, log *slog.Logger) (*mconn, error) {
	// Binding the group address makes Go bind the port's wildcard address
	// with SO_REUSEADDR (and SO_REUSEPORT where it exists), so we share
	// 5353 with the system's responder.
	uc, err := listen("udp4", group4.String(), ifi)
	legacy := false
	if err != nil {
		// Port 5353 taken exclusively: one-shot queries from an ephemeral
		// port still get (unicast) answers (RFC 6762 §5.1).
		log.Debug("mdns: port 5353 unavailable, using one-shot queries", "iface", ifi.Name, "err", err)
		if uc, err = listen("udp4", "0.0.0.0:0", ifi); err != nil {
			return nil, fmt.Errorf("open mDNS socket on %s: %w", ifi.Name, err)
		}
		legacy = true
	}
	c := &mconn{ifi: ifi, conn: uc, p4: ipv4.NewPacketConn(uc), legacy: legacy, log: log, maxQuery: maxQueryFor(ifi, false)}
	fail := func(what string, err error) (*mconn, error) {
		uc.Close()
		return nil, fmt.Errorf("mDNS socket on %s: %s: %w", ifi.Name, what, err)
	}
	if !legacy {
		if err := c.p4.JoinGroup(ifi, net.UDPAddrFromAddrPort(group4)); err != nil {
			return fail("join 224.0.0.251", err)
		}
		restrictMulticastAll(uc, false)
	}
	if err := c.p4.SetMulticastInterface(ifi); err != nil {
		return fail("set multicast interface", err)
	}
	// Responders on this host (the simulator) hear us only through loopback.
	_ = c.p4.SetMulticastLoopback(true)
	_ = c.p4.SetMulticastTTL(255)
	c.cmOK = c.p4.SetControlMessage(ipv4.FlagInterface, true) == nil
	return c, nil
}

func open6(ifi *net.Interface, log *slog.Logger) (*mconn, error) {
	uc, err := listen("udp6", "[ff02::fb]:5353", ifi)
	if err != nil {
		return nil, fmt.Errorf("open mDNS IPv6 socket on %s: %w", ifi.Name, err)
	}
	c := &mconn{ifi: ifi, v6: true, conn: uc, p6: ipv6.NewPacketConn(uc), log: log, maxQuery: maxQueryFor(ifi, true)}
	fail := func(what string, err error) (*mconn, error) {
		uc.Close()
		return nil, fmt.Errorf("mDNS IPv6 socket on %s: %s: %w", ifi.Name, what, err)
	}
	if err := c.p6.JoinGroup(ifi, net.UDPAddrFromAddrPort(group6)); err != nil {
		return fail("join ff02::fb", err)
	}
	restrictMulticastAll(uc, true)
	if err := c.p6.SetMulticastInterface(ifi); err != nil {
		return fail("set multicast interface", err)
	}
	_ = c.p6.SetMulticastLoopback(true)
	_ = c.p6.SetMulticastHopLimit(255)
	c.cmOK = c.p6.SetControlMessage(ipv6.FlagInterface, true) == nil
	return c, nil
}

// send multicasts b on the socket's interface.
func (c *mconn) send(b []byte) error {
	var err error
	if c.v6 {
		dst := &net.UDPAddr{IP: group6.Addr().AsSlice(), Port: mdnsPort, Zone: c.ifi.Name}
		if _, err = c.p6.WriteTo(b, &ipv6.ControlMessage{IfIndex: c.ifi.Index}, dst); err != nil {
			_, err = c.p6.WriteTo(b, nil, dst)
		}
	} else {
		dst := net.UDPAddrFromAddrPort(group4)
		if _, err = c.p4.WriteTo(b, &ipv4.ControlMessage{IfIndex: c.ifi.Index}, dst); err != nil {
			_, err = c.p4.WriteTo(b, nil, dst)
		}
	}
	if err != nil {
		return fmt.Errorf("send on %s: %w", c.ifi.Name, err)
	}
	return nil
}

// read hands every datagram that arrived on the socket's interface to out
// until the socket is closed.
func (c *mconn) read(out chan<- rawPacket, done <-chan struct{}) {
	buf := make([]byte, 9000+512)
	errs := 0
	for {
		var n, ifIndex int
		var src net.Addr
		var err error
		if c.v6 {
			var cm *ipv6.ControlMessage
			n, cm, src, err = c.p6.ReadFrom(buf)
			if cm != nil {
				ifIndex = cm.IfIndex
			}
		} else {
			var cm *ipv4.ControlMessage
			n, cm, src, err = c.p4.ReadFrom(buf)
			if cm != nil {
				ifIndex = cm.IfIndex
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			// Windows reports ICMP port unreachable on the next read; bound
			// a run of errors rather than spin.
			if errs++; errs > 100 {
				c.log.Debug("mdns: giving up reading", "iface", c.ifi.Name, "err", err)
				return
			}
			continue
		}
		errs = 0
		if c.cmOK && ifIndex != 0 && ifIndex != c.ifi.Index {
			continue // arrived on another interface
		}
		ua, ok := src.(*net.UDPAddr)
		if !ok || n < 12 {
			continue
		}
		ap := ua.AddrPort()
		select {
		case out <- rawPacket{b: append([]byte(nil), buf[:n]...), ifi: c.ifi, src: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), when: time.Now()}:
		case <-done:
			return
		}
	}
}

// parse turns datagrams into responses for the session, dropping queries
// (our own loop back), malformed messages and other opcodes.
func parse(in <-chan rawPacket, out chan<- packet, done <-chan struct{}) {
	for {
		var r rawPacket
		select {
		case r = <-in:
		case <-done:
			return
		}
		m := new(dns.Msg)
		if m.Unpack(r.b) != nil || !m.Response || m.Opcode != dns.OpcodeQuery || m.Rcode != dns.RcodeSuccess {
			continue
		}
		select {
		case out <- packet{msg: m, ifi: r.ifi, src: r.src, when: r.when}:
		case <-done:
			return
		}
	}
}

func (c *mconn) close() { c.conn.Close() }

// Interfaces returns the interfaces mDNS uses by default: every one that is
// up and multicast-capable. Loopback is included only when it has the
// MULTICAST flag. When OTS_OTA_TEST_IFACES is set, only those it names.
func Interfaces() ([]*net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var out []*net.Interface
	for i := range all {
		ifi := &all[i]
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
			out = append(out, ifi)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no network interface is up and multicast-capable")
	}
	if out = ifaceguard.Filter(out); len(out) == 0 {
		names, _ := ifaceguard.Allowed()
		return nil, fmt.Errorf("none of the interfaces in %s=%s is up and multicast-capable", ifaceguard.Env, strings.Join(names, ","))
	}
	return out, nil
}

// InterfacesByName looks up named interfaces (for --interface), checking
// that each is up and multicast-capable.
func InterfacesByName(names []string) ([]*net.Interface, error) {
	var out []*net.Interface
	for _, n := range names {
		ifi, err := net.InterfaceByName(n)
		if err != nil {
			return nil, fmt.Errorf("no network interface %q", n)
		}
		if err := ifaceguard.Check(n); err != nil {
			return nil, err
		}
		if ifi.Flags&net.FlagUp == 0 {
			return nil, fmt.Errorf("network interface %s is down", n)
		}
		if ifi.Flags&net.FlagMulticast == 0 {
			return nil, fmt.Errorf("network interface %s is not multicast-capable%s", n, multicastHint(n))
		}
		out = append(out, ifi)
	}
	return out, nil
}
