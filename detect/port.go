package detect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// PortKind is what the transport step (a TCP connect, then maybe one empty
// UDP datagram) found at a device's OTA port.
type PortKind string

// The port answers (device-contract.md §1).
const (
	// Accepted: the TCP connect succeeded: something speaks TCP there
	// (HTTP, or ESPHome's native OTA).
	Accepted PortKind = "accepted"
	// Refused: TCP refused, and the UDP port did not say it is closed (or
	// was not asked): ArduinoOTA listens on UDP only.
	Refused PortKind = "refused"
	// Closed: TCP refused and one empty datagram drew ICMP port
	// unreachable: nothing listens at that port, neither HTTP nor espota.
	Closed PortKind = "nothing-listens"
	// Failed: the connect got no answer (silence, no route), or the name
	// did not resolve, or it was interrupted.
	Failed PortKind = "failed"
)

// UDPWait bounds how long the UDP step waits for the ICMP answer. On a LAN
// it comes back in milliseconds; a device that listens answers nothing,
// so this is what probing a live espota device costs.
const UDPWait = time.Second

// PortOptions tune ProbePort. The zero value is usable.
type PortOptions struct {
	// Timeout bounds the TCP connect; 0 = 5 s.
	Timeout time.Duration
	// UDPWait bounds the UDP step; 0 = UDPWait (never longer than Timeout).
	UDPWait time.Duration
	// NoUDP skips the UDP step: a refusal is then Refused. Callers that
	// saw the device in mDNS moments ago need no proof that it is there.
	NoUDP bool
	// Dial opens the TCP connection; nil = a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// PortAnswer is what ProbePort found.
type PortAnswer struct {
	Kind PortKind
	// Addr is the address probed (host:port).
	Addr string
	// Err is the connect's error (nil when Accepted).
	Err error
	// TimedOut: the connect met silence until its timeout, as a rebooting
	// or powered-off device gives.
	TimedOut bool
	// NoRoute: no route to the host (ARP gave up): silence too.
	NoRoute bool
	// Cancelled: the caller cancelled while the connect was under way.
	Cancelled bool
	// UDPAsked: the empty datagram was sent.
	UDPAsked bool
	// Timeout is the connect timeout that applied.
	Timeout time.Duration
}

// Silent reports whether the connect met silence (timed out, no route):
// the device is off or rebooting; a refusal is not silence.
func (p PortAnswer) Silent() bool { return p.TimedOut || p.NoRoute }

// ProbePort is the transport step of the detection table: one TCP connect
// to addr (host:port) and, when it is refused and o.NoUDP is false, one
// empty datagram to the same UDP port. ArduinoOTA ignores an empty datagram
// (its parser finds no command), so no update session starts; an espota
// invitation is never sent to probe.
func ProbePort(ctx context.Context, addr string, o PortOptions) PortAnswer {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Dial == nil {
		d := &net.Dialer{}
		o.Dial = d.DialContext
	}
	cctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, err := o.Dial(cctx, "tcp", addr)
	if err == nil {
		c.Close()
		return PortAnswer{Kind: Accepted, Addr: addr, Timeout: o.Timeout}
	}
	return connectFailure(ctx, addr, err, cctx.Err() != nil, o)
}

// connectFailure reads a failed TCP connect to addr as the port step does:
// refused (then one empty datagram, unless o.NoUDP), silence (timedOut:
// the connect's own deadline passed), no route, or interrupted.
func connectFailure(ctx context.Context, addr string, err error, timedOut bool, o PortOptions) PortAnswer {
	p := PortAnswer{Addr: addr, Timeout: o.Timeout, Err: err}
	if IsRefused(err) {
		p.Kind = Refused
		if !o.NoUDP {
			wait := o.UDPWait
			if wait <= 0 {
				wait = UDPWait
			}
			p.UDPAsked = true
			// Where the TCP connect went, without resolving the name again.
			if UDPClosed(ctx, refusedAddr(err, addr), min(wait, o.Timeout)) {
				p.Kind = Closed
			}
		}
		return p
	}
	p.Kind = Failed
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		p.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		p.Cancelled = !p.TimedOut
	case timedOut, errors.As(err, &ne) && ne.Timeout():
		p.TimedOut = true
	case IsUnreachable(err):
		p.NoRoute = true
	}
	return p
}

// Words says in a few words why the connect failed ("timed out",
// "refused", "cancelled", the system's text), for notes that already name
// the address.
func (p PortAnswer) Words() string {
	switch {
	case p.Kind == Accepted:
		return "accepted"
	case p.Kind == Refused || p.Kind == Closed:
		return "refused"
	case p.Cancelled || errors.Is(p.Err, context.Canceled):
		return "cancelled"
	case p.TimedOut:
		return "timed out"
	case p.Err != nil:
		return connNote(p.Err, false)
	}
	return "failed"
}

