package upload

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// espota's lost OK: TestNoOKMayHaveTakenAll in upload/espota.
func TestMayHaveTakenAll(t *testing.T) {
	const size = 1000
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"accepted", nil, true},
		{"answer lost", &DeviceError{Class: ClassNetwork, Taken: size, Err: errors.Join(ErrAnswerLost, errors.New("EOF"))}, true},
		{"early answer after 30 %", &DeviceError{Class: ClassEarlyAnswer, Taken: 300, Err: ErrEarlyAnswer}, false},
		{"early answer, then read on to the end", &DeviceError{Class: ClassEarlyAnswer, Taken: size, Err: ErrEarlyAnswer}, true},
		{"cancelled after the last byte", &DeviceError{Class: ClassNetwork, Taken: size, Err: context.Canceled}, true},
		{"cut midway", &DeviceError{Class: ClassNetwork, Taken: 999}, false},
		{"refused", &DeviceError{Class: ClassRejected, Status: 500, Words: "OTA end failed", Taken: size - 1}, false},
		{"wrapped DeviceError", fmt.Errorf("try 2: %w", &DeviceError{Class: ClassTimeout, Taken: size}), true},
		{"not a DeviceError", errors.New("boom"), false},
	} {
		if got := MayHaveTakenAll(tc.err, size); got != tc.want {
			t.Errorf("%s: MayHaveTakenAll = %v, want %v", tc.name, got, tc.want)
		}
	}
}
