//go:build linux

package testnet

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// SilentAddr is a loopback host:port that neither accepts nor refuses: a
// listener with a backlog of 0 whose one queue slot is taken, so the
// kernel drops further SYNs and connects time out, as with a device that
// is rebooting. It skips the test where the kernel does not behave so.
func SilentAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	a := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue; further SYNs are dropped.
	for range 4 {
		c, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
		if err != nil {
			return a
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("cannot make a silent loopback port on this kernel")
	return ""
}
