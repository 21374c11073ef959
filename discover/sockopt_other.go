//go:build !linux

package discover

import (
	"net"
	"syscall"
)

// restrictMulticastAll: only Linux delivers other sockets' groups.
func restrictMulticastAll(*net.UDPConn, bool) {}

// bindToDevice: Linux only; the join, IP_MULTICAST_IF and the arrival
// check confine the socket elsewhere.
func bindToDevice(syscall.RawConn, string) {}

func multicastHint(string) string { return "" }
