package rawhttp

import (
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
)

// An upload push gave up on must not complete on the device afterwards: the
// transport resets the connection, so what the kernel still buffered is
// thrown away instead of delivered once the device reads again. (With a
// plain close the stalled device read the rest, installed the image and
// rebooted, while push reported the device failed.)
func TestHTTPGivenUpUploadNeverLands(t *testing.T) {
	d := httpFaulty(t, sim.Config{Personality: sim.Seed, Extensions: true}, "stall@50%:700ms")
	fw := simImage(t, "1.0.1", 256<<10)
	tr := &Transport{IdleTimeout: 200 * time.Millisecond, ProgressInterval: 20 * time.Millisecond}
	de := asDeviceError(t, tr.Send(httpCtx(t), httpTarget(t, d.OTAAddr(), ""), fw, upload.Credentials{}, nil))
	if de.Class != upload.ClassTimeout {
		t.Fatalf("got %+v, want a timeout", de)
	}
	st := waitHTTPUploads(t, d, 1)
	ctxDeadline := time.Now().Add(10 * time.Second)
	for st.Uploads[0].Outcome == "" && time.Now().Before(ctxDeadline) {
		time.Sleep(20 * time.Millisecond)
		st = d.State()
	}
	if u := st.Uploads[0]; u.Outcome == "ok" || st.Version == "1.0.1" {
		t.Fatalf("the given-up upload landed: outcome %q, %d of %d bytes, device runs %s", u.Outcome, u.Bytes, u.Size, st.Version)
	}
}
