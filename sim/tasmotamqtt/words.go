package tasmotamqtt

import "fmt"

// The words of ESPhttpUpdate.getLastErrorString() that UPGRADE "Failed …"
// carries: the HTTP updater's own errors (tasmotafw.Err…, the same on both
// cores), and "Update error: " with the Updater's error (ESP8266:
// printError's "ERROR[n]: " and text; ESP32: the text alone).

// errActivate is ESP32's UPDATE_ERROR_ACTIVATE: the image does not verify.
const errActivate = "Update error: Could Not Activate The Firmware"

// streamError is UPDATE_ERROR_STREAM: the body ended (or stalled) before
// Content-Length bytes.
func streamError(esp8266 bool) string {
	if esp8266 {
		return "Update error: ERROR[6]: Stream Read Timeout"
	}
	return "Update error: Stream Read Timeout"
}

// md5Error is UPDATE_ERROR_MD5 at Update.end().
func md5Error(esp8266 bool, want, got string) string {
	if esp8266 {
		return fmt.Sprintf("Update error: ERROR[7]: MD5 Failed: expected:%s, calculated:%s", want, got)
	}
	return "Update error: MD5 Check Failed"
}
