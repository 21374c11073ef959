//go:build !linux

package mdnsd

import (
	"net"
	"syscall"
)

// restrictMulticastAll is a no-op: only Linux delivers other sockets' group
// traffic to a socket (IP_MULTICAST_ALL).
func restrictMulticastAll(*net.UDPConn) error { return nil }

// bindToDevice is Linux-only; elsewhere the arrival-interface filter and
// IP_MULTICAST_IF confine the responder to its interface.
func bindToDevice(syscall.RawConn, string) bool { return false }
