package mdnsd

import (
	"net"
	"syscall"
)

// ipMulticastAll is IP_MULTICAST_ALL from <linux/in.h>; package syscall
// lacks it.
const ipMulticastAll = 49

// restrictMulticastAll clears IP_MULTICAST_ALL: by default Linux hands a
// socket bound to the wildcard address the traffic of every group any
// socket joined on any interface, not just the groups it joined itself.
func restrictMulticastAll(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipMulticastAll, 0)
	}); err != nil {
		return err
	}
	return serr
}

// bindToDevice ties the socket to the named interface (SO_BINDTODEVICE)
// before it is bound, so it neither receives from nor sends through any
// other. Linux ≥ 5.7 allows this without privileges; older kernels need
// CAP_NET_RAW. It reports whether it worked; the other safeguards remain
// either way.
func bindToDevice(c syscall.RawConn, name string) bool {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, name)
	}); err != nil {
		return false
	}
	return serr == nil
}
