package sim

import (
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The device's TCP window is lwIP's (about 5.7 KB), so a host that writes
// while the device erases sees its writes stop after its own send buffer
// plus that window. These tests use a client with a fixed 16 KiB SO_SNDBUF
// (Linux doubles it to 32 KiB) that counts the bytes its socket accepted,
// and read that count at the moment the device resumes reading.

const maxInFlight = 64 << 10

func setSndbuf(t *testing.T, c net.Conn, n int) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
	}); err != nil || serr != nil {
		t.Fatalf("SO_SNDBUF: %v %v", err, serr)
	}
}

// writeCounting writes p in 1 KiB pieces and adds what the socket took to n.
func writeCounting(c net.Conn, p []byte, n *atomic.Int64) error {
	for off := 0; off < len(p); off += 1024 {
		m, err := c.Write(p[off:min(off+1024, len(p))])
		n.Add(int64(m))
		if err != nil {
			return err
		}
	}
	return nil
}

func TestEraseStallVisibleHTTP(t *testing.T) {
	cfg := testConfig(Seed)
	cfg.Timing.EraseRate = 4 << 20 // the 2 MiB slot erases in 0.5 s
	d := startDevice(t, cfg)
	var accepted atomic.Int64
	seen := make(chan [2]int64, 1)
	d.mu.Lock()
	d.hookPause = func(read int64) { seen <- [2]int64{accepted.Load(), read} }
	d.mu.Unlock()

	c, err := net.DialTimeout("tcp", d.OTAAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	setSndbuf(t, c, 16<<10)
	img := testImageOf(t, "esp32s3", "1.0.1", 1500<<10)
	fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(img))
	done := make(chan error, 1)
	go func() { done <- writeCounting(c, img, &accepted) }()
	var at [2]int64
	select {
	case at = <-seen:
	case <-time.After(20 * time.Second):
		t.Fatal("the erase never ended")
	}
	if at[1] != 0 || at[0] >= maxInFlight {
		t.Errorf("accepted %d bytes before the erase ended (device had read %d), want < %d", at[0], at[1], maxInFlight)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	if want := "HTTP/1.1 200 OK\r\n"; len(buf[:n]) < len(want) || string(buf[:len(want)]) != want {
		t.Errorf("answer %q", buf[:n])
	}
	t.Logf("accepted before the erase ended: %d bytes", at[0])
}

func TestEraseStallVisibleEspota(t *testing.T) {
	cfg := testConfig(Arduino)
	stall, _ := ParseFault("stall@8KiB:500ms")
	cfg.Faults = []Fault{stall}
	d := startDevice(t, cfg)
	var accepted atomic.Int64
	seen := make(chan [2]int64, 1)
	d.mu.Lock()
	d.hookPause = func(read int64) {
		select {
		case seen <- [2]int64{accepted.Load(), read}:
		default:
		}
	}
	d.mu.Unlock()

	img := testImageOf(t, "esp32s3", "1.0.1", 600<<10)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u, err := net.Dial("udp", d.OTAAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	fmt.Fprintf(u, "0 %d %d %s\n", ln.Addr().(*net.TCPAddr).Port, len(img), md5hex(img))
	buf := make([]byte, 128)
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := u.Read(buf); err != nil || string(buf[:n]) != "OK" {
		t.Fatalf("invitation: %q %v", buf[:n], err)
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	setSndbuf(t, c, 16<<10)
	go func() { // the counts: read and dropped
		b := make([]byte, 4096)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
		}
	}()
	go writeCounting(c, img, &accepted)
	var at [2]int64
	select {
	case at = <-seen:
	case <-time.After(20 * time.Second):
		t.Fatal("the stall never ended")
	}
	if inFlight := at[0] - at[1]; inFlight >= maxInFlight {
		t.Errorf("%d bytes accepted beyond the %d the device had read, want < %d", inFlight, at[1], maxInFlight)
	}
	t.Logf("in flight when the device resumed: %d bytes", at[0]-at[1])
}
