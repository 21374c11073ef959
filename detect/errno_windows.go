//go:build windows

package detect

import (
	"errors"
	"net"
	"syscall"
	"unsafe"
)

// wsaeconnrefused is WSAECONNREFUSED, which Go's syscall.ECONNREFUSED does
// not match on Windows.
const wsaeconnrefused = syscall.Errno(10061)

// IsRefused reports whether err is a refused TCP connect.
func IsRefused(err error) bool {
	return errors.Is(err, wsaeconnrefused) || errors.Is(err, syscall.ECONNREFUSED)
}

// WSAEHOSTUNREACH and WSAENETUNREACH: no route to the device.
const (
	wsaehostunreach = syscall.Errno(10065)
	wsaenetunreach  = syscall.Errno(10051)
)

// IsUnreachable reports whether err is "no route to the device".
func IsUnreachable(err error) bool {
	return errors.Is(err, wsaehostunreach) || errors.Is(err, wsaenetunreach) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// WSAECONNRESET and WSAECONNABORTED: the peer reset or broke the connection.
const (
	wsaeconnreset   = syscall.Errno(10054)
	wsaeconnaborted = syscall.Errno(10053)
)

// IsReset reports whether err is a connection the peer reset or broke.
func IsReset(err error) bool {
	return errors.Is(err, wsaeconnreset) || errors.Is(err, wsaeconnaborted) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// isPortUnreachable: Windows reports an ICMP port unreachable as
// WSAECONNRESET on the next UDP read, once SIO_UDP_CONNRESET is on.
func isPortUnreachable(err error) bool {
	return errors.Is(err, syscall.WSAECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

// reportPortUnreachable turns SIO_UDP_CONNRESET back on for c: Go turns it
// off on every UDP socket (go.dev/issue/5834), which hides the ICMP port
// unreachable that UDPClosed waits for.
func reportPortUnreachable(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	err = rc.Control(func(fd uintptr) {
		flag, ret := uint32(1), uint32(0)
		ierr = syscall.WSAIoctl(syscall.Handle(fd), syscall.SIO_UDP_CONNRESET, (*byte)(unsafe.Pointer(&flag)),
			uint32(unsafe.Sizeof(flag)), nil, 0, &ret, nil, 0)
	})
	if err != nil {
		return err
	}
	return ierr
}
