package image

import (
	"bytes"
	"encoding/binary"
)

// cString returns b up to its first NUL (or all of b when it has none),
// as IDF fields may fill their whole array.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// parseAppDesc decodes the 256-byte esp_app_desc_t (§2); len(b) >= 256.
func parseAppDesc(b []byte) *AppDesc {
	d := &AppDesc{
		SecureVersion:  binary.LittleEndian.Uint32(b[4:]),
		Version:        cString(b[16:48]),
		ProjectName:    cString(b[48:80]),
		Time:           cString(b[80:96]),
		Date:           cString(b[96:112]),
		IDFVer:         cString(b[112:144]),
		MinEfuseBlkRev: binary.LittleEndian.Uint16(b[176:]),
		MaxEfuseBlkRev: binary.LittleEndian.Uint16(b[178:]),
		MMUPageSize:    b[180],
		SPIFlashMode:   b[181],
	}
	copy(d.ELFSHA256[:], b[144:176])
	return d
}

// parseBootDesc decodes the 80-byte esp_bootloader_desc_t (§2.1); len(b) >= 80.
func parseBootDesc(b []byte) *BootloaderDesc {
	return &BootloaderDesc{
		SecureVersion: b[3],
		Version:       binary.LittleEndian.Uint32(b[4:]),
		IDFVer:        cString(b[8:40]),
		DateTime:      cString(b[40:64]),
	}
}

// MaxDescText is the longest version, project_name or idf_ver string
// esp_app_desc_t holds: a char[32] that keeps its NUL.
const MaxDescText = 31

// putCString writes s NUL-padded into dst, keeping room for a NUL as IDF does.
func putCString(dst []byte, s string) {
	if len(s) > len(dst)-1 {
		s = s[:len(dst)-1]
	}
	copy(dst, s)
}
