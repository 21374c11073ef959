//go:build !linux

package sim

import "syscall"

// lwipSockopts is Linux-only: elsewhere the sim's sockets keep the OS's
// receive window, so the erase stall shows later (docs/device-behaviour.md).
func lwipSockopts(_, _ string, _ syscall.RawConn) error { return nil }
