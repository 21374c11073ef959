package upload

import (
	"context"
	"strings"
	"testing"
)

// A failure whose DeviceError says NoRetry is never tried again, whatever
// its class allows (ElegantOTA after /ota/start: the device's update stays
// begun, and another try would write into it); the result says what the
// user must do first. The same class without NoRetry uses the budget.
func TestRunNoRetryEndsAtTheFirstFailure(t *testing.T) {
	for _, tc := range []struct {
		class   Class
		noRetry string
		tries   int
	}{
		{ClassNetwork, "restart the device, then push again", 1},
		{ClassTimeout, "restart the device, then push again", 1},
		{ClassWriteFailed, "restart the device, then push again", 1},
		{ClassNetwork, "", 4},
	} {
		t.Run(string(tc.class)+"/"+tc.noRetry, func(t *testing.T) {
			f := newFakeFleet()
			e := &DeviceError{Class: tc.class, Reason: "the device cut the upload", NoRetry: tc.noRetry}
			tg := f.add("d1", &fakeDev{script: []error{e, e, e, e, e}})
			r := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, fastOptions(f))[0]
			if r.Tries != tc.tries || f.sendsTo("d1") != tc.tries || r.Outcome != OutcomeFailed {
				t.Fatalf("%s after %d tries (%d sends), want failed after %d: %s", r.Outcome, r.Tries, f.sendsTo("d1"), tc.tries, r.Message)
			}
			if tc.noRetry != "" && !strings.HasSuffix(r.Message, "(not retried: "+tc.noRetry+")") {
				t.Errorf("message %q does not say what to do", r.Message)
			}
		})
	}
}

// screening is fakeFleet whose transport refuses a device by name in
// pre-flight (upload.Screener).
type screening struct {
	*fakeFleet
	refuse string
}

func (s screening) Screen(t Target, fw *Firmware) string {
	if t.Name == s.refuse {
		return "this library takes no such image"
	}
	return ""
}

// A Screener's refusal ends the device refused in pre-flight, nothing
// sent, not even with --force; the other devices go on.
func TestRunScreenerRefusesBeforeSending(t *testing.T) {
	f := newFakeFleet()
	t1, t2 := f.add("d1", &fakeDev{}), f.add("d2", &fakeDev{})
	o := fastOptions(f)
	o.Transports = map[Protocol]Transport{HTTP: screening{f, "d1"}}
	o.Force = true
	res := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{t1, t2}, o)
	if r := res[0]; r.Outcome != OutcomeRefused || r.Tries != 0 || f.sendsTo("d1") != 0 || r.Message != "this library takes no such image" {
		t.Errorf("d1: %s after %d tries (%d sends): %s", r.Outcome, r.Tries, f.sendsTo("d1"), r.Message)
	}
	if r := res[1]; r.Outcome != OutcomeUpdated || f.sendsTo("d2") != 1 {
		t.Errorf("d2: %s after %d sends: %s", r.Outcome, f.sendsTo("d2"), r.Message)
	}
}

// The NoRetry hint reaches the result on the ways out that return before
// the retry budget is looked at: a 200 failure page the runner reads the
// device after, and an answer lost after the whole image.
func TestRunNoRetryHintOnEveryWayOut(t *testing.T) {
	const hint = "restart the device, then push again"
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"failure page", &DeviceError{Class: ClassRejected, Reason: "the device answered 200 in no known words", Err: ErrFailurePage, NoRetry: hint}},
		{"answer lost", &DeviceError{Class: ClassNetwork, Reason: "no answer after the whole image", Err: ErrAnswerLost, Taken: 1 << 20, NoRetry: hint}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFleet()
			tg := f.add("d1", &fakeDev{script: []error{tc.err, tc.err}, facts: Facts{Answered: true, Version: "1.0.0", Project: "proj", Board: "esp32s3"}})
			r := Run(context.Background(), testFirmware(t, "1.0.1"), []Target{tg}, fastOptions(f))[0]
			if r.Outcome == OutcomeUpdated || f.sendsTo("d1") != 1 {
				t.Fatalf("%s after %d sends: %s", r.Outcome, f.sendsTo("d1"), r.Message)
			}
			if !strings.Contains(r.Message, "(not retried: "+hint+")") {
				t.Errorf("%s: message %q does not say what to do", r.Outcome, r.Message)
			}
		})
	}
}
