package sim

import (
	"errors"
	"fmt"
	"net/netip"
)

// The address problems FleetAddrs reports; test with errors.Is (and
// errors.As for *CrossError). ErrNotLoopback (api.go) is one of them.
var (
	// ErrAnyAddress: 0.0.0.0 or :: names no one device.
	ErrAnyAddress = errors.New("every device needs an address of its own, not the any-address")
	// ErrNotUnicast: multicast or the limited broadcast address.
	ErrNotUnicast = errors.New("not a unicast address")
	// ErrNetworkAddress: a first address outside loopback ending in .0 or .255.
	ErrNetworkAddress = errors.New("a network or broadcast address, not a host's")
	// ErrOneIPv6Loopback: ::1 holds one device only.
	ErrOneIPv6Loopback = errors.New("::1 is the only IPv6 loopback address")
	// ErrPastLoopback: counting up left 127.0.0.0/8.
	ErrPastLoopback = errors.New("the devices would run past 127.255.255.254, the last loopback address")
)

// CrossError is a fleet outside loopback that would leave its first
// address's /24 at At: the next network is someone else's.
type CrossError struct{ At netip.Addr }

func (e *CrossError) Error() string {
	return fmt.Sprintf("the devices would cross %s into the next network", e.At)
}

// FleetAddrs counts n device addresses up from first. On loopback the
// count skips .0 and .255 and must stay inside 127.0.0.0/8 (IPv6: ::1 holds
// one device). Outside loopback, which needs allowNonLoopback, the first
// address must be a host's and the fleet stays inside its /24.
func FleetAddrs(first netip.Addr, n int, allowNonLoopback bool) ([]netip.Addr, error) {
	first = first.Unmap()
	switch {
	case !first.IsValid():
		return nil, ErrNotUnicast
	case first.IsUnspecified():
		return nil, ErrAnyAddress
	case first.IsMulticast() || first == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return nil, ErrNotUnicast
	case !first.IsLoopback() && !allowNonLoopback:
		return nil, fmt.Errorf("%s: %w", first, ErrNotLoopback)
	}
	outside := !first.IsLoopback()
	edge := func(ip netip.Addr) bool { return ip.Is4() && (ip.As4()[3] == 0 || ip.As4()[3] == 255) }
	if outside && edge(first) {
		return nil, ErrNetworkAddress
	}
	if !outside && n > 1<<24 {
		return nil, ErrPastLoopback // more than 127.0.0.0/8 holds: fail before allocating
	}
	addrs := make([]netip.Addr, 0, min(n, 1<<10))
	for ip := first; len(addrs) < n; ip = ip.Next() {
		switch {
		case !outside && first.Is6() && ip != first:
			return nil, ErrOneIPv6Loopback
		case !ip.IsValid() || !outside && !ip.IsLoopback():
			return nil, ErrPastLoopback
		case edge(ip) && outside:
			return nil, &CrossError{At: ip}
		case edge(ip):
			continue
		}
		addrs = append(addrs, ip)
	}
	return addrs, nil
}
