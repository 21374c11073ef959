//go:build !windows

package detect

import (
	"errors"
	"net"
	"syscall"
)

// IsRefused reports whether err is a refused TCP connect.
func IsRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// IsUnreachable reports whether err is "no route to the device": ARP gave
// up on a host that is off or rebooting.
func IsUnreachable(err error) bool {
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// IsReset reports whether err is a connection the peer reset or broke.
func IsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// isPortUnreachable: a connected UDP socket's read or write after an ICMP
// port unreachable.
func isPortUnreachable(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// reportPortUnreachable: Unix reports ICMP port unreachable on a connected
// UDP socket by itself.
func reportPortUnreachable(*net.UDPConn) error { return nil }
