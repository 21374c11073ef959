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
	// ERROR[13]: the ESP8266 Updater buffers 4096 bytes and checks, before
	// it writes that last buffer, that anything was written (core 3.0.0
	// on), so an image of 4096 bytes or less is never taken.
	{"No data supplied", ClassRejected, "the image is 4096 bytes or less, which an ESP8266 never takes: it is not a whole app image (check the file)"},
	{"Out of memory", ClassRejected, "the device ran out of memory for the update: restart it and push again"},
	// ERROR[15] (esp8266 core after 3.1.2): a begin while an update runs;
	// the device drops both.
	{"Update already running", ClassRejected, "another update was running on the device (it has now dropped it): push again once nothing else uploads to it"},

	// The Arduino web uploaders (docs/protocols/form.md, elegantota.md).
	{"Wrong origin received", ClassRejected, "the device's cross-site check refused the upload (its Origin header did not match its Host header): address the device directly, not through a proxy"},
	{"MD5 parameter invalid", ClassRejected, "the device refused the image's MD5 as the hash parameter of /ota/start"},
}

// failureTexts are what the known uploaders put in an answer, often a
// page answered with 200, when the update failed. Each is matched
// case-insensitively (ASCII) anywhere in the answer's visible text, where
// a page may put it after kilobytes of markup; whole ones only as the
// entire text. class and why apply when nothing after the text names the
// cause in wordClasses.
var failureTexts = []struct {
	text  string
	whole bool
	class Class
	why   string
}{
	// arduino-esp32 HTTPUpdateServer and ESP8266HTTPUpdateServer (ESPEasy
	// serves both): every result is 200 text/html, a failure reads
	// "Update error: <the Updater's error>", on ESP8266 "Update error:
	// ERROR[n]: <text>" (research/uploaders.md §2, §3, §7;
	// device-contract.md §6).
	{text: "Update error:", class: ClassRejected, why: "the device's updater refused the image (its words say why)"},
	// WLED: 500 "Update failed!" and a reason (uploaders.md §5); the
	// generic wording of any other page.
	{text: "Update failed", class: ClassRejected, why: "the device says the update failed (its words say why)"},
	// Tasmota's upload page: 200 HTML with "Upload" "Failed" and the
	// reason in English builds (uploaders.md §6; localized builds word it
	// in their language and are left to verification); the seed and OTS
	// firmware's 500 "Upload failed" (device-contract.md §2).
	{text: "Upload failed", class: ClassNetwork, why: "the device lost the connection while receiving"},
	// Generic.
	{text: "OTA failed", class: ClassRejected, why: "the device says the update failed (its words say why)"},
	// ElegantOTA v2 on ESP32: 200 text/plain "FAIL" (uploaders.md §4.2).
	{text: "FAIL", whole: true, class: ClassRejected, why: "the device's updater reported a failure it did not name"},
}

// FailureTextAt is the byte index in text of the first failure text, -1 when
// there is none.
func FailureTextAt(text string) int {
	lower := asciiLower(text)
	at := -1
	for _, f := range failureTexts {
		t := asciiLower(f.text)
		if f.whole {
			if strings.TrimSpace(lower) == t {
				return strings.Index(lower, t)
			}
			continue
		}
		if i := strings.Index(lower, t); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	return at
}

// asciiLower lower-cases ASCII letters only, so byte offsets stay valid.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// CutErrorNumber drops the ESP8266 Updater's "ERROR[<n>]: " prefix.
func CutErrorNumber(w string) string {
	if rest, ok := strings.CutPrefix(w, "ERROR["); ok {
		if i := strings.Index(rest, "]:"); i >= 0 && isDigits(rest[:i]) {
			return strings.TrimSpace(rest[i+2:])
		}
	}
	return w
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func classifyWords(w string) (Class, string, bool) {
	for _, e := range wordClasses {
		if len(w) >= len(e.words) && strings.EqualFold(w[:len(e.words)], e.words) {
			return e.class, e.why, true
		}
	}
	return "", "", false
}

// ClassifyAnswer turns a device's answer into a class and a one-line reason.
// status is the HTTP status (0 for espota); words is the device's text.
// Words that begin with a failure text ("Update error: ERROR[10]: Magic
// byte is not 0xE9") are classified by the cause after it, else by the
// failure text itself, whatever the status.
func ClassifyAnswer(status int, words string) (Class, string) {
	w := strings.TrimSpace(words)
	for _, f := range failureTexts {
		if f.whole && strings.EqualFold(w, f.text) {
			return f.class, f.why
		}
		if f.whole || len(w) < len(f.text) || !strings.EqualFold(w[:len(f.text)], f.text) {
			continue
		}
		// WLED's "Update failed!", Tasmota's "Upload Failed." or ":".
		cause := CutErrorNumber(strings.TrimSpace(strings.TrimLeft(w[len(f.text):], "!.:- ")))
		if c, why, ok := classifyWords(cause); ok {
			return c, why
		}
		if c, why, ok := classifyWords(w); ok {
			return c, why
		}
		return f.class, f.why
	}
	// ElegantOTA answers the ESP8266 Updater's "ERROR[13]: No data
	// supplied" with no "Update error:" before it.
	if c, why, ok := classifyWords(CutErrorNumber(w)); ok {
		return c, why
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

// Accepted reports whether an answer means the device took the image: a 2xx
// status whose text holds no failure text (failureTexts). Everything else
// goes through ClassifyAnswer.
func Accepted(status int, words string) bool {
	return status >= 200 && status <= 299 && FailureTextAt(words) < 0
}
