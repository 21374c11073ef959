//go:build linux

package testkit

import "syscall"

// DeviceWindow is lwIP's default TCP receive window
// (CONFIG_LWIP_TCP_WND_DEFAULT, device-contract.md §5).
const DeviceWindow = 5760

// SmallWindow sets a device-sized receive buffer on a socket (a
// net.ListenConfig or net.Dialer Control).
func SmallWindow(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, DeviceWindow)
	}); err != nil {
		return err
	}
	return serr
}
