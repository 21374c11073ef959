package espota

import (
	"errors"
	"fmt"
)

// ErrDisconnect: when Begin, Write or End returns an error wrapping it, the
// device drops the TCP connection (an abortive close, RST) without sending
// any text — a simulated link drop or power loss.
var ErrDisconnect = errors.New("espota: connection dropped")

// ErrPowerLoss: when Begin, Write or End returns an error wrapping it, the
// device vanishes: no text and no close. With Config.Hold set the data
// connection is handed to it untouched (the host's timeout must notice);
// without, it is reset as for ErrDisconnect.
var ErrPowerLoss = errors.New("espota: the device lost power")

// UpdateError is an Update-class failure as the device reports it. Msg is
// the error string (getErrorString / errorString); Code is the Update error
// number, which ESP8266 prints as "ERROR[<Code>]: <Msg>". ESP32 prints only
// Msg. An Updater may return any error: a plain error's text is used as Msg
// and, on ESP8266, the code is looked up from the text.
type UpdateError struct {
	Code int
	Msg  string
}

func (e *UpdateError) Error() string { return e.Msg }

// UpdateErrKind names an Update-class failure independently of the core.
type UpdateErrKind int

// The failures both cores know (plus ESP32-only ones, reported as UNKNOWN on
// ESP8266).
const (
	ErrKindWrite       UpdateErrKind = iota + 1 // Flash Write Failed
	ErrKindErase                                // Flash Erase Failed
	ErrKindRead                                 // Flash Read Failed
	ErrKindSpace                                // Not Enough Space
	ErrKindSize                                 // Bad Size Given
	ErrKindStream                               // Stream Read Timeout
	ErrKindMD5                                  // MD5 Check Failed (use NewMD5Error for ESP8266's detailed text)
	ErrKindMagicByte                            // Wrong Magic Byte / Magic byte is not 0xE9
	ErrKindActivate                             // Could Not Activate The Firmware (ESP32)
	ErrKindNoPartition                          // Partition Could Not be Found (ESP32)
	ErrKindBadArgument                          // Bad Argument (ESP32)
	ErrKindAborted                              // Aborted (ESP32)
	ErrKindDecrypt                              // Decryption error (ESP32)
)

type errDef struct {
	code int
	msg  string
}

// errDefs gives the code and text each core uses (Updater.cpp/Updater.h of
// arduino-esp32 and esp8266/Arduino). The cores share codes 1–7; they differ
// in the MD5 and magic-byte texts, and ESP8266 lacks the ESP32-only kinds.
// A function rather than a map variable: no package-level mutable state.
func errDefs(f Flavor, k UpdateErrKind) errDef {
	if f == ESP8266 {
		switch k {
		case ErrKindMD5:
			return errDef{7, "MD5 verification failed"}
		case ErrKindMagicByte:
			return errDef{10, "Magic byte is not 0xE9"}
		case ErrKindActivate, ErrKindNoPartition, ErrKindBadArgument, ErrKindAborted, ErrKindDecrypt:
			return errDef{255, "UNKNOWN"}
		}
	}
	switch k {
	case ErrKindWrite:
		return errDef{1, "Flash Write Failed"}
	case ErrKindErase:
		return errDef{2, "Flash Erase Failed"}
	case ErrKindRead:
		return errDef{3, "Flash Read Failed"}
	case ErrKindSpace:
		return errDef{4, "Not Enough Space"}
	case ErrKindSize:
		return errDef{5, "Bad Size Given"}
	case ErrKindStream:
		return errDef{6, "Stream Read Timeout"}
	case ErrKindMD5:
		return errDef{7, "MD5 Check Failed"}
	case ErrKindMagicByte:
		return errDef{8, "Wrong Magic Byte"}
	case ErrKindActivate:
		return errDef{9, "Could Not Activate The Firmware"}
	case ErrKindNoPartition:
		return errDef{10, "Partition Could Not be Found"}
	case ErrKindBadArgument:
		return errDef{11, "Bad Argument"}
	case ErrKindAborted:
		return errDef{12, "Aborted"}
	case ErrKindDecrypt:
		return errDef{13, "Decryption error"}
	}
	return errDef{255, "UNKNOWN"}
}

// NewUpdateError returns the error the given core's Update class reports for
// kind k, with that core's text and number.
func NewUpdateError(f Flavor, k UpdateErrKind) *UpdateError {
	d := errDefs(f, k)
	return &UpdateError{Code: d.code, Msg: d.msg}
}

// NewMD5Error is the MD5 mismatch error: "MD5 Check Failed" on ESP32,
// "MD5 verification failed: expected: <e>, calculated: <c>" on ESP8266.
func NewMD5Error(f Flavor, expected, calculated string) *UpdateError {
	e := NewUpdateError(f, ErrKindMD5)
	if f == ESP8266 {
		e.Msg = fmt.Sprintf("MD5 verification failed: expected: %s, calculated: %s", expected, calculated)
	}
	return e
}

// errorText is the update error as the device prints it onto the TCP stream
// (Update.printError): ESP32 "<text>\r\n" (println), ESP8266
// "ERROR[<n>]: <text>\n".
func errorText(f Flavor, err error) string {
	msg, code := err.Error(), -1
	var ue *UpdateError
	if errors.As(err, &ue) {
		msg, code = ue.Msg, ue.Code
	}
	if f != ESP8266 {
		return msg + "\r\n"
	}
	if code < 0 {
		code = esp8266CodeFor(msg)
	}
	return fmt.Sprintf("ERROR[%d]: %s\n", uint8(code), msg)
}

// esp8266CodeFor guesses the ESP8266 error number from a text, for Updaters
// that return plain errors.
func esp8266CodeFor(msg string) int {
	for k := ErrKindWrite; k <= ErrKindDecrypt; k++ {
		if errDefs(ESP32, k).msg == msg || errDefs(ESP8266, k).msg == msg {
			return errDefs(ESP8266, k).code
		}
	}
	if len(msg) >= len("MD5 verification failed") && msg[:len("MD5 verification failed")] == "MD5 verification failed" {
		return 7
	}
	return 255
}
