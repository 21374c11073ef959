package arduino

import (
	"context"
	"fmt"
	"sync"

	"github.com/ots-ota/ots-ota/sim/core"
)

// The Arduino Update class of both cores (arduino-esp32 libraries/Update
// Updater.cpp, esp8266/Arduino cores/esp8266/Updater.cpp 3.1.x), on the
// device core's flash. One per boot: it lives in RAM, and what a sketch's
// handlers leave in it (an update begun and never ended, an error) stays
// until the next reset.
//
//   - begin() while an update runs returns false and sets no error
//     (esp8266/Arduino's ERROR[15] is in git master only, after 3.1.2).
//   - write() with nothing begun, or after an error, returns 0 and sets no
//     error; past begin()'s size it fails "Not Enough Space" (ERROR[4]).
//   - Both buffer one 4096-byte sector. arduino-esp32 looks at the image's
//     first byte when it writes that sector: with the default auto-decrypt
//     mode and no key, a first byte other than 0xE9 is an encrypted image,
//     and decrypting fails: "Decryption error". esp8266 checks the magic
//     (0xE9, or 1F 8B for gzip) only in end(): ERROR[10] after the whole
//     upload.
//   - end(true) on esp8266 fails ERROR[13] "No data supplied" while
//     nothing left the sector buffer: an image of 4096 bytes or less
//     (core ≥ 3.0.0). arduino-esp32 writes the tail, then enables the
//     partition: with nothing written (an empty image, or a small one whose
//     sector failed) that is "Flash Read Failed" (derived: the stashed
//     header it writes back does not exist); esp_ota_set_boot_partition
//     verifies the image: "Could Not Activate The Firmware".
//   - Any error ends the update; the error stays (hasError()) until the
//     next begin().
//   - Errors print as "<text>\r\n" (arduino-esp32, println) or
//     "ERROR[<n>]: <text>\n" (esp8266).

// Err is an Update error.
type Err int

// The errors, by their esp8266 numbers.
const (
	ErrNone   Err = 0
	ErrWrite  Err = 1
	ErrRead   Err = 3
	ErrSpace  Err = 4
	ErrSize   Err = 5
	ErrMagic  Err = 10
	ErrNoData Err = 13
	// arduino-esp32 only.
	ErrActivate    Err = 101
	ErrNoPartition Err = 102
	ErrAbort       Err = 103
	ErrDecrypt     Err = 104
)

var errText = map[Err]string{
	ErrWrite:       "Flash Write Failed",
	ErrRead:        "Flash Read Failed",
	ErrSpace:       "Not Enough Space",
	ErrSize:        "Bad Size Given",
	ErrMagic:       "Magic byte is not 0xE9",
	ErrNoData:      "No data supplied",
	ErrActivate:    "Could Not Activate The Firmware",
	ErrNoPartition: "Partition Could Not be Found",
	ErrAbort:       "Aborted",
	ErrDecrypt:     "Decryption error",
}

// SizeUnknown is UPDATE_SIZE_UNKNOWN (arduino-esp32): the whole partition.
const SizeUnknown int64 = -1

// sectorSize is SPI_FLASH_SEC_SIZE, the Updater's buffer.
const sectorSize = 4096

// Cut is a fault that cut the request while the Update wrote.
type Cut int

// The cuts.
const (
	CutNone      Cut = iota
	CutDrop          // drop: close the connection now
	CutPowerLoss     // power-loss: no answer, reset, the old image runs
	CutCanceled      // the device is going down
)

// Update is the Update class of one boot.
type Update struct {
	e       *core.Env
	esp8266 bool

	mu       sync.Mutex
	running  bool
	fs       bool
	size     int64  // what begin() allowed
	progress int64  // bytes out of the sector buffer
	head     []byte // the first sector until it is written
	flushed  bool
	badMagic bool // esp8266: found by end()
	err      Err

	// The device core's session (and upload record) of this update;
	// installed: end() made the image the boot image, the record waits for
	// the answer.
	u         *core.Upload
	installed bool
	failed    bool // the session failed; the record waits for the answer
}

// NewUpdate is the Update class of a booted device.
func NewUpdate(e *core.Env) *Update {
	return &Update{e: e, esp8266: e.Platform() == core.PlatformESP8266}
}

// ESP8266 reports whether this is esp8266/Arduino's Updater.
func (up *Update) ESP8266() bool { return up.esp8266 }

// SketchSpace is HTTPUpdateServer's begin size for a firmware:
// (ESP.getFreeSketchSpace() - 0x1000) & 0xFFFFF000, the slot less a sector.
func (up *Update) SketchSpace() int64 {
	return (up.e.Config().SlotSize - 0x1000) &^ 0xFFF
}

// ErrText is the text of e as printError prints it, without the line end.
func (up *Update) ErrText(e Err) string {
	t := errText[e]
	if t == "" {
		t = "UNKNOWN"
	}
	if up.esp8266 {
		return fmt.Sprintf("ERROR[%d]: %s", int(e), t)
	}
	return t
}