// refusedAddr is the address that refused err's connect, so the UDP probe
// goes where the TCP one went; addr when err does not tell.
func refusedAddr(err error, addr string) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		if ta, ok := oe.Addr.(*net.TCPAddr); ok && ta != nil {
			return ta.String()
		}
	}
	return addr
}

// UDPClosed reports whether nothing listens on UDP at addr (host:port):
// one empty datagram, sent on a connected UDP socket, drew an ICMP port
// unreachable within wait (UDPWait when wait <= 0). Silence, or any other
// error, is false: a device may listen there, and ICMP may be filtered.
func UDPClosed(ctx context.Context, addr string, wait time.Duration) bool {
	if wait <= 0 {
		wait = UDPWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	uc, ok := c.(*net.UDPConn)
	if !ok || reportPortUnreachable(uc) != nil {
		return false
	}
	if _, err := uc.Write(nil); err != nil {
		return isPortUnreachable(err)
	}
	dl, _ := ctx.Deadline()
	_ = uc.SetReadDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	// A datagram back is something listening; ArduinoOTA sends none
	// unasked, but whatever answers is not nothing.
	var b [512]byte
	_, err = uc.Read(b[:])
	return err != nil && isPortUnreachable(err)
}

// FailKind is why detection found no device to decide for.
type FailKind string

// The failure kinds.
const (
	// FailNothingListens: TCP refused and the UDP port unreachable.
	FailNothingListens FailKind = "nothing-listens"
	// FailUnreachable: no answer at all (silence, no route).
	FailUnreachable FailKind = "unreachable"
	// FailUnresolved: the host name did not resolve.
	FailUnresolved FailKind = "unresolved"
	// FailNetwork: another connect error.
	FailNetwork FailKind = "network"
	// FailInterrupted: the caller cancelled.
	FailInterrupted FailKind = "interrupted"
)

// Failure is a device detection could not decide for because nothing
// usable answered. Reason is one line for the user.
type Failure struct {
	Kind   FailKind
	Reason string
	Err    error
}

func (f *Failure) Error() string { return f.Reason }
func (f *Failure) Unwrap() error { return f.Err }

// failure words a failed port answer for the user (one line, no chain).
func (p PortAnswer) failure() *Failure {
	addr := p.Addr
	var dnsErr *net.DNSError
	switch {
	case p.Kind == Closed:
		return &Failure{Kind: FailNothingListens, Err: p.Err,
			Reason: "nothing listens at " + addr + ": TCP refused and the UDP port is unreachable, so it is neither an HTTP nor an espota device (check the address and port)"}
	case p.Cancelled:
		return &Failure{Kind: FailInterrupted, Err: context.Canceled, Reason: "interrupted while probing " + addr}
	case errors.As(p.Err, &dnsErr):
		return &Failure{Kind: FailUnresolved, Err: p.Err, Reason: fmt.Sprintf("cannot resolve %s: %s", dnsErr.Name, ResolverReason(dnsErr))}
	case p.NoRoute:
		return &Failure{Kind: FailUnreachable, Err: p.Err,
			Reason: fmt.Sprintf("no route to %s: the device is not on a network this host reaches; cannot tell HTTP from espota until it answers", addr)}
	case p.TimedOut:
		return &Failure{Kind: FailUnreachable, Err: p.Err,
			Reason: fmt.Sprintf("no answer from %s within %v: the device is off, rebooting or out of reach; cannot tell HTTP from espota until it answers", addr, p.Timeout)}
	}
	return &Failure{Kind: FailNetwork, Err: p.Err, Reason: fmt.Sprintf("cannot connect to %s: %s", addr, p.Words())}
}

// ResolverReason words the system resolver's failure in a few words: Go's
// text carries the dial chain ("dial udp 10.0.0.53:53: connect: network is
// unreachable"), of which a user can act on the last part only.
func ResolverReason(e *net.DNSError) string {
	switch {
	case e.IsNotFound:
		return "the system resolver has no such name"
	case e.IsTimeout:
		return "the system resolver timed out"
	case strings.Contains(e.Err, "dial ") || strings.Contains(e.Err, "connect: "):
		return "the system resolver could not reach a DNS server (" + lastPart(e.Err) + ")"
	}
	return "system resolver: " + lastPart(e.Err)
}

// lastPart is the innermost message of an "a: b: c" chain.
func lastPart(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}
