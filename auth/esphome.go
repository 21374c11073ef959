package auth

// ESPHomeResponse is the answer to an ESPHome native OTA challenge: the
// lowercase hex digest of the password, the device's nonce and the
// client's cnonce, concatenated as text with no separator. sha256 selects
// SHA-256 (the device's nonce byte 0x02, 64-digit nonces), else MD5 (0x01,
// 32 digits; firmware up to 2025). docs/protocols/esphome.md has the source.
func ESPHomeResponse(password Secret, nonce, cnonce string, sha256 bool) string {
	b := []byte(password.Reveal() + nonce + cnonce)
	if sha256 {
		return SHA256Hex(b)
	}
	return MD5Hex(b)
}
