//go:build darwin

package upload

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// unacked is the number of bytes in the socket's send buffer not yet
// acknowledged by the peer (SO_NWRITE, macOS getsockopt).
func unacked(raw syscall.RawConn) (int, bool) {
	var n int
	var err error
	if cerr := raw.Control(func(fd uintptr) { n, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NWRITE) }); cerr != nil || err != nil {
		return 0, false
	}
	return n, true
}
