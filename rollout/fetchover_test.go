package rollout

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// A device whose read told no version (an ESPHome node before its first
// check) that tells the old version while it fetches keeps its
// --max-fetches slot: only a version other than the old one, a failure,
// or its bound frees it.
func TestOldVersionMidFetchKeepsTheSlot(t *testing.T) {
	r := newRig(t, Plan{}, succeed, succeed)
	r.cfg.MaxFetches = 1
	first, second := r.devs[0].Topic, r.devs[1].Topic
	hold := make(chan struct{})
	r.f.mu.Lock()
	fd := r.f.devs[first]
	fd.version = "" // read before: no version told
	fd.hold = hold
	r.f.afterCommand = func(topic string) {
		if topic != first {
			return
		}
		go func() {
			for range 3 { // its state during the download: still the old one
				r.f.tell(Report{Topic: first, Kind: ReportStatus, At: time.Now(), Facts: facts2(fakeOld, fd.mac), Source: "state"})
				time.Sleep(r.f.step)
			}
			time.Sleep(200 * time.Millisecond) // gives a wrong engine the time to command the next
			close(hold)
		}()
	}
	r.f.mu.Unlock()
	res := r.run(context.Background())
	for i, x := range res {
		if x.Outcome != upload.OutcomeUpdated {
			t.Errorf("device %d: %s (%s)", i, x.Outcome, x.Message)
		}
	}
	cmd, done := r.f.logged("command "+second), r.f.logged("success "+first)
	if cmd < 0 || done < 0 || cmd < done {
		r.f.mu.Lock()
		log := fmt.Sprint(r.f.log)
		r.f.mu.Unlock()
		t.Errorf("%s commanded (log entry %d) before %s's fetch ended (success at %d): %s", second, cmd, first, done, log)
	}
}

// tell delivers r as the device's own report (one the scripts do not make).
func (f *fakeFamily) tell(r Report) {
	f.mu.Lock()
	fn, ctx := f.fn, f.wctx
	f.log = append(f.log, string(r.Kind)+" "+r.Topic)
	f.mu.Unlock()
	if fn != nil && ctx != nil && ctx.Err() == nil {
		fn(r)
	}
}
