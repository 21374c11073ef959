//go:build !windows

package upload

import (
	"errors"
	"syscall"
)

// isAddrNotAvail: no local address to connect from (the interface went
// down), which the runner counts as unreachable.
func isAddrNotAvail(err error) bool { return errors.Is(err, syscall.EADDRNOTAVAIL) }
