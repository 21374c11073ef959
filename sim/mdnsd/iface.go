package mdnsd

import (
	"errors"
	"fmt"
	"net"
	"runtime"
)

// LoopbackInterface returns the loopback interface. It fails when there is
// none, when it is down, or when it lacks the MULTICAST flag (wrapping
// ErrNoMulticast) — the Linux default, fixed with "ip link set lo multicast
// on".
func LoopbackInterface() (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	for i := range ifs {
		ifi := &ifs[i]
		if ifi.Flags&net.FlagLoopback == 0 {
			continue
		}
		if ifi.Flags&net.FlagUp == 0 {
			return nil, fmt.Errorf("loopback interface %s is down", ifi.Name)
		}
		if ifi.Flags&net.FlagMulticast == 0 {
			return nil, fmt.Errorf("loopback interface %s: %w%s", ifi.Name, ErrNoMulticast, multicastHint(ifi))
		}
		return ifi, nil
	}
	return nil, errors.New("no loopback interface found")
}

func multicastHint(ifi *net.Interface) string {
	if runtime.GOOS == "linux" {
		return fmt.Sprintf(" (try: ip link set %s multicast on)", ifi.Name)
	}
	return ""
}
