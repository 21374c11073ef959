//go:build !windows

package devinfo

import (
	"errors"
	"net"
	"syscall"
)

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// isUnreachable: no route to the device (ARP gave up on a host that is off
// or rebooting).
func isUnreachable(err error) bool {
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// isPortUnreachable: a connected UDP socket's read or write after an ICMP
// port unreachable.
func isPortUnreachable(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// reportPortUnreachable: Unix reports ICMP port unreachable on a connected
// UDP socket by itself.
func reportPortUnreachable(*net.UDPConn) error { return nil }
