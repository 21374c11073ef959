package fakedev

import "fmt"

// updater is the Arduino core's Update object as the web uploaders see it
// (research18.md §1.4–§1.5, uploaders.md §1.1–§1.2): one per device, it
// outlives requests, and its error stays until the next successful begin.
// Only what changes an answer is modelled: begin, write, end, the error
// texts and the image checks.
type updater struct {
	esp8266 bool
	// master: the ESP8266 core's git master after 3.1.2, where a begin
	// while an update runs sets ERROR[15] and aborts it.
	master bool
	// core274: ESP8266 core 2.7.4, before the ERROR[13] check.
	core274 bool

	running bool
	fs      bool
	size    int64  // what begin reserved
	data    []byte // what was written
	err     string // the error as printError prints it (with its line end); "" = none
}

// The error codes of ESP8266's Updater.h that the fakes produce, and the
// texts both cores print for them.
const (
	errSpace    = 4
	errSize     = 5
	errMagic    = 10
	errNoData   = 13
	errRunning  = 15
	errDecrypt  = 100 // ESP32 only
	errFlashRd  = 101 // ESP32 only
	errAborted  = 102 // ESP32 only
	esp32Header = 0xE9
)

var errTexts = map[int]string{
	errSpace:   "Not Enough Space",
	errSize:    "Bad Size Given",
	errMagic:   "Magic byte is not 0xE9",
	errNoData:  "No data supplied",
	errRunning: "Update already running",
	errDecrypt: "Decryption error",
	errFlashRd: "Flash Read Failed",
	errAborted: "Aborted",
}

// setError records an error the way printError words it and resets the
// update, as both cores do on any error.
func (u *updater) setError(code int) {
	if u.esp8266 {
		u.err = fmt.Sprintf("ERROR[%d]: %s\n", code, errTexts[code])
	} else {
		u.err = errTexts[code] + "\r\n"
	}
	u.running, u.data = false, nil
}

func (u *updater) hasError() bool { return u.err != "" }

// begin starts an update of size bytes. While one runs it returns false
// and sets no error (ESP32, ESP8266 up to 3.1.2), or, on ESP8266 master,
// sets ERROR[15] and aborts the running one.
func (u *updater) begin(size int64, fs bool) bool {
	if u.running {
		if u.esp8266 && u.master {
			u.setError(errRunning)
		}
		return false
	}
	u.err, u.data = "", nil
	if size <= 0 {
		u.setError(errSize)
		return false
	}
	u.running, u.fs, u.size = true, fs, size
	return true
}

// write takes the next bytes of the image; false when they were not all
// taken (no update running: no error is set; an error: it is set).
func (u *updater) write(b []byte) bool {
	if u.hasError() || !u.running {
		return len(b) == 0
	}
	if int64(len(u.data)+len(b)) > u.size {
		u.setError(errSpace)
		return false
	}
	before := len(u.data)
	u.data = append(u.data, b...)
	// ESP32 writes in 4 KiB sectors: the first full one decides whether an
	// app image is encrypted (first byte not 0xE9), and with no key that
	// fails before the magic byte is checked.
	if !u.esp8266 && before < 4096 && len(u.data) > 4096 && !u.fs && u.data[0] != esp32Header {
		u.setError(errDecrypt)
		return false
	}
	return true
}

// end finishes the update with what was written (end(true)); false with
// the error set when the image is refused, false with none when no update
// runs.
func (u *updater) end() bool {
	if u.hasError() || !u.running {
		return false
	}
	n := len(u.data)
	switch {
	case u.esp8266 && !u.core274 && n <= 4096:
		// The last buffer is flushed only after the check that anything
		// was written: an image of at most 4096 bytes "supplied no data".
		u.setError(errNoData)
		return false
	case u.esp8266 && !u.fs && !(n > 0 && u.data[0] == esp32Header) && !(n > 1 && u.data[0] == 0x1F && u.data[1] == 0x8B):
		u.setError(errMagic)
		return false
	case !u.esp8266 && n == 0:
		u.setError(errFlashRd)
		return false
	case !u.esp8266 && !u.fs && u.data[0] != esp32Header:
		u.setError(errDecrypt)
		return false
	}
	u.running = false
	return true
}

// abort is end() on a connection that broke mid-upload: ESP32 records
// Aborted, ESP8266 just resets.
func (u *updater) abort() {
	if !u.running {
		return
	}
	if u.esp8266 {
		u.running, u.data = false, nil
		return
	}
	u.setError(errAborted)
}
