package rawhttp

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// TestNothingServedAfterSuccess: a request queued behind a successful
// upload is never served; the handler restarts the chip itself. 20 runs,
// never a second 200 and never a second upload_started.
func TestNothingServedAfterSuccess(t *testing.T) {
	var ev simtest.EventLog
	cfg := simtest.Config(Seed)
	cfg.Extensions = true
	cfg.Timing.RebootDelayMin = 100 * time.Millisecond
	cfg.Timing.RebootDelayMax = 100 * time.Millisecond
	cfg.OnEvent = ev.Add
	d := simtest.Start(t, cfg)
	for i := 0; i < 20; i++ {
		version := fmt.Sprintf("1.0.%d", 100+i)
		finished := ev.Count(core.EventUploadFinished)
		first := make(chan simtest.Reply, 1)
		go func() { first <- simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, simtest.Image(t, version)) }()
		ev.WaitCount(t, core.EventUploadFinished, finished+1)
		// Queued while the handler waits to restart: a second upload, or a
		// status request.
		var second simtest.Reply
		if i%2 == 0 {
			second = simtest.RawPost(t, d.OTAAddr(), "POST", "/update", nil, simtest.Image(t, "9.9.9"))
		} else {
			second = simtest.RawPost(t, d.OTAAddr(), "GET", "/ota/status", nil, nil)
		}
		if r := <-first; r.Status != 200 {
			t.Fatalf("run %d: first upload %d %q", i, r.Status, r.Body)
		}
		if second.Status != 0 {
			t.Fatalf("run %d: the queued request was served: %d %q", i, second.Status, second.Body)
		}
		if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), version); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if n := ev.Count(core.EventUploadStarted); n != 20 {
		t.Errorf("%d uploads started, want 20", n)
	}
}

// TestPowerLossIsSilent: power lost mid-upload leaves the client's
// connection quiet (its idle timeout must fire) until the device is back.
func TestPowerLossIsSilent(t *testing.T) {
	cfg := simtest.Config(Seed)
	cfg.Timing.BootTime = 300 * time.Millisecond
	cfg.Faults = []core.Fault{simtest.MustFault(t, "power-loss@50%")}
	d := simtest.Start(t, cfg)
	img := simtest.Image(t, "1.0.1")
	c, err := net.DialTimeout("tcp", d.OTAAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(img))
	go c.Write(img)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 64))
	st := d.State()
	if !errors.Is(err, syscall.ECONNRESET) || st.BootCount < 2 || !st.Up {
		t.Errorf("read ended with %v at boot %d (up %v); want a reset only once the device is back", err, st.BootCount, st.Up)
	}
}
