package espota

import (
	"errors"
	"io"
	"testing"

	"github.com/ots-ota/ots-ota/upload"
)

// A lost OK is a lost answer: the device took every byte and may run the
// image, so the runner reads it before it sends anything again.
func TestNoOKMayHaveTakenAll(t *testing.T) {
	const size = 1000
	if !errors.Is(ErrNoOK, upload.ErrAnswerLost) {
		t.Fatal("ErrNoOK is no upload.ErrAnswerLost")
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"no OK after a close", &upload.DeviceError{Class: upload.ClassNetwork, Taken: size, Err: ErrNoOK}},
		{"no OK within the idle timeout", &upload.DeviceError{Class: upload.ClassTimeout, Taken: size, Err: ErrNoOK}},
		{"no OK, the last ACK overtaken by the close", &upload.DeviceError{Class: upload.ClassNetwork, Taken: size - 1, Err: errors.Join(ErrNoOK, io.EOF)}},
	} {
		if !upload.MayHaveTakenAll(tc.err, size) {
			t.Errorf("%s: MayHaveTakenAll = false, want true", tc.name)
		}
	}
}
