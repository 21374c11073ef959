package rawhttp

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// The device's TCP window is lwIP's (about 5.7 KB), so a host that writes
// while the device erases sees its writes stop after its own send buffer
// plus that window. These tests use a client with a fixed 16 KiB SO_SNDBUF
// (Linux doubles it to 32 KiB) that counts the bytes its socket accepted,
// and read that count at the moment the device resumes reading.

func TestEraseStallVisibleHTTP(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Timing.EraseRate = 4 << 20 // the 2 MiB slot erases in 0.5 s
	d := simtest.Start(t, cfg)
	var accepted atomic.Int64
	seen := make(chan [2]int64, 1)
	core.PeekAt(d).OnPause(func(read int64) { seen <- [2]int64{accepted.Load(), read} })

	c, err := net.DialTimeout("tcp", d.OTAAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	simtest.SetSndbuf(t, c, 16<<10)
	img := simtest.ImageOf(t, "esp32s3", "1.0.1", 1500<<10)
	fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(img))
	done := make(chan error, 1)
	go func() { done <- simtest.WriteCounting(c, img, &accepted) }()
	var at [2]int64
	select {
	case at = <-seen:
	case <-time.After(20 * time.Second):
		t.Fatal("the erase never ended")
	}
	if at[1] != 0 || at[0] >= simtest.MaxInFlight {
		t.Errorf("accepted %d bytes before the erase ended (device had read %d), want < %d", at[0], at[1], simtest.MaxInFlight)
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
