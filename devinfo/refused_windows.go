//go:build windows

package devinfo

import (
	"errors"
	"syscall"
)

// wsaeconnrefused is WSAECONNREFUSED, which Go's syscall.ECONNREFUSED does
// not match on Windows.
const wsaeconnrefused = syscall.Errno(10061)

func isRefused(err error) bool {
	return errors.Is(err, wsaeconnrefused) || errors.Is(err, syscall.ECONNREFUSED)
}

// WSAEHOSTUNREACH and WSAENETUNREACH: no route to the device.
const (
	wsaehostunreach = syscall.Errno(10065)
	wsaenetunreach  = syscall.Errno(10051)
)

func isUnreachable(err error) bool {
	return errors.Is(err, wsaehostunreach) || errors.Is(err, wsaenetunreach) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}
