package espota

// This file mirrors, byte for byte, how ArduinoOTA reads its UDP datagrams
// (ArduinoOTA.cpp parseInt / readStringUntil / _onRx), including its quirks:
// digits only, no sign, a fixed digit buffer, atoi saturation, one separator
// byte consumed blindly, and String::trim on the md5 only.

// Update commands (Update.h).
const (
	CmdFlash = 0   // U_FLASH: application image
	CmdFS    = 100 // U_SPIFFS (ESP32) / U_FS (ESP8266): filesystem image
	cmdAuth  = 200 // U_AUTH: first field of the host's auth message
)

// pkt is the device's view of one datagram: peek/read one byte at a time,
// -1 at the end.
type pkt struct {
	b []byte
	i int
}

func (p *pkt) peek() int {
	if p.i >= len(p.b) {
		return -1
	}
	return int(p.b[p.i])
}

func (p *pkt) read() int {
	c := p.peek()
	if c >= 0 {
		p.i++
	}
	return c
}

// parseInt is ArduinoOTA's parseInt: skip spaces, then collect ASCII digits
// into a 16-byte buffer. ESP32 stops after INT_BUFFER_SIZE-1 = 15 slots and
// ESP8266 after 16; running out of room returns 0 with the digits consumed,
// so ESP32 accepts at most 14 digits and ESP8266 at most 15. The digits go
// through atoi, which on these 32-bit cores saturates at 2^31-1.
func (p *pkt) parseInt(maxSlots int) int {
	for p.peek() == ' ' {
		p.read()
	}
	var v int64
	for n := 0; n < maxSlots; n++ {
		c := p.peek()
		if c < '0' || c > '9' {
			return int(v)
		}
		p.read()
		if v < maxInt32 {
			v = v*10 + int64(c-'0')
			if v > maxInt32 {
				v = maxInt32
			}
		}
	}
	return 0
}

const maxInt32 = 1<<31 - 1

// readStringUntil reads bytes up to (not including) end, a NUL, or the end
// of the datagram; the terminator is consumed.
func (p *pkt) readStringUntil(end byte) string {
	start := p.i
	for {
		c := p.read()
		if c <= 0 {
			if c == 0 {
				return string(p.b[start : p.i-1])
			}
			return string(p.b[start:p.i])
		}
		if c == int(end) {
			return string(p.b[start : p.i-1])
		}
	}
}

// arduinoTrim is Arduino String::trim: strips isspace() bytes at both ends.
func arduinoTrim(s string) string {
	isSpace := func(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') }
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func intSlots(f Flavor) int {
	if f == ESP8266 {
		return 16
	}
	return 15
}

// invitation is a parsed "<cmd> <port> <size> <md5>\n" datagram.
type invitation struct {
	cmd  int
	port int // as the device holds it; the connect-back uses port&0xFFFF
	size int
	md5  string // exactly 32 bytes, as received (not necessarily hex)
}

// parseInvitation applies the IDLE-state checks; reason says why a datagram
// was ignored (the device sends no reply in that case).
func parseInvitation(b []byte, f Flavor) (inv invitation, reason string, ok bool) {
	p := &pkt{b: b}
	slots := intSlots(f)
	inv.cmd = p.parseInt(slots)
	if inv.cmd != CmdFlash && inv.cmd != CmdFS {
		return invitation{}, "not an invitation (command is not 0 or 100)", false
	}
	inv.port = p.parseInt(slots)
	inv.size = p.parseInt(slots)
	p.read() // one separator byte, whatever it is
	inv.md5 = arduinoTrim(p.readStringUntil('\n'))
	if len(inv.md5) != 32 {
		return invitation{}, "bad md5 length", false
	}
	return inv, "", true
}

// authMessage is a parsed "200 <cnonce> <response>\n" datagram.
type authMessage struct {
	cnonce   string
	response string
}

// parseAuth applies the WAITAUTH-state checks: first field 200, one
// separator byte, cnonce up to a space, response up to LF (not trimmed), both
// exactly fieldLen bytes.
func parseAuth(b []byte, f Flavor, fieldLen int) (a authMessage, reason string, ok bool) {
	p := &pkt{b: b}
	if cmd := p.parseInt(intSlots(f)); cmd != cmdAuth {
		return authMessage{}, "expected an auth message (200)", false
	}
	p.read()
	a.cnonce = p.readStringUntil(' ')
	a.response = p.readStringUntil('\n')
	if len(a.cnonce) != fieldLen || len(a.response) != fieldLen {
		return authMessage{}, "auth param fail (wrong cnonce/response length)", false
	}
	return a, "", true
}
