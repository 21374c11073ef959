package detect

import (
	"context"
	"net"
	"strconv"
	"time"
)

// Target is where to probe: a device's host, its upload (OTA) port and
// its web port.
type Target struct {
	// Host is an IP address or a name the system resolves.
	Host string
	// Port is the upload port: the OTA port, or a URL's port; 0 = 3232.
	Port int
	// WebPort is the web server's port; 0 = 80, negative = none.
	WebPort int
}

func (t Target) addr(web bool) string {
	port := t.Port
	if port == 0 {
		port = 3232
	}
	if web {
		port = t.WebPort
		if port == 0 {
			port = 80
		}
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(port))
}

// Detector sends the probes Decide asks for. The zero value is usable.
type Detector struct {
	// ConnectTimeout bounds each TCP connect; 0 = 5 s.
	ConnectTimeout time.Duration
	// RequestTimeout bounds each HTTP probe, connect included; 0 = 3 s.
	RequestTimeout time.Duration
	// UDPWait bounds the UDP step; 0 = UDPWait.
	UDPWait time.Duration
	// Dial opens TCP connections; nil = a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnProbe, when set, is told of every probe before it is sent (logs).
	OnProbe func(addr string, p Probe)

	// decide is Decide; tests replace it to check that nothing outside
	// the allowed probes is ever sent.
	decide func(Evidence) Decision
}

// maxSteps bounds the probes of one detection: the ladder has fewer.
const maxSteps = 16

// Detect decides for one device: Decide on the evidence, sending each
// probe it asks for, until it decides. The Decision is final: a protocol
// to send with, a refusal, or a Failure.
func (d *Detector) Detect(ctx context.Context, t Target, ev Evidence) Decision {
	dial := d.Dial
	if dial == nil {
		nd := &net.Dialer{}
		dial = nd.DialContext
	}
	connect := d.ConnectTimeout
	if connect <= 0 {
		connect = 5 * time.Second
	}
	reqTimeout := d.RequestTimeout
	if reqTimeout <= 0 {
		reqTimeout = 3 * time.Second
	}
	if t.WebPort < 0 {
		ev.NoWeb = true
	}
	decide := d.decide
	if decide == nil {
		decide = Decide
	}
	for range maxSteps {
		dec := decide(ev)
		if dec.Need == nil {
			return dec
		}
		if ctx.Err() != nil {
			return interrupted(ctx, t)
		}
		s := *dec.Need
		addr := t.addr(s.Web)
		if !Allowed(s.Probe) {
			// Nothing outside the list is ever sent, whatever the table
			// asks; a test of every family fails on this refusal.
			return Decision{Refused: true, Why: "detection asked for " + s.Probe.String() + ", which is not one of its read-only probes; nothing sent (a bug in ots-ota: please report it)"}
		}
		if d.OnProbe != nil {
			d.OnProbe(addr, s.Probe)
		}
		switch s.Probe.Kind {
		case KindTCP:
			pa := ProbePort(ctx, addr, PortOptions{Timeout: connect, UDPWait: d.UDPWait, Dial: dial})
			if pa.UDPAsked && d.OnProbe != nil {
				d.OnProbe(addr, probeUDP)
			}
			ev = ev.WithPort(pa)
		case KindHTTP:
			a := request(ctx, dial, addr, s.Probe, min(connect, reqTimeout), reqTimeout)
			if a.connErr != nil && !s.Web && ev.port == nil && len(ev.answers) == 0 {
				// The first packet to the upload port, on a path that
				// skipped the port probe: its connect tells what the port
				// probe would have, so that a silent device costs one
				// connect timeout, not a second one in the transport.
				pa := connectFailure(ctx, addr, a.connErr, a.connTimedOut, PortOptions{Timeout: min(connect, reqTimeout), UDPWait: d.UDPWait})
				if pa.UDPAsked && d.OnProbe != nil {
					d.OnProbe(addr, probeUDP)
				}
				ev = ev.WithPort(pa)
				break
			}
			ev = ev.WithAnswer(s, a)
		default:
			// Decide asks for TCP and HTTP probes only; mDNS is the caller's.
			return Decision{Failure: &Failure{Kind: FailNetwork, Reason: "cannot probe " + addr + " with " + s.Probe.String()}}
		}
		if ctx.Err() != nil {
			// A probe cut by the interrupt is no answer to decide on.
			return interrupted(ctx, t)
		}
	}
	// Not reached: the table settles in fewer steps. Sending nothing is the
	// safe answer if it ever does not.
	return Decision{Refused: true, Probed: true, Why: "detection did not settle after " + strconv.Itoa(maxSteps) + " probes; nothing sent"}
}

func interrupted(ctx context.Context, t Target) Decision {
	return Decision{Failure: &Failure{Kind: FailInterrupted, Err: ctx.Err(), Reason: "interrupted while probing " + t.addr(false)}}
}
