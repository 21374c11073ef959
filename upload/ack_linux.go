//go:build linux

package upload

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// unacked is the number of bytes in the socket's send queue not yet
// acknowledged by the peer (SIOCOUTQ, tcp(7)).
func unacked(raw syscall.RawConn) (int, bool) {
	var n int
	var err error
	if cerr := raw.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); cerr != nil || err != nil {
		return 0, false
	}
	return n, true
}
