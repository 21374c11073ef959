//go:build !linux

package fakedev

import (
	"net"
	"syscall"
)

// silentConnects: elsewhere a rebooting fake only stops accepting, so
// connects succeed and then hang instead of timing out.
const silentConnects = false

// control is a no-op: the receive window is set on Linux only.
func control(_, _ string, _ syscall.RawConn) error { return nil }

func setBacklog(*net.TCPListener, int) error { return nil }