// ErrorString is the last error's text alone: arduino-esp32's
// errorString(), esp8266/Arduino's getErrorString() ("No Error" when
// there is none).
func (up *Update) ErrorString() string {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.err == ErrNone {
		return "No Error"
	}
	if t := errText[up.err]; t != "" {
		return t
	}
	return "UNKNOWN"
}

// PrintError is what Update.printError(str) puts in a String.
func (up *Update) PrintError() string {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.printErrorLocked()
}

func (up *Update) printErrorLocked() string {
	if up.esp8266 {
		if up.err == ErrNone {
			return "ERROR[0]: No Error\n"
		}
		return up.ErrText(up.err) + "\n"
	}
	if up.err == ErrNone {
		return "No Error\r\n"
	}
	return up.ErrText(up.err) + "\r\n"
}

// HasError is hasError().
func (up *Update) HasError() bool {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.err != ErrNone
}

// Running is isRunning().
func (up *Update) Running() bool {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.running
}

// Session opens the device's upload record for a running update, from the
// request that brings its bytes (its path, client and announced size),
// unless one is open already (an update begun and fed by an earlier
// request). The record ends with Answered, or when the chip resets.
func (up *Update) Session(r *core.Request) {
	up.mu.Lock()
	defer up.mu.Unlock()
	if !up.running || up.u != nil && !up.u.Done() {
		return
	}
	up.u, up.installed, up.failed = up.e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), r.ContentLength()), false, false
	if up.fs {
		up.u.ToFilesystem()
	}
	u := up.u
	context.AfterFunc(r.Context(), func() {
		// The chip resets: what it was writing is lost.
		up.mu.Lock()
		defer up.mu.Unlock()
		if !u.Done() {
			u.Fail(0, "", "device going down")
		}
	})
}

// Begin is begin(size, U_FLASH or the filesystem). size SizeUnknown is the
// whole partition (arduino-esp32's UPDATE_SIZE_UNKNOWN).
func (up *Update) Begin(size int64, fs bool) bool {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.running {
		return false // "already running", no error set
	}
	up.closeSessionLocked(0, "", "")
	part := up.e.Config().SlotSize
	if fs {
		part = up.e.FilesystemSize()
	}
	if up.esp8266 {
		switch {
		case size <= 0:
			up.setErrorLocked(ErrSize)
			return false
		case !fs && size > part:
			up.setErrorLocked(ErrSpace)
			return false
		}
	} else {
		up.resetLocked()
		up.err = ErrNone
		switch {
		case size == 0:
			up.err = ErrSize
			return false
		case fs && part == 0:
			up.err = ErrNoPartition
			return false
		case size == SizeUnknown:
			size = part
		case size > part:
			up.err = ErrSize
			return false
		}
	}
	up.resetLocked()
	up.err = ErrNone
	up.running, up.fs, up.size = true, fs, size
	return true
}

// Write is write(data, len): how many bytes it took, and the fault that
// cut the request if one did.
func (up *Update) Write(p []byte) (int, Cut) {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.err != ErrNone || !up.running {
		return 0, CutNone
	}
	if up.progress+int64(len(up.head))+int64(len(p)) > up.size {
		up.setErrorLocked(ErrSpace)
		return 0, CutNone
	}
	n := len(p)
	if !up.flushed {
		need := sectorSize - len(up.head)
		if len(p) <= need {
			up.head = append(up.head, p...)
			// The write that fills the update exactly flushes it too.
			if int64(len(up.head)) == up.size-up.progress {
				if ok, cut := up.flushHeadLocked(); !ok {
					return 0, cut
				}
			}
			return n, CutNone
		}
		up.head = append(up.head, p[:need]...)
		p = p[need:]
		if ok, cut := up.flushHeadLocked(); !ok {
			return 0, cut
		}
	}
	if cut := up.flashLocked(p); cut != CutNone || up.err != ErrNone {
		return 0, cut
	}
	return n, CutNone
}

// flushHeadLocked writes the first sector: where arduino-esp32 decides
// whether the image is encrypted. false when that failed.
func (up *Update) flushHeadLocked() (bool, Cut) {
	head := up.head
	up.head = nil
	if up.u == nil || up.u.Done() {
		// A write with no record open: the handler named no session.
		up.resetLocked()
		return false, CutCanceled
	}
	if st := up.u.Begin(true); st != core.OTANone {
		up.u.Fail(0, "", "the flash is busy or the device going down")
		up.u = nil
		up.resetLocked()
		return false, CutCanceled
	}
	up.flushed = true
	if !up.fs && len(head) > 0 {
		switch {
		case !up.esp8266 && head[0] != 0xE9:
			up.u.SetReason(fmt.Sprintf("first byte 0x%02x is not 0xE9: taken for an encrypted image, and no key is set", head[0]))
			up.setErrorLocked(ErrDecrypt)
			return false, CutNone
		case up.esp8266 && head[0] != 0xE9 && head[0] != 0x1F:
			up.badMagic = true
		}
	}
	if cut := up.flashLocked(head); cut != CutNone || up.err != ErrNone {
		return false, cut
	}
	return true, CutNone
}

