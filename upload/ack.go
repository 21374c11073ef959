package upload

import (
	"net"
	"sync/atomic"
	"syscall"
)

// fallbackSendBuffer caps SO_SNDBUF where the OS cannot tell how many sent
// bytes are still unacknowledged, so the count of written bytes is at most
// this far ahead of what the device took.
const fallbackSendBuffer = 16 << 10

// AckCounter wraps a TCP connection and counts the bytes the peer has
// acknowledged: bytes written minus those still queued in the kernel
// (SIOCOUTQ on Linux, SO_NWRITE on macOS). Elsewhere the send buffer is
// capped at 16 KiB and that much is assumed to be in flight.
//
// Writes must come from one goroutine; Taken may be called from any.
type AckCounter struct {
	net.Conn
	raw     syscall.RawConn // nil when the conn exposes no fd
	exact   bool            // raw can tell the unacknowledged bytes
	written atomic.Int64
}

// NewAckCounter wraps c. On systems without an unacknowledged-bytes query
// it shrinks c's send buffer to 16 KiB.
func NewAckCounter(c net.Conn) *AckCounter {
	a := &AckCounter{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			a.raw = raw
			_, a.exact = unacked(raw)
		}
	}
	if !a.exact {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(fallbackSendBuffer)
		}
	}
	return a
}

func (a *AckCounter) Write(p []byte) (int, error) {
	n, err := a.Conn.Write(p)
	a.written.Add(int64(n))
	return n, err
}

// Written is how many bytes the local socket accepted.
func (a *AckCounter) Written() int64 { return a.written.Load() }

// Exact reports whether Taken is measured rather than estimated.
func (a *AckCounter) Exact() bool { return a.exact }

// Taken is how many bytes the peer has acknowledged, as far as the OS tells.
func (a *AckCounter) Taken() int64 {
	w := a.written.Load()
	var queued int64 = fallbackSendBuffer
	if a.exact {
		if n, ok := unacked(a.raw); ok {
			queued = int64(n)
		}
	}
	if queued > w {
		return 0
	}
	return w - queued
}
