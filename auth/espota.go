package auth

import (
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// EspotaPBKDF2Iterations is the fixed PBKDF2 iteration count of ArduinoOTA
// core ≥ 3.3.1 and espota.py ≥ 2025-09-04.
const EspotaPBKDF2Iterations = 10000

// MD5Hex returns the lowercase hex MD5 of b.
func MD5Hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// SHA256Hex returns the lowercase hex SHA-256 of b.
func SHA256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// EspotaPasswordHashMD5 is what ArduinoOTA's setPassword stores on ESP8266
// and ESP32 core ≤ 3.3.0 (and what espota's -m mode feeds into PBKDF2):
// md5hex(password).
func EspotaPasswordHashMD5(password Secret) Secret {
	if password.IsZero() {
		return Secret{}
	}
	return NewSecret(MD5Hex([]byte(password.Reveal())))
}

// EspotaPasswordHashSHA256 is what ArduinoOTA's setPassword stores on ESP32
// core ≥ 3.3.1: sha256hex(password).
func EspotaPasswordHashSHA256(password Secret) Secret {
	if password.IsZero() {
		return Secret{}
	}
	return NewSecret(SHA256Hex([]byte(password.Reveal())))
}

// EspotaMD5Response is the legacy (MD5 digest) auth response:
// md5hex(passHashHex + ":" + nonce + ":" + cnonce).
func EspotaMD5Response(passHashHex, nonce, cnonce string) string {
	return MD5Hex([]byte(passHashHex + ":" + nonce + ":" + cnonce))
}

// EspotaPBKDF2Response is the PBKDF2 auth response of core ≥ 3.3.1:
// dk = PBKDF2-HMAC-SHA256(ascii(passHashHex), nonce+":"+cnonce, 10000, 32),
// response = sha256hex(hex(dk) + ":" + nonce + ":" + cnonce).
//
// It returns "" only if the standard library refuses the parameters, which it
// does not for these (32-byte key, salt far above the FIPS minimum); an empty
// response never matches a device's expectation.
func EspotaPBKDF2Response(passHashHex, nonce, cnonce string) string {
	salt := nonce + ":" + cnonce
	dk, err := pbkdf2.Key(sha256.New, passHashHex, []byte(salt), EspotaPBKDF2Iterations, sha256.Size)
	if err != nil {
		return ""
	}
	return SHA256Hex([]byte(hex.EncodeToString(dk) + ":" + salt))
}

// EspotaCnonce is espota.py's deterministic client nonce:
// hash(filename + decimal size + md5hex + remoteAddr), where remoteAddr is the
// -i argument exactly as typed. long selects SHA-256 (64 hex, PBKDF2 mode)
// over MD5 (32 hex, legacy mode). The device never recomputes it; any hex
// string of the right length works, this one gives byte-identical traffic.
func EspotaCnonce(filename string, size int, md5hex, remoteAddr string, long bool) string {
	text := []byte(filename + strconv.Itoa(size) + md5hex + remoteAddr)
	if long {
		return SHA256Hex(text)
	}
	return MD5Hex(text)
}
