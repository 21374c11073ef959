//go:build !linux

package core

import "syscall"

// LWIPSockopts is Linux-only: elsewhere the sim's sockets keep the OS's
// receive window, so the erase stall shows later (docs/device-behaviour.md).
func LWIPSockopts(_, _ string, _ syscall.RawConn) error { return nil }
