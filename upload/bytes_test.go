package upload

import (
	"context"
	"sync"
	"testing"
	"time"
)

// sendStep is one try of scriptedSend: the events it emits, then its end.
type sendStep struct {
	events []Event
	// cancel: the user interrupts after the events; the try ends with
	// the interrupt.
	cancel bool
	err    error
}

// scriptedSend plays one step per try.
type scriptedSend struct {
	mu     sync.Mutex
	steps  []sendStep
	n      int
	cancel context.CancelFunc
}

func (s *scriptedSend) Protocol() Protocol { return HTTP }

func (s *scriptedSend) Send(ctx context.Context, _ Target, _ *Firmware, _ Credentials, emit Emit) error {
	s.mu.Lock()
	st := s.steps[min(s.n, len(s.steps)-1)]
	s.n++
	s.mu.Unlock()
	for _, e := range st.events {
		emit(e)
	}
	if st.cancel {
		s.cancel()
		<-ctx.Done()
	}
	return st.err
}

// TestRunBytesOnEveryPath: a result's Bytes is what the device took in
// the last try that got to sending the image, however the device ended
// (failed, cancelled, accepted), and nil when no try got that far. Before,
// only an accepted image set it: a device that took half the image and
// then failed reported 0.
func TestRunBytesOnEveryPath(t *testing.T) {
	connecting := Event{Phase: PhaseConnecting, Total: 8000}
	uploading := func(n int64) Event { return Event{Phase: PhaseUploading, Done: n, Total: 8000} }
	refused := &DeviceError{Class: ClassNetwork, Reason: "connection refused"}
	cases := []struct {
		name    string
		steps   []sendStep
		retries int
		want    Outcome
		bytes   int64 // -1: nil
	}{
		{"failed mid-upload", []sendStep{{events: []Event{connecting, {Phase: PhaseErasing, Total: 8000}, uploading(4000)},
			err: &DeviceError{Class: ClassRejected, Status: 500, Words: "Write failed", Taken: 5000, Reason: "test"}}}, 0, OutcomeFailed, 5000},
		{"refused before the image", []sendStep{{events: []Event{connecting}, err: refused}}, 0, OutcomeFailed, -1},
		{"auth refused before the image", []sendStep{{events: []Event{connecting, {Phase: PhaseAuth}},
			err: &DeviceError{Class: ClassAuth, Words: "Authentication Failed", Reason: "test"}}}, 0, OutcomeFailed, -1},
		{"the last try that sent counts", []sendStep{
			{events: []Event{connecting, uploading(3000)}, err: &DeviceError{Class: ClassNetwork, Taken: 3000, Reason: "reset"}},
			{events: []Event{connecting}, err: refused},
		}, 1, OutcomeFailed, 3000},
		{"erasing, nothing taken", []sendStep{{events: []Event{connecting, {Phase: PhaseErasing, Total: 8000}},
			err: &DeviceError{Class: ClassTimeout, Reason: "idle"}}}, 0, OutcomeFailed, 0},
		{"cancelled mid-upload", []sendStep{{events: []Event{connecting, uploading(2000)}, cancel: true,
			err: &DeviceError{Class: ClassNetwork, Taken: 2500, Reason: "cancelled", Err: context.Canceled}}}, 0, OutcomeCancelled, 2500},
		{"accepted", []sendStep{{events: []Event{connecting, uploading(8000), {Phase: PhaseFinishing, Done: 8000, Total: 8000}}}},
			0, OutcomeAccepted, 8000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tr := &scriptedSend{steps: c.steps, cancel: cancel}
			o := Options{Transports: map[Protocol]Transport{HTTP: tr}, Retries: c.retries, Backoff: time.Microsecond,
				MaxBackoff: time.Millisecond, NoVerify: true, Seed: 1}
			r := Run(ctx, testFirmware(t, "1.0.1"), []Target{{Name: "d1", Host: "d1", Protocol: HTTP}}, o)[0]
			if r.Outcome != c.want || r.Tries != len(c.steps) {
				t.Fatalf("%s after %d tries (%s), want %s after %d", r.Outcome, r.Tries, r.Message, c.want, len(c.steps))
			}
			switch {
			case c.bytes < 0 && r.Bytes != nil:
				t.Errorf("bytes %d, want none: no try sent any of the image", *r.Bytes)
			case c.bytes >= 0 && r.Bytes == nil:
				t.Errorf("bytes nil, want %d", c.bytes)
			case c.bytes >= 0 && *r.Bytes != c.bytes:
				t.Errorf("bytes %d, want %d", *r.Bytes, c.bytes)
			}
			if c.bytes <= 0 && r.Rate != 0 {
				t.Errorf("rate %v with no byte taken", r.Rate)
			}
		})
	}
}
