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
	case status == 401 || status == 403:
		return ClassAuth, "the device refused the credentials: check --token, --user or --password"
	case status == 404 || status == 405:
		return ClassRejected, "the device has no upload handler at this path: check the URL (/update, /ota/upload)"
	case status == 408:
		return ClassTimeout, "the device timed out waiting for data"
	case status >= 400 && status < 500:
		return ClassRejected, "the device refused the request"
	case status >= 500:
		return ClassRejected, "the device reported an error it did not name"
	}
	return ClassRejected, "the device answered with an error"
}

// Retries is how many more tries a class allows after a failure, given the
// user's --retries budget (see issue "push" §7): auth and rejections never;
// Write failed and no-connect-back once; busy once, after waiting out the
// stability window; network, timeouts and unreachable devices the budget.
func (c Class) Retries(budget int) int {
	switch c {
	case ClassAuth, ClassRejected:
		return 0
	case ClassWriteFailed, ClassNoConnectBack, ClassBusy:
		return min(1, budget)
	}
	return budget
}
