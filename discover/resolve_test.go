package discover

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestResolveLocal(t *testing.T) {
	ifi := mdnsLoopback(t)
	startFleet(t, ifi, 2, "127.43.7.2", "resolve", uniqueInstances("resolve"))
	osCalls := 0
	r := &Resolver{Config: loCfg(ifi), LookupOS: func(context.Context, string) ([]netip.Addr, error) {
		osCalls++
		return nil, &net.DNSError{Err: "no such host", IsNotFound: true}
	}}
	start := time.Now()
	addrs, err := r.Lookup(context.Background(), "resolve-02.local")
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0] != netip.MustParseAddr("127.43.7.3") {
		t.Fatalf("addrs %v", addrs)
	}
	t.Logf("resolved in %v", time.Since(start))
	// Cached: no second query needed (the fleet is gone, the answer stays).
	addrs2, err := r.Lookup(context.Background(), "RESOLVE-02.local.")
	if err != nil || len(addrs2) != 1 {
		t.Fatalf("cached lookup: %v %v", addrs2, err)
	}
	if osCalls != 0 {
		t.Errorf("OS resolver asked %d times", osCalls)
	}

	// A name nobody answers: mDNS times out, the OS resolver does not know
	// it either; the error says what to try.
	r.Timeout = 300 * time.Millisecond
	_, err = r.Lookup(context.Background(), "nobody-here.local")
	var re *ResolveError
	if !errors.As(err, &re) || osCalls != 1 {
		t.Fatalf("err %v, OS calls %d", err, osCalls)
	}
	for _, want := range []string{"cannot resolve nobody-here.local", "no mDNS answer", "system resolver has no such name", "--interface", "IP address", "inventory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestResolveLiteralAndOS(t *testing.T) {
	r := &Resolver{LookupOS: func(_ context.Context, h string) ([]netip.Addr, error) {
		if h == "ota.example" {
			return []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.7")}, nil
		}
		return nil, errors.New("boom")
	}}
	if a, err := r.Lookup(context.Background(), "192.0.2.1"); err != nil || a[0].String() != "192.0.2.1" {
		t.Errorf("literal: %v %v", a, err)
	}
	if a, err := r.Lookup(context.Background(), "ota.example"); err != nil || a[0].String() != "192.0.2.7" {
		t.Errorf("OS: %v %v", a, err)
	}
	if _, err := r.Lookup(context.Background(), "other.example"); err == nil || !strings.Contains(err.Error(), "system resolver: boom") {
		t.Errorf("error %v", err)
	}
	if !IsLocal("a.local.") || IsLocal(".local") || IsLocal("a.example") {
		t.Error("IsLocal")
	}
}

// TestOSReason: a system resolver's failure is a few words, never Go's dial
// chain (review 68 #9).
func TestOSReason(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&net.DNSError{Err: "dial udp 10.255.255.53:53: connect: network is unreachable", Name: "x.local"}, "the system resolver could not reach a DNS server (network is unreachable)"},
		{&net.DNSError{Err: "no such host", Name: "x.local", IsNotFound: true}, "the system resolver has no such name"},
		{&net.DNSError{Err: "i/o timeout", Name: "x.local", IsTimeout: true}, "the system resolver timed out"},
		{nil, "the system resolver returned no address"},
	} {
		got := osReason(tt.err)
		if got != tt.want || strings.Contains(got, "dial") || strings.Contains(got, "10.255") {
			t.Errorf("osReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