// flashLocked hands bytes past the sector buffer to the device's flash.
func (up *Update) flashLocked(p []byte) Cut {
	if len(p) == 0 {
		return CutNone
	}
	if up.badMagic {
		// esp8266 writes them all and looks at the magic in end().
		up.progress += int64(len(p))
		if up.u.Pace(len(p)) != core.OTANone {
			return up.cutLocked(core.OTACanceled)
		}
		return CutNone
	}
	switch st := up.u.Write(p); st {
	case core.OTANone:
		up.progress += int64(len(p))
		return CutNone
	case core.OTAWrite:
		up.setErrorLocked(ErrWrite)
	case core.OTASpace:
		up.setErrorLocked(ErrSpace)
	case core.OTAMagic:
		up.setErrorLocked(ErrMagic)
	default:
		return up.cutLocked(st)
	}
	return CutNone
}

// cutLocked turns a fault that cut the upload into what the handler does.
func (up *Update) cutLocked(st core.OTAErr) Cut {
	switch st {
	case core.OTADrop:
		return CutDrop
	case core.OTAPowerLoss:
		return CutPowerLoss
	}
	return CutCanceled
}

// End is end(evenIfRemaining).
func (up *Update) End(evenIfRemaining bool) bool {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.esp8266 {
		return up.end8266Locked(evenIfRemaining)
	}
	if up.err != ErrNone || !up.running {
		return false
	}
	if !evenIfRemaining && up.progress+int64(len(up.head)) < up.size {
		up.setErrorLocked(ErrAbort)
		return false
	}
	if !up.flushed && len(up.head) > 0 {
		up.flushHeadLocked() // its result is not looked at
	}
	if up.fs {
		return up.finishLocked()
	}
	if up.progress == 0 {
		up.err = ErrNone
		up.setErrorLocked(ErrRead)
		return false
	}
	return up.finishLocked()
}

func (up *Update) end8266Locked(evenIfRemaining bool) bool {
	if !up.running {
		up.resetLocked()
		return false
	}
	if up.progress == 0 {
		up.setErrorLocked(ErrNoData)
		return false
	}
	if up.err != ErrNone || !evenIfRemaining && up.progress+int64(len(up.head)) < up.size {
		up.resetLocked()
		up.failSessionLocked("ended before its size")
		return false
	}
	if up.badMagic {
		up.setErrorLocked(ErrMagic)
		return false
	}
	return up.finishLocked()
}

// finishLocked is the device core's esp_ota_end and set-boot (or the
// filesystem written).
func (up *Update) finishLocked() bool {
	if up.u == nil || up.u.Written() == 0 {
		// Nothing reached the flash (an empty filesystem image).
		up.resetLocked()
		return true
	}
	switch st := up.u.End(); st {
	case core.OTANone:
		up.installed = true
		up.resetLocked()
		return true
	case core.OTAValidate:
		up.setErrorLocked(ErrActivate)
	case core.OTAEmpty:
		up.setErrorLocked(ErrNoData)
	default:
		up.setErrorLocked(ErrWrite)
	}
	return false
}

// setErrorLocked is _setError / _abort: the error, and the update ended.
func (up *Update) setErrorLocked(e Err) {
	up.err = e
	up.resetLocked()
	up.failSessionLocked("")
}

func (up *Update) failSessionLocked(reason string) {
	if up.u != nil && !up.u.Done() && !up.failed {
		up.failed = true
		if reason != "" {
			up.u.SetReason(reason)
		}
	}
}

// resetLocked is _reset(): nothing running, the buffer gone.
func (up *Update) resetLocked() {
	up.running, up.fs, up.size, up.progress = false, false, 0, 0
	up.head, up.flushed, up.badMagic = nil, false, false
}

// Answered records what the device answered about this update: the
// session that ended (installed, or failed) takes status and text (0 and
// "" when it answered nothing). A session still running is left open.
// false when there was no session to record it in.
func (up *Update) Answered(status int, text string) bool {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.closeSessionLocked(status, text, "")
}

func (up *Update) closeSessionLocked(status int, text, reason string) bool {
	switch {
	case up.u == nil || up.u.Done():
		return false
	case up.installed:
		up.u.Succeed(status, text)
	case up.failed || !up.running:
		up.u.Fail(status, text, reason)
	default:
		return true
	}
	up.u, up.installed, up.failed = nil, false, false
	return true
}

// Installed reports whether the last end() made a new boot image whose
// answer is not recorded yet.
func (up *Update) Installed() bool {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.installed
}

// Discard records an upload the device answered status/text for but
// installed nothing from (outcome "discarded"): the silent 200s.
func (up *Update) Discard(r *core.Request, status int, text, reason string) {
	up.mu.Lock()
	defer up.mu.Unlock()
	u := up.u
	if u == nil || u.Done() || up.running {
		u = up.e.NewUpload(r.Context(), "http", r.Path(), r.Remote(), r.ContentLength())
	} else {
		up.u, up.installed, up.failed = nil, false, false
	}
	u.EndAnswered("discarded", status, text, reason)
}
