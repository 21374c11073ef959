package upload

import "strings"

// The one table of what a device's words mean (device-contract.md §2 for
// ESP-IDF's httpd handlers, research/espota.md §1.9 for the Arduino
// Updater's error strings). Both transports classify through it, so the
// retry policy cannot drift between them.
var wordClasses = []struct {
	words string // matched case-insensitively as a prefix of the device's text
	class Class
	why   string
}{
	// HTTP (seed and OTS firmware).
	{"Authentication required", ClassAuth, "the device wants a token: pass --token or --password"},
	{"Invalid credentials", ClassAuth, "the device refused the token: check --token or --password"},
	{"OTA begin failed", ClassBusy, "the device could not start an update; ESP-IDF answers this while the running image is still pending_verify from the last update"},
	{"Receive failed", ClassNetwork, "the device lost the connection while receiving"},
	{"Upload failed", ClassNetwork, "the device lost the connection while receiving"},
	{"Write failed", ClassWriteFailed, "the device could not write the image to flash (wrong first byte, or larger than its slot)"},
	{"OTA end failed", ClassRejected, "the device rejected the image after receiving it (checksum, SHA-256 or chip did not validate)"},
	{"No OTA partition", ClassRejected, "the device has no OTA partition: flash it over serial with an OTA partition table"},
	{"No update partition", ClassRejected, "the device has no OTA partition: flash it over serial with an OTA partition table"},
	{"Set boot partition failed", ClassRejected, "the device received the image but could not select it for boot"},
	{"Invalid firmware size", ClassRejected, "the device refused the size (the OTS web app takes 1 byte to 3 MB)"},

	// espota (arduino-esp32 and esp8266 Updater texts).
	{"Authentication Failed", ClassAuth, "wrong espota password: check --password"},
	{"Wrong Magic Byte", ClassRejected, "the file is not an app image the device can boot"},
	{"Magic byte is not 0xE9", ClassRejected, "the file is not an app image the device can boot"},
	{"MD5 Check Failed", ClassRejected, "the received image did not match its MD5"},
	{"MD5 verification failed", ClassRejected, "the received image did not match its MD5"},
	{"Decryption error", ClassRejected, "the device tried to decrypt the image and failed: send a plain app image, or set the device's OTA key"},
	{"Not Enough Space", ClassRejected, "the image is larger than the device's app slot"},
	{"Bad Size Given", ClassRejected, "the image is larger than the device's app slot"},
	{"Flash Write Failed", ClassWriteFailed, "the device could not write to flash"},
	{"Flash Erase Failed", ClassWriteFailed, "the device could not erase its flash"},
	{"Flash Read Failed", ClassWriteFailed, "the device could not read back its flash"},
	{"Stream Read Timeout", ClassNetwork, "the device waited too long for data"},
	{"Could Not Activate The Firmware", ClassRejected, "the device received the image but could not select it for boot"},
	{"Partition Could Not be Found", ClassRejected, "the device has no partition for this upload"},
	{"Bad Argument", ClassRejected, "the device refused the upload's parameters"},
	{"Aborted", ClassNetwork, "the device aborted the upload"},
	// esp8266/Arduino Updater texts (after its "ERROR[n]: " prefix).
	{"Magic byte is wrong", ClassRejected, "the file is not an app image the device can boot"},
	{"Signature verification failed", ClassRejected, "the device takes only images signed with its key: sign the image"},
	{"Flash config wrong", ClassRejected, "the image's flash size or mode does not match the device's flash chip: build it for this board"},
	{"New Flash config wrong", ClassRejected, "the image's flash size or mode does not match the device's flash chip: build it for this board"},
	{"Invalid bootstrapping state", ClassRejected, "the ESP8266 must be reset (power-cycled) once after a serial flash before it can update over the air"},
}

// ClassifyAnswer turns a device's answer into a class and a one-line reason.
// status is the HTTP status (0 for espota); words is the device's text.
func ClassifyAnswer(status int, words string) (Class, string) {
	w := strings.TrimSpace(words)
	for _, e := range wordClasses {
		if len(w) >= len(e.words) && strings.EqualFold(w[:len(e.words)], e.words) {
			return e.class, e.why
		}
	}
	switch {
	case status >= 300 && status < 400:
		return ClassRejected, "the device redirects the upload elsewhere: give the URL it redirects to as the target"
	case status == 401 || status == 403:
		return ClassAuth, "the device refused the credentials: check --token, --user or --password"
	case status == 404 || status == 405:
		return ClassRejected, "the device has no upload handler at this path: check the URL (/update, /ota/upload)"
	case status == 408:
		return ClassTimeout, "the device timed out waiting for data"
	case status == 411:
		return ClassRejected, "the device wants a Content-Length it did not get"
	case status == 413:
		return ClassRejected, "the image is larger than the device takes"
	case status == 414:
		return ClassRejected, "the device refused the URL as too long (ESP-IDF takes 512 bytes)"
	case status == 431:
		return ClassRejected, "the device refused the request headers as too long (ESP-IDF takes 512 bytes in all): use a shorter token"
	case status >= 400 && status < 500:
		return ClassRejected, "the device refused the request"
	case status >= 500:
		return ClassRejected, "the device reported an error it did not name"
	}
	return ClassRejected, "the device answered with an error"
}

// ClassEarlyAnswer: the device said it accepted the image (HTTP 2xx,
// espota OK) before it had acknowledged every byte (ErrEarlyAnswer). Not
// an OTA handler that installs what it was sent, or a device that may
// still be reading: never resent blindly; DeviceError.Taken tells how much
// it took.
const ClassEarlyAnswer Class = "early-answer"

// Retries is how many more tries a class allows after a failure, given the
// user's --retries budget (see issue "push" §7): auth, rejections, early
// answers and names that do not resolve never; Write failed and
// no-connect-back once; busy once, after waiting out the stability window;
// nothing listening once, after NothingListensWait; network, timeouts and
// unreachable devices the budget.
func (c Class) Retries(budget int) int {
	switch c {
	case ClassAuth, ClassRejected, ClassEarlyAnswer, ClassUnresolved:
		return 0
	case ClassWriteFailed, ClassNoConnectBack, ClassBusy, ClassNothingListens:
		return min(1, budget)
	}
	return budget
}

// failedDespiteOK are texts some firmware answers with a 2xx status although
// the update failed (Tasmota's upload page answers 200 "Upload Failed" with
// a reason, research/espota.md §6), matched case-insensitively anywhere in
// the device's text.
var failedDespiteOK = []string{"upload failed", "update failed", "ota failed"}

// Accepted reports whether an answer means the device took the image: a 2xx
// status whose text does not say the update failed. Everything else goes
// through ClassifyAnswer.
func Accepted(status int, words string) bool {
	if status < 200 || status > 299 {
		return false
	}
	w := strings.ToLower(words)
	for _, f := range failedDespiteOK {
		if strings.Contains(w, f) {
			return false
		}
	}
	return true
}
