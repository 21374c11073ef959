package detect

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/internal/testnet"
)

func TestUDPClosed(t *testing.T) {
	dead := testnet.DeadAddr(t)
	if !UDPClosed(context.Background(), dead, 5*time.Second) {
		t.Errorf("%s: nothing listens, but UDPClosed says something may", dead)
	}
	live, got := testnet.QuietUDP(t)
	if UDPClosed(context.Background(), live, 200*time.Millisecond) {
		t.Errorf("%s: a socket listens, but UDPClosed says nothing does", live)
	}
	// The probe is one empty datagram: never an invitation.
	if g := got(); len(g) != 1 || len(g[0]) != 0 {
		t.Errorf("the listener got %q, want one empty datagram", g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if UDPClosed(ctx, dead, time.Second) {
		t.Error("a cancelled probe says nothing listens")
	}
}

// TestProbePort: the transport step's four answers, on real loopback
// sockets.
func TestProbePort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	live, got := testnet.QuietUDP(t)
	dead := testnet.DeadAddr(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		addr string
		o    PortOptions
		want PortKind
		udp  bool
	}{
		{"accepted", ln.Addr().String(), PortOptions{Timeout: time.Second}, Accepted, false},
		{"refused, UDP quiet", live, PortOptions{Timeout: time.Second}, Refused, true},
		{"refused, UDP unreachable", dead, PortOptions{Timeout: time.Second}, Closed, true},
		{"refused, UDP not asked", dead, PortOptions{Timeout: time.Second, NoUDP: true}, Refused, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ProbePort(ctx, tc.addr, tc.o)
			if p.Kind != tc.want || p.UDPAsked != tc.udp || p.Addr != tc.addr {
				t.Fatalf("got %+v, want %s (udp %v)", p, tc.want, tc.udp)
			}
		})
	}
	if g := got(); len(g) != 1 || len(g[0]) != 0 {
		t.Errorf("the espota port got %q, want one empty datagram", g)
	}
	// A silent connect is a failure of its own, never espota.
	silent := func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
	}
	p := ProbePort(ctx, "192.0.2.1:3232", PortOptions{Timeout: 50 * time.Millisecond, Dial: silent})
	f := p.failure()
	if p.Kind != Failed || !p.Silent() || f.Kind != FailUnreachable || !strings.HasPrefix(f.Reason, "no answer from 192.0.2.1:3232 within 50ms") {
		t.Fatalf("silent: %+v, %+v", p, f)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	p = ProbePort(cctx, "192.0.2.1:3232", PortOptions{Timeout: time.Second, Dial: silent})
	if f := p.failure(); f.Kind != FailInterrupted || !errors.Is(f, context.Canceled) || p.Words() != "cancelled" {
		t.Fatalf("cancelled: %+v, %+v", p, f)
	}
	dnsErr := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}}
	p = PortAnswer{Kind: Failed, Addr: "x.invalid:3232", Err: dnsErr}
	if f := p.failure(); f.Kind != FailUnresolved || f.Reason != "cannot resolve x.invalid: the system resolver has no such name" {
		t.Fatalf("unresolved: %+v", f)
	}
}
