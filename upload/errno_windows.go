//go:build windows

package upload

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

// IsRefused reports whether err is a refusal: a TCP connect answered with
// RST, or ICMP port unreachable for an earlier datagram on a connected UDP
// socket.
func IsRefused(err error) bool {
	return errors.Is(err, windows.WSAECONNREFUSED) || errors.Is(err, syscall.ECONNREFUSED)
}

func isReset(err error) bool {
	return errors.Is(err, windows.WSAECONNRESET) || errors.Is(err, windows.WSAECONNABORTED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isUnreachable(err error) bool {
	return errors.Is(err, windows.WSAEHOSTUNREACH) || errors.Is(err, windows.WSAENETUNREACH) || errors.Is(err, windows.WSAEADDRNOTAVAIL)
}
