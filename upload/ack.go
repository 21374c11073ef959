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
	begun   atomic.Int64 // bytes handed to Write calls that have begun
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
	// begun is raised before the call and lowered by what it did not
	// write: a reader that sees an answer while the writer is still being
	// scheduled after its last write (written not yet raised) can still
	// tell that the last write had begun.
	a.begun.Add(int64(len(p)))
	n, err := a.Conn.Write(p)
	a.written.Add(int64(n))
	a.begun.Add(int64(n - len(p)))
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

// AckSnapshot is the counter at one moment, taken where the device's
// answer arrives.
type AckSnapshot struct {
	Begun   int64 // bytes handed to writes that had begun (written ≤ begun)
	Written int64 // bytes the local socket had accepted
	Queued  int64 // bytes written and not yet acknowledged; exact only
	Exact   bool  // queued was measured
}

// Snapshot reads the counter. Begun is read last, so a write that
// completes during the call is counted in it.
func (a *AckCounter) Snapshot() AckSnapshot {
	s := AckSnapshot{Written: a.written.Load()}
	if a.exact {
		if n, ok := unacked(a.raw); ok {
			s.Queued, s.Exact = int64(n), true
		}
	}
	s.Begun = a.begun.Load()
	return s
}

// AllAcked reports whether, at the snapshot, the first n bytes of the
// stream had all been handed to the kernel (the last write had begun) and,
// where the counter is exact, none was still unacknowledged. A peer's
// answer that carries the acknowledgement of the last bytes is processed
// by the kernel before the answer can be read, so a snapshot taken after
// reading it sees the queue empty.
func (s AckSnapshot) AllAcked(n int64) bool {
	if s.Begun < n {
		return false
	}
	return !s.Exact || s.Queued == 0
}
