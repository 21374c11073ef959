package core

import (
	"syscall"
)

// lwIP's defaults (components/lwip/Kconfig): CONFIG_LWIP_TCP_WND_DEFAULT
// 5760 and CONFIG_LWIP_TCP_MSS 1440. Linux doubles SO_RCVBUF for its
// bookkeeping, so asking for lwIP's window gives a window of about that size.
const (
	lwipRecvWindow = 5760
	lwipMSS        = 1440
)

// LWIPSockopts gives a socket the device's small TCP receive window and
// MSS. It must run before listen or connect (net.ListenConfig.Control,
// net.Dialer.Control): the window is fixed in the SYN, and without the MSS
// Linux sizes the peer's send buffer from loopback's 64 KiB MSS.
func LWIPSockopts(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, lwipRecvWindow); serr != nil {
			return
		}
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, lwipMSS)
	})
	if err != nil {
		return err
	}
	return serr
}
