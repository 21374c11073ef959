package sim

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestFleetAddrsCount(t *testing.T) {
	ips := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	for _, tc := range []struct {
		first string
		n     int
		allow bool
		want  []netip.Addr
		err   error
		cross string
	}{
		{first: "127.0.11.2", n: 2, want: ips("127.0.11.2", "127.0.11.3")},
		{first: "127.0.11.254", n: 3, want: ips("127.0.11.254", "127.0.12.1", "127.0.12.2")}, // skips .255 and .0
		{first: "::ffff:127.0.11.2", n: 1, want: ips("127.0.11.2")},
		{first: "::1", n: 1, want: ips("::1")},
		{first: "::1", n: 2, err: ErrOneIPv6Loopback},
		{first: "127.255.255.254", n: 2, err: ErrPastLoopback},
		{first: "127.0.0.2", n: 2_000_000_000, err: ErrPastLoopback}, // refused before any allocation
		{first: "0.0.0.0", n: 1, allow: true, err: ErrAnyAddress},
		{first: "::", n: 1, allow: true, err: ErrAnyAddress},
		{first: "224.0.0.251", n: 1, allow: true, err: ErrNotUnicast},
		{first: "255.255.255.255", n: 1, allow: true, err: ErrNotUnicast},
		{first: "192.0.2.1", n: 1, err: ErrNotLoopback},
		{first: "192.0.2.1", n: 2, allow: true, want: ips("192.0.2.1", "192.0.2.2")},
		{first: "192.0.2.0", n: 1, allow: true, err: ErrNetworkAddress},
		{first: "192.0.2.253", n: 3, allow: true, cross: "192.0.2.255"},
	} {
		got, err := FleetAddrs(netip.MustParseAddr(tc.first), tc.n, tc.allow)
		var ce *CrossError
		switch {
		case tc.cross != "":
			if !errors.As(err, &ce) || ce.At.String() != tc.cross {
				t.Errorf("%s ×%d: %v, want a CrossError at %s", tc.first, tc.n, err, tc.cross)
			}
		case tc.err != nil:
			if !errors.Is(err, tc.err) {
				t.Errorf("%s ×%d: %v, want %v", tc.first, tc.n, err, tc.err)
			}
		case err != nil || !slices.Equal(got, tc.want):
			t.Errorf("%s ×%d = %v, %v; want %v", tc.first, tc.n, got, err, tc.want)
		}
	}
}
