package upload

import "errors"

// ErrEarlyAnswer is wrapped in the DeviceError of an upload the device
// answered as a success (HTTP 2xx, espota OK) before it had acknowledged
// every byte of the image: the answer is no proof it installed anything.
// It says nothing about whether the device then took the rest: that is
// DeviceError.Taken (see MayHaveTakenAll).
var ErrEarlyAnswer = errors.New("the device answered before it had the whole image")

// ErrAnswerLost is wrapped in the DeviceError of an upload the device took
// whole and then closed without answering: it may have applied the image,
// so a runner should look at the device's version before retrying.
var ErrAnswerLost = errors.New("the device took the whole image but no answer arrived")

// ErrFailurePage is wrapped in the DeviceError of an upload the device
// answered with a 2xx status and a text that says the update failed
// (arduino HTTPUpdateServer's 200 "Update error: …"; failureTexts): a
// failure by its words, yet no proof either way, so a runner reads the
// device before it concludes.
var ErrFailurePage = errors.New("the device answered 2xx with a page that says the update failed")

// ErrRefusedWhole is wrapped in the DeviceError of an upload the device
// took whole and then answered with its own error word (ESPHome's 8B, MD5
// mismatch, after its 44): it says it installed nothing, so no answer was
// lost and there is nothing to read before concluding. DeviceError.NoRetry
// still decides whether it may be sent again.
var ErrRefusedWhole = errors.New("the device took the whole image and answered that the update failed")

// MayHaveTakenAll reports whether a device may hold the whole image after
// an upload ended with err, so that it may install it (or have installed
// it) although Send failed: a runner must read the device before it sends
// the image again. True when
//   - err is nil (the device accepted the whole image);
//   - err wraps ErrAnswerLost (the device took every byte and its answer
//     never came; a transport's own error for that, such as espota's lost
//     OK, is an ErrAnswerLost too);
//   - err is a *DeviceError whose Taken, the image bytes the device had
//     acknowledged when the try ended, is at least size. This covers an
//     interrupted or timed-out upload after the last byte, and an early
//     answer (ErrEarlyAnswer) from a device that read on after it.
//
// An early answer with Taken < size is false: the connection was reset
// with the rest unsent, so the device cannot hold the image. Taken comes
// from the kernel's count of acknowledged bytes where it is exact (Linux,
// macOS); elsewhere it trails the bytes written by the 16 KiB send buffer.
func MayHaveTakenAll(err error, size int64) bool {
	if err == nil || errors.Is(err, ErrAnswerLost) {
		return true
	}
	var de *DeviceError
	return errors.As(err, &de) && de.Taken >= size
}

// unackedTail bounds the image bytes a device may have read although their
// ACK never reached the host: a device that reads the last bytes and resets
// at once overtakes its own delayed ACK. Three lwIP windows (5760 B).
const unackedTail = 16 << 10

// MayHoldAll reports whether a connection the device ended without an
// answer may have delivered the whole image: every byte written, and at
// most unackedTail of it unacknowledged.
func MayHoldAll(written, taken, size int64) bool {
	return taken >= size || written >= size && size-taken <= unackedTail
}

// MarkNoRetry gives err's DeviceError, when it has one and no NoRetry yet,
// hint as its NoRetry: a family's failure after the point from which
// nothing may be sent to the device again. It returns err.
func MarkNoRetry(err error, hint string) error {
	var de *DeviceError
	if errors.As(err, &de) && de.NoRetry == "" {
		de.NoRetry = hint
	}
	return err
}
