package fakedev

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
)

// Build is the identity of one app image: what a device running it tells.
type Build struct {
	Project string
	Version string
	// ELF is the lower-case hex SHA-256 of the app's ELF (64 characters),
	// "" when the image carries none.
	ELF string
	// Secure is the anti-rollback counter (secure_version).
	Secure uint32
}

// Layout of an ESP32-family app image (research/esp-image.md §1–§2): a
// 24-byte header, the first segment header (8 bytes), then segment 0's data,
// which starts with esp_app_desc_t at file offset 0x20.
const (
	imageMagic   = 0xE9
	appDescOff   = 0x20
	appDescMagic = 0xABCD5432
	appDescLen   = 256
)

var errNoDesc = errors.New("no app descriptor at offset 0x20")

// IdentityOf reads the identity an ESP32-family app image carries in its
// app descriptor: version, project, secure version and ELF SHA-256 (all
// zero bytes mean none).
func IdentityOf(img []byte) (Build, error) {
	if len(img) < appDescOff+appDescLen || img[0] != imageMagic {
		return Build{}, errNoDesc
	}
	d := img[appDescOff : appDescOff+appDescLen]
	if binary.LittleEndian.Uint32(d[0:]) != appDescMagic {
		return Build{}, errNoDesc
	}
	b := Build{
		Secure:  binary.LittleEndian.Uint32(d[4:]),
		Version: cString(d[16:48]),
		Project: cString(d[48:80]),
	}
	elf := d[144:176]
	for _, c := range elf {
		if c != 0 {
			b.ELF = hex.EncodeToString(elf)
			break
		}
	}
	return b, nil
}

// cString is a NUL-padded char array up to its first NUL.
func cString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
