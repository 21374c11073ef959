package upload

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// A peer that reads nothing: the bytes the kernel accepted are not taken.
// Then the peer drains everything: all bytes are taken.
func TestAckCounterCountsOnlyAcknowledged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	defer peer.Close()

	a := NewAckCounter(c)
	if (runtime.GOOS == "linux" || runtime.GOOS == "darwin") && !a.Exact() {
		t.Fatalf("%s should measure unacknowledged bytes", runtime.GOOS)
	}
	buf := make([]byte, 64<<10)
	_ = a.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	for {
		if _, err := a.Write(buf); err != nil {
			break // the deadline: the kernel's buffers are full
		}
	}
	w := a.Written()
	if a.Exact() {
		// With a loopback peer that read nothing, the kernel may still have
		// acknowledged what fits in the peer's receive buffer; it cannot have
		// acknowledged everything that was written into the send queue.
		if tk := a.Taken(); tk >= w {
			t.Fatalf("taken %d of %d written with a stalled peer", tk, w)
		}
	}
	go func() { _, _ = io.CopyN(io.Discard, peer, w) }()
	deadline := time.Now().Add(10 * time.Second)
	for a.Exact() && a.Taken() < w && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if a.Exact() && a.Taken() != w {
		t.Fatalf("taken %d, want all %d once the peer read them", a.Taken(), w)
	}
}
