package upload

import (
	"strings"
	"testing"
)

func TestClassifyAnswer(t *testing.T) {
	for _, tc := range []struct {
		status int
		words  string
		want   Class
	}{
		{401, "Authentication required", ClassAuth},
		{403, "Invalid credentials", ClassAuth},
		{403, "", ClassAuth},
		{500, "OTA begin failed", ClassBusy},
		{500, "Receive failed", ClassNetwork},
		{500, "Upload failed", ClassNetwork},
		{500, "Write failed", ClassWriteFailed},
		{500, "OTA end failed", ClassRejected},
		{400, "Invalid firmware size", ClassRejected},
		{404, "Nothing matches the given URI", ClassRejected},
		{408, "Server closed this connection", ClassTimeout},
		{500, "something new", ClassRejected},
		{0, "Authentication Failed", ClassAuth},
		{0, "Wrong Magic Byte", ClassRejected},
		{0, "Magic byte is not 0xE9", ClassRejected},
		{0, "Decryption error\r\n", ClassRejected},
		{0, "MD5 Check Failed", ClassRejected},
		{0, "Not Enough Space", ClassRejected},
		{0, "Flash Write Failed", ClassWriteFailed},
		{0, "Stream Read Timeout", ClassNetwork},
		{0, "ota end failed", ClassRejected},
		{431, "Header fields are too long", ClassRejected},
		{302, "", ClassRejected},
		{414, "URI is too long", ClassRejected},
		{411, "Client must specify Content-Length", ClassRejected},
		// Failure pages: the cause after the failure text decides.
		{200, "Update error: ERROR[10]: Magic byte is not 0xE9", ClassRejected},
		{200, "Update error: Bad Size Given", ClassRejected},
		{200, "Update error: Flash Write Failed", ClassWriteFailed},
		{200, "Update error: ERROR[13]: No data supplied", ClassRejected},
		{500, "Update failed! Firmware release name mismatch", ClassRejected},
		{200, "Upload Failed Not enough space", ClassRejected},
		{200, "Upload Failed. Upload aborted", ClassNetwork},
		{200, "FAIL", ClassRejected},
	} {
		if got, why := ClassifyAnswer(tc.status, tc.words); got != tc.want || why == "" {
			t.Errorf("ClassifyAnswer(%d, %q) = %s (%q), want %s", tc.status, tc.words, got, why, tc.want)
		}
	}
}

func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		c      Class
		budget int
		want   int
	}{
		{ClassAuth, 3, 0}, {ClassRejected, 3, 0},
		{ClassWriteFailed, 3, 1}, {ClassBusy, 3, 1}, {ClassNoConnectBack, 3, 1},
		{ClassNetwork, 3, 3}, {ClassTimeout, 3, 3}, {ClassUnreachable, 3, 3},
		{ClassWriteFailed, 0, 0}, {ClassNetwork, 0, 0},
	} {
		if got := tc.c.Retries(tc.budget); got != tc.want {
			t.Errorf("%s.Retries(%d) = %d, want %d", tc.c, tc.budget, got, tc.want)
		}
	}
}

func TestAccepted(t *testing.T) {
	for _, tc := range []struct {
		status int
		words  string
		want   bool
	}{
		{200, "OTA update successful, rebooting...", true},
		{200, "Update successful, rebooting...", true},
		{200, "Upload successful. Rebooting...", true},
		{204, "", true},
		{200, "Tasmota Upload Failed Not enough space", false},
		{200, "Update failed!", false},
		{200, "Update error: ERROR[10]: Magic byte is not 0xE9", false},
		{200, "Firmware update Settings Update failed! Not Enough Space", false},
		{200, "FAIL", false},
		{200, "OK", true},
		{200, "Update Success! Rebooting...", true},
		{200, "Failsafe mode off", true},
		{500, "Write failed", false},
		{302, "", false},
		{100, "", false},
	} {
		if got := Accepted(tc.status, tc.words); got != tc.want {
			t.Errorf("Accepted(%d, %q) = %v, want %v", tc.status, tc.words, got, tc.want)
		}
	}
}

// The Arduino web uploaders' words (docs/protocols/form.md,
// elegantota.md): the cause decides the class and the reason says what it
// means, with or without HTTPUpdateServer's "Update error: " before it
// (ElegantOTA answers the Updater's text bare).
func TestClassifyArduinoUploaderWords(t *testing.T) {
	for _, tc := range []struct {
		status int
		words  string
		want   Class
		why    string // in the reason
	}{
		{200, "Update error: ERROR[13]: No data supplied", ClassRejected, "4096 bytes or less"},
		{400, "ERROR[13]: No data supplied", ClassRejected, "4096 bytes or less"},
		{400, "ERROR[10]: Magic byte is not 0xE9", ClassRejected, "not an app image"},
		{400, "ERROR[15]: Update already running", ClassRejected, "another update was running"},
		{200, "Update error: ERROR[14]: Out of memory", ClassRejected, "out of memory"},
		{200, "Update error: Wrong origin received!", ClassRejected, "Origin"},
		{400, "MD5 parameter invalid", ClassRejected, "MD5"},
		{400, "Decryption error", ClassRejected, "decrypt"},
		{200, "Update error: ERROR[6]: Stream Read Timeout", ClassNetwork, "waited too long"},
	} {
		got, why := ClassifyAnswer(tc.status, tc.words)
		if got != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("ClassifyAnswer(%d, %q) = %s (%q), want %s with %q", tc.status, tc.words, got, why, tc.want, tc.why)
		}
	}
}
