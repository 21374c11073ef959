package core

import (
	"net"
	"testing"
	"time"
)

// discardUDP's stop returns even when the socket still holds a deadline in
// the past, left by the server that ran on it, and stop comes at once:
// the discarding goroutine must not clear stop's deadline and read on.
func TestDiscardUDPStopsWithStaleDeadline(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for i := range 2000 {
		_ = pc.SetReadDeadline(aLongTimeAgo)
		stop := discardUDP(pc)
		done := make(chan struct{})
		go func() { stop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: stop did not return", i)
		}
	}
}
