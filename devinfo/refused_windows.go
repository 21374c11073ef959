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
