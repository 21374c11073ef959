package discover

import (
	"net"
	"runtime"
	"syscall"
)

// Values from <linux/in.h> and <linux/in6.h>; package syscall lacks them.
const (
	ipMulticastAll   = 49
	ipv6MulticastAll = 29
)

// restrictMulticastAll clears IP_MULTICAST_ALL: by default Linux hands a
// socket bound to the wildcard address the traffic of every group joined by
// any socket on any interface, which would defeat one socket per interface.
func restrictMulticastAll(c *net.UDPConn, v6 bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if v6 {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, ipv6MulticastAll, 0)
		} else {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipMulticastAll, 0)
		}
	})
}

// bindToDevice ties the socket to one interface (SO_BINDTODEVICE) where the
// kernel allows it (Linux ≥ 5.7, or CAP_NET_RAW); the group join,
// IP_MULTICAST_IF and the arrival-interface check confine it otherwise.
func bindToDevice(c syscall.RawConn, name string) {
	_ = c.Control(func(fd uintptr) {
		_ = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, name)
	})
}

func multicastHint(name string) string {
	if runtime.GOOS == "linux" {
		return " (try: ip link set " + name + " multicast on)"
	}
	return ""
}
