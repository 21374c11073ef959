//go:build !windows

package upload

import (
	"errors"
	"syscall"
)

// IsRefused reports whether err is a refusal: a TCP connect answered with
// RST, or ICMP port unreachable for an earlier datagram on a connected UDP
// socket.
func IsRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

func isUnreachable(err error) bool {
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EADDRNOTAVAIL)
}
