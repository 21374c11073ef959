//go:build windows

package upload

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

func isReset(err error) bool {
	return errors.Is(err, windows.WSAECONNRESET) || errors.Is(err, windows.WSAECONNABORTED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// isAddrNotAvail: no local address to connect from (the interface went
// down), which the runner counts as unreachable.
func isAddrNotAvail(err error) bool { return errors.Is(err, windows.WSAEADDRNOTAVAIL) }
