package esphome

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// A device that answers 0x44 (received) after the first KiB and then
// stops reading, without closing, must not hold Send: the client gives up
// after DataTimeout, and says the answer came early.
func TestEarlyReceivedThenStall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		read := func(n int) bool {
			_, err := io.ReadFull(c, make([]byte, n))
			return err == nil
		}
		// Version 1, plain answer, no password (docs/protocols/esphome.md).
		if !read(5) {
			return
		}
		c.Write([]byte{0x00, 0x01})
		if !read(1) {
			return
		}
		c.Write([]byte{0x40, 0x41})
		if !read(4) {
			return
		}
		c.Write([]byte{0x42})
		if !read(32) {
			return
		}
		c.Write([]byte{0x43})
		if !read(1024) {
			return
		}
		c.Write([]byte{0x44})
		<-release // reads nothing more, and keeps the connection open
	}()
	// Larger than loopback's socket buffers: the writer blocks.
	fw := upload.NewFirmware("fw.bin", testImage(64<<20), false)
	tr := &Transport{HandshakeTimeout: 5 * time.Second, DataTimeout: time.Second, ProgressInterval: 20 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		done <- tr.Send(context.Background(), upload.Target{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}, fw, upload.Credentials{}, nil)
	}()
	var err2 error
	select {
	case err2 = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Send still waits on a device that stopped reading after 0x44")
	}
	var de *upload.DeviceError
	if !errors.As(err2, &de) || de.Class != upload.ClassEarlyAnswer || !errors.Is(err2, upload.ErrEarlyAnswer) {
		t.Fatalf("Send = %v, want an early answer", err2)
	}
	if de.Taken >= fw.Size() || de.NoRetry != "" {
		t.Errorf("Taken %d of %d, NoRetry %q: the device did not hold the image", de.Taken, fw.Size(), de.NoRetry)
	}
}
