package core

import (
	"net"
	"syscall"
	"time"
)

// listenBacklog is the backlog restored after a hold (the kernel caps it at
// net.core.somaxconn, as for Go's own listeners).
const listenBacklog = 4096

// holdListener makes a listening socket silent while the device reboots:
// connection attempts are neither refused nor accepted, they time out. Linux
// drops a SYN when the listener's accept queue is full, so the backlog goes
// to 0 and a connection of our own fills the queue (one queued connection
// already fills it). Connections queued before the reset stay queued,
// unanswered, as on a chip that lost them. release resets every queued
// connection (the device that comes back does not know them), restores the
// backlog and leaves ln ready for Accept.
func holdListener(ln *net.TCPListener) (release func() error, ok bool) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, false
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		return nil, false
	}
	filler := connectNonblocking(ln.Addr().(*net.TCPAddr))
	return func() error {
		if filler >= 0 {
			syscall.Close(filler)
		}
		for { // what queued meanwhile belongs to the previous boot
			_ = ln.SetDeadline(time.Now().Add(2 * time.Millisecond))
			c, err := ln.AcceptTCP()
			if err != nil {
				break
			}
			_ = c.SetLinger(0)
			_ = c.Close()
		}
		_ = ln.SetDeadline(time.Time{})
		var lerr error
		if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), listenBacklog) }); err != nil {
			return err
		}
		return lerr
	}, true
}

// connectNonblocking starts a TCP connection to a and returns its socket
// (-1 on failure) without waiting: when the accept queue is already full
// its SYN is dropped like any other, which is fine.
func connectNonblocking(a *net.TCPAddr) int {
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	if ip4 := a.IP.To4(); ip4 != nil {
		s4 := &syscall.SockaddrInet4{Port: a.Port}
		copy(s4.Addr[:], ip4)
		sa = s4
	} else {
		family = syscall.AF_INET6
		s6 := &syscall.SockaddrInet6{Port: a.Port}
		copy(s6.Addr[:], a.IP.To16())
		sa = s6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	// Closing it later sends an RST, not a FIN, and leaves no TIME_WAIT.
	_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	if err := syscall.Connect(fd, sa); err != nil && err != syscall.EINPROGRESS {
		syscall.Close(fd)
		return -1
	}
	return fd
}
