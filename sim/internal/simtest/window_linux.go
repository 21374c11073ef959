package simtest

import (
	"net"
	"sync/atomic"
	"syscall"
	"testing"
)

// MaxInFlight bounds what a client may have written before the device
// stalls it: its own send buffer and the device's window, with room to spare.
const MaxInFlight = 64 << 10

// SetSndbuf fixes c's SO_SNDBUF at n (Linux doubles it).
func SetSndbuf(t *testing.T, c net.Conn, n int) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
	}); err != nil || serr != nil {
		t.Fatalf("SO_SNDBUF: %v %v", err, serr)
	}
}

// WriteCounting writes p in 1 KiB pieces and adds what the socket took to n.
func WriteCounting(c net.Conn, p []byte, n *atomic.Int64) error {
	for off := 0; off < len(p); off += 1024 {
		m, err := c.Write(p[off:min(off+1024, len(p))])
		n.Add(int64(m))
		if err != nil {
			return err
		}
	}
	return nil
}
