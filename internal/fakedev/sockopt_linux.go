//go:build linux

package fakedev

import (
	"net"
	"syscall"
)

// silentConnects: listeners can be made to drop new connects (see quiesce).
const silentConnects = true

// control sets lwIP's receive window on a socket before it listens or
// connects; accepted sockets inherit it.
func control(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, lwipWindow)
	})
	if err != nil {
		return err
	}
	return serr
}

// setBacklog listens again with backlog n: Linux only updates the
// accept-queue limit of a socket that already listens. With n = 0 one
// queued connection fills the queue, and Linux then drops new SYNs, so a
// connect times out exactly as against a rebooting device.
func setBacklog(ln *net.TCPListener, n int) error {
	sc, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := sc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), n) }); err != nil {
		return err
	}
	return lerr
}
