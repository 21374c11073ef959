//go:build linux

package form

import (
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// Progress is what the device acknowledged, not what the host buffered: a
// device with lwIP's window that stops reading at 256 KiB of a 2 MiB image
// is never shown further than its reads and its small window allow
// (the host's send buffer alone would hold far more), and the idle rule
// ends the upload with Taken where the device stopped.
func TestFormProgressIsAcknowledgedBytes(t *testing.T) {
	const stop = 256 << 10
	dev := testkit.StartWebDevice(t, &testkit.WebDevice{StopAt: stop, Control: testkit.SmallWindow})
	fw := image(2<<20, "fw.bin")
	var ev events
	err := (&Transport{IdleTimeout: 300 * time.Millisecond, ProgressInterval: 5 * time.Millisecond}).
		Send(testkit.Ctx(t), target(t, dev.Addr), fw, upload.Credentials{}, ev.emit)
	de := testkit.DeviceError(t, err, func(de *upload.DeviceError) string { return de.Reason })
	if de.Class != upload.ClassTimeout || de.Class.Retries(3) != 3 {
		t.Fatalf("%s: %v", de.Class, err)
	}
	// The device read stop body bytes (the head and the part header among
	// them) and its parser's buffers; its kernel holds at most a window.
	if de.Taken < stop-8<<10 || de.Taken > stop+64<<10 {
		t.Fatalf("Taken %d, the device stopped reading at %d body bytes", de.Taken, stop)
	}
	t.Logf("taken %d of %d; the device read %d body bytes", de.Taken, fw.Size(), dev.Requests()[0].BodyRead)
	evs := ev.all()
	checkProgress(t, evs, fw.Size(), evs[len(evs)-1].Done)
	if last := evs[len(evs)-1].Done; last > de.Taken {
		t.Fatalf("progress showed %d, more than the %d acknowledged", last, de.Taken)
	}
}
