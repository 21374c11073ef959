//go:build linux

package fakedev

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// TestReceiveWindow: accepted sockets inherit lwIP's small receive buffer
// (Linux doubles what was asked for).
func TestReceiveWindow(t *testing.T) {
	p, err := listenPort()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go func() {
		c, err := net.Dial("tcp4", p.Addr().String())
		if err == nil {
			time.Sleep(500 * time.Millisecond)
			c.Close()
		}
	}()
	c, err := p.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, _ := c.(*net.TCPConn).SyscallConn()
	var n int
	var gerr error
	_ = sc.Control(func(fd uintptr) { n, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) })
	if gerr != nil || n > 4*lwipWindow {
		t.Fatalf("SO_RCVBUF %d (%v), want about %d", n, gerr, 2*lwipWindow)
	}
}
