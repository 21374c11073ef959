package espota

import (
	"strings"

	"github.com/ots-ota/ots-ota/upload"
)

// maxAnswerText bounds what is kept of a device's non-count text: the
// longest Update error (ESP8266's MD5 message with both sums) is under 128
// bytes, and a misbehaving peer must not grow memory without end.
const maxAnswerText = 256

// espotaAnswer reads the device's side of the espota data connection: a run
// of undelimited decimal counts ("14601460…", research/espota.md §1.9, which
// cannot be split and only show that the device is alive), then either "OK"
// (possibly glued to the last count, "904OK") or an Update error text
// ("Wrong Magic Byte\r\n", ESP8266 "ERROR[10]: Magic byte is not 0xE9\n").
// Counts are digits only and no error text starts with "OK", so the first
// non-digit byte starts the final answer. Feed it any split of the stream.
type espotaAnswer struct {
	digits int    // count digits seen
	text   []byte // the final answer as received so far, capped
	more   int    // bytes of text dropped beyond the cap
}

func (a *espotaAnswer) feed(p []byte) {
	for i, c := range p {
		if len(a.text) == 0 && c >= '0' && c <= '9' {
			a.digits++
			continue
		}
		rest := p[i:]
		room := maxAnswerText - len(a.text)
		if len(rest) > room {
			a.more += len(rest) - room
			rest = rest[:room]
		}
		a.text = append(a.text, rest...)
		return
	}
}

// alive reports whether the device acknowledged anything yet.
func (a *espotaAnswer) alive() bool { return a.digits > 0 }

// ok reports whether the device's final answer is its success "OK".
func (a *espotaAnswer) ok() bool {
	return len(a.text) >= 2 && a.text[0] == 'O' && a.text[1] == 'K'
}

// countsAfterOK reports whether a count followed the OK: the device took
// data after it said OK, so the OK came before it had the whole image
// (ArduinoOTA sends nothing after its OK).
func (a *espotaAnswer) countsAfterOK() bool {
	return a.ok() && len(a.text) > 2 && a.text[2] >= '0' && a.text[2] <= '9'
}

// started reports whether the final answer has begun.
func (a *espotaAnswer) started() bool { return len(a.text) > 0 }

// complete reports whether the final answer is whole: "OK", or an error
// text up to its line end (both cores print errors with a trailing LF).
func (a *espotaAnswer) complete() bool {
	if a.ok() {
		return true
	}
	if len(a.text) == 1 && a.text[0] == 'O' {
		return false // maybe the first half of "OK"
	}
	for _, c := range a.text {
		if c == '\n' {
			return true
		}
	}
	return a.more > 0
}

// words is the device's error text, one line, printable only; "" for OK or
// when nothing but counts came.
func (a *espotaAnswer) words() string {
	if a.ok() {
		return ""
	}
	return cleanWords(string(a.text))
}

// cleanWords makes a device's text safe for one line of output: the first
// line, control and non-ASCII bytes dropped, trimmed, at most 200 bytes.
func cleanWords(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 200; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// classifyEspotaWords classifies a device's espota text through the one
// table, after removing the ESP8266 framing: "ERR: " on the UDP answer to an
// invitation whose Update.begin failed, "ERROR[<n>]: " from printError.
func classifyEspotaWords(words string) (upload.Class, string) {
	w := strings.TrimSpace(words)
	w = strings.TrimSpace(strings.TrimPrefix(w, "ERR:"))
	return upload.ClassifyAnswer(0, upload.CutErrorNumber(w))
}

// espotaReplyKind is what a device's UDP datagram says.
type espotaReplyKind int

const (
	replyOther      espotaReplyKind = iota // anything else (words kept)
	replyOK                                // "OK": invitation (or auth) accepted
	replyAuth                              // "AUTH <nonce>"
	replyAuthFailed                        // "Authentication Failed"
	replyErr                               // ESP8266 "ERR: <Update error>"
)

// parseEspotaReply reads one UDP reply. Replies are bare ASCII without a
// line end (research/espota.md §1.4), but trim defensively.
func parseEspotaReply(b []byte) (kind espotaReplyKind, nonce string) {
	s := strings.TrimSpace(string(b))
	switch {
	case s == "OK":
		return replyOK, ""
	case strings.HasPrefix(s, "AUTH "):
		return replyAuth, strings.TrimSpace(s[len("AUTH "):])
	case strings.HasPrefix(s, "Authentication Failed"):
		return replyAuthFailed, ""
	case strings.HasPrefix(s, "ERR"):
		return replyErr, ""
	}
	return replyOther, ""
}

// isHexNonce reports whether a nonce has a length the host knows (32: MD5,
// 64: PBKDF2) and is lowercase hex, so it can be hashed as sent.
func isHexNonce(n string) bool {
	if len(n) != 32 && len(n) != 64 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}
