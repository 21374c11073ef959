package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Layout constants (research/esp-image.md §1).
const (
	imageMagic       = 0xE9
	esp8266V2Magic   = 0xEA
	headerLen        = 24
	segHeaderLen     = 8
	maxSegments      = 16
	checksumSeed     = 0xEF
	digestLen        = 32
	appDescOffset    = 0x20
	appDescLen       = 256
	appDescMagic     = 0xABCD5432
	bootDescMagic    = 0x50
	bootDescLen      = 80
	maxSegLen16M     = 0x1000000
	sigSectorLen     = 4096
	sigBlockLen      = 1216
	sbv1Len          = 68
	sbv1Slack        = 12
	partTableMagic   = 0x50AA
	partEntryLen     = 32
	partTableMaxLen  = 0xC00
	defaultAppOffset = 0x10000
)

// Error codes shared by FileError.Code and Finding.Code.
const (
	CodeNotApp           = "not_app_image"
	CodeTruncated        = "truncated"
	CodeBadHeader        = "bad_header"
	CodeBadSegment       = "bad_segment"
	CodeChecksumMismatch = "checksum_mismatch"
	CodeDigestMismatch   = "digest_mismatch"
	CodeChipMismatch     = "chip_mismatch"
	// CodeChipFamilyMismatch: an ESP32-family image for an ESP8266 or the
	// reverse; unlike chip_mismatch, never to be overridden.
	CodeChipFamilyMismatch = "chip_family_mismatch"
	CodeTooLarge           = "too_large"
	CodeNoAppDesc          = "no_app_desc"
	CodeSegmentMisaligned  = "segment_misaligned"
	CodeChipRevTooLow      = "chip_rev_too_low"
	CodeSignatureMismatch  = "signature_mismatch"
	// Warnings.
	CodeNoDigest        = "no_digest"
	CodeProjectMismatch = "project_mismatch"
	CodeSameVersion     = "same_version"
	CodeNearlyFull      = "nearly_full"
	CodeUnsigned        = "unsigned"
	CodeTrailingData    = "trailing_data"
	CodeChipRevAboveMax = "chip_rev_above_max"
	CodePreReleaseChip  = "prerelease_chip"
	CodeUnknownChip     = "unknown_chip"
	CodeBadSignature    = "bad_signature"
)

const hintAppBin = "give the application image: .pio/build/<env>/firmware.bin (PlatformIO), build/<project>.bin (ESP-IDF) or the sketch .bin exported by Arduino"

// Parse identifies data and decodes an ESP32-family image. It never panics,
// never modifies or retains data (digests are copied), and allocates O(1)
// beyond the returned values: segment counts and lengths come from untrusted
// bytes and are checked against the input before anything is allocated.
// The exception is a gzip file, inflated (to at most 2 MiB) to check the
// ESP8266 image it should hold.
//
// An intact esp8266/Arduino image (Kind esp8266, Layout arduino), also
// gzip-compressed, is an application image too: the error is nil.
//
// A non-nil *Image is always returned, with Kind set and the other fields
// filled as far as parsing got. The error is a *FileError when data is not a
// structurally intact application image: a wrong kind of file (Code
// "not_app_image"), a truncated file, a bad header or segment, a checksum or
// an appended-digest mismatch. Policy questions (chip, slot size, app
// description, signatures) are left to Validate.
func Parse(data []byte) (*Image, error) {
	img := &Image{Kind: KindUnknown, Size: len(data)}
	err := parseInto(img, data, true)
	if err == nil {
		return img, nil // not a typed nil inside the error interface
	}
	return img, err
}

func fileErr(k Kind, code, hint, format string, args ...any) *FileError {
	return &FileError{Kind: k, Code: code, Reason: fmt.Sprintf(format, args...), Hint: hint}
}

// notApp sets img.Kind and returns the matching not_app_image error.
func notApp(img *Image, k Kind, hint, format string, args ...any) *FileError {
	img.Kind = k
	return fileErr(k, CodeNotApp, hint, format, args...)
}

func parseInto(img *Image, data []byte, top bool) *FileError {
	n := len(data)
	if n == 0 {
		return notApp(img, KindEmpty, hintAppBin, "the file is empty")
	}
	if n >= 16 && string(data[8:16]) == "littlefs" {
		return notApp(img, KindLittleFS,
			"upload a filesystem image to the data partition (PlatformIO uploadfs), and the application .bin as firmware",
			"this is a LittleFS filesystem image, not application firmware")
	}
	switch {
	case data[0] == imageMagic:
		return parseE9(img, data, top)
	case data[0] == esp8266V2Magic:
		return parseESP8266V2(img, data)
	case bytes.HasPrefix(data, []byte("\x7fELF")):
		return parseELF(img, data)
	case n >= 2 && data[0] == 0xAA && data[1] == 0x50:
		return notApp(img, KindPartitionTable,
			"give the application image (firmware.bin), not partition-table.bin / partitions.bin",
			"this is a partition table%s, not application firmware", describeTable(data))
	case n >= 2 && data[0] == 0x1F && data[1] == 0x8B:
		return parseGzip(img, data, top)
	case bytes.HasPrefix(data, []byte("PK\x03\x04")) || bytes.HasPrefix(data, []byte("PK\x05\x06")):
		return notApp(img, KindZip,
			"extract the application .bin (firmware.bin) from the archive and give that",
			"this is a zip archive, not a raw application image")
	case n >= 8 && bytes.HasPrefix(data, []byte("UF2\n")) && binary.LittleEndian.Uint32(data[4:]) == 0x9E5D5157:
		return notApp(img, KindUF2,
			"UF2 is for drag-and-drop USB bootloaders; give the plain application .bin (firmware.bin)",
			"this is a UF2 container%s, not a raw application image", uf2Family(data))
	case n >= 4 && binary.LittleEndian.Uint32(data) == 0x0788B6CF:
		return notApp(img, KindEncrypted,
			"give the plain application .bin; a pre-encrypted image can only be checked by the device that holds the key",
			"this is a pre-encrypted OTA image (esp_encrypted_img, magic CF B6 88 07); its contents cannot be validated")
	case isIntelHex(data):
		return notApp(img, KindIntelHex,
			"give the raw binary (firmware.bin, or esptool merge-bin --format raw), not the Intel HEX file",
			"this is an Intel HEX text file, not a raw application image")
	case n > 0x1000 && allFF(data[:0x1000]):
		if top {
			for _, off := range []int{0x1000, 0x2000} {
				if off < n && data[off] == imageMagic {
					if err, ok := parseMerged(img, data, off); ok {
						return err
					}
				}
			}
		}
		if allFF(data) {
			return notApp(img, KindUnknown, hintAppBin, "the file is all 0xFF (erased flash), not an application image")
		}
		return notApp(img, KindUnknown, hintAppBin,
			"the file starts with 4 KB of 0xFF (a flash dump?) and holds no bootloader at 0x1000 or 0x2000; not an application image")
	}
	if allFF(data) {
		return notApp(img, KindUnknown, hintAppBin, "the file is all 0xFF (erased flash), not an application image")
	}
	return notApp(img, KindUnknown, hintAppBin,
		"unrecognised file (first bytes % x), not an ESP32 application image (those start with 0xE9)", data[:min(n, 4)])
}

// parseE9 handles files starting with the image magic: ESP32-family images
// (app, bootloader, merged) and ESP8266 v1 images, told apart by the checksum.
func parseE9(img *Image, data []byte, top bool) *FileError {
	n := len(data)
	img.Header.Magic = imageMagic
	if n < headerLen {
		img.Kind = KindApp
		return fileErr(KindApp, CodeTruncated, "the file is incomplete; download or build it again",
			"truncated: the file is %d bytes but an image header alone is %d bytes (%d missing)", n, headerLen, headerLen-n)
	}
	if data[23] > 1 {
		// Not the ESP32 extended header (hash_appended must be 0 or 1).
		if err, ok := parseESP8266V1(img, data); ok {
			return err
		}
		img.Kind = KindUnknown
		return fileErr(KindUnknown, CodeBadHeader, hintAppBin,
			"starts with 0xE9 but the header is not valid (hash_appended byte is 0x%02x, must be 0 or 1): corrupted, flash-encrypted or not an image", data[23])
	}
	if data[8] != 0xEE {
		// Not the wp_pin byte every ESP-IDF app has: an ESP8266 v1 image
		// (bytes 8-11 are its first load address) proves itself first.
		var tmp Image
		if err, ok := parseESP8266V1(&tmp, data); ok {
			*img = tmp
			img.Size = n
			return err
		}
	}
	serr := parseESP32(img, data)
	if serr == nil && img.ChecksumOK && (img.Header.ChipID.Known() || img.Header.ChipID.PreRelease()) {
		return finishESP32(img, data, top)
	}
	// The ESP32 layout does not check out: an ESP8266 image proves itself with its own checksum.
	var tmp Image
	if err, ok := parseESP8266V1(&tmp, data); ok {
		*img = tmp
		img.Size = n
		return err
	}
	if serr != nil {
		return serr
	}
	return finishESP32(img, data, top)
}

// readHeader decodes the 24-byte header; len(data) >= 24.
func readHeader(data []byte) Header {
	return Header{
		Magic:         data[0],
		SegmentCount:  int(data[1]),
		FlashMode:     data[2],
		FlashSizeFreq: data[3],
		Entry:         binary.LittleEndian.Uint32(data[4:]),
		WPPin:         data[8],
		Drive:         [3]byte{data[9], data[10], data[11]},
		ChipID:        Chip(binary.LittleEndian.Uint16(data[12:])),
		MinRev:        data[14],
		MinRevFull:    binary.LittleEndian.Uint16(data[15:]),
		MaxRevFull:    binary.LittleEndian.Uint16(data[17:]),
		HashAppended:  data[23] == 1,
	}
}

// parseESP32 decodes the header and segment table, checks bounds and
// computes the checksum. It returns a truncated/bad_* error or nil.
func parseESP32(img *Image, data []byte) *FileError {
	n := len(data)
	img.Header = readHeader(data)
	h := &img.Header
	ci := lookupChip(h.ChipID)
	img.Kind = KindApp
	count := h.SegmentCount
	if count > maxSegments {
		return fileErr(KindApp, CodeBadSegment, "the file is corrupted or not an image; rebuild it",
			"bad segment count %d (at most %d allowed)", count, maxSegments)
	}
	if count == 0 {
		return fileErr(KindApp, CodeBadSegment, "the file is corrupted or not an image; rebuild it",
			"bad header: the image has no segments")
	}
	limit := uint64(maxSegLen16M)
	if ci != nil && ci.addr32 {
		limit = 1 << 32
	}
	img.Segments = make([]Segment, 0, count)
	off := headerLen
	xor := byte(checksumSeed)
	for i := 0; i < count; i++ {
		if off+segHeaderLen > n {
			img.guessKind(data)
			return fileErr(img.Kind, CodeTruncated, "the file is incomplete; download or build it again",
				"truncated at segment %d of %d: its header at offset 0x%x is cut off (at least %d bytes missing)",
				i, count, off, off+segHeaderLen-n)
		}
		load := binary.LittleEndian.Uint32(data[off:])
		ln := binary.LittleEndian.Uint32(data[off+4:])
		dataOff := off + segHeaderLen
		if ln%4 != 0 {
			img.guessKind(data)
			return fileErr(img.Kind, CodeBadSegment, "the file is corrupted; rebuild it",
				"bad segment %d (load 0x%08x): length %d is not a multiple of 4", i, load, ln)
		}
		if uint64(ln) >= limit {
			img.guessKind(data)
			return fileErr(img.Kind, CodeBadSegment, "the file is corrupted; rebuild it",
				"bad segment %d (load 0x%08x): length %d is too large", i, load, ln)
		}
		if uint64(dataOff)+uint64(ln) > uint64(n) {
			img.guessKind(data)
			return fileErr(img.Kind, CodeTruncated, "the file is incomplete; download or build it again",
				"truncated in segment %d of %d (load 0x%08x, %d bytes at offset 0x%x): at least %d bytes missing",
				i, count, load, ln, dataOff, uint64(dataOff)+uint64(ln)-uint64(n))
		}
		seg := Segment{Load: load, Len: ln, DataOffset: dataOff, Padding: load < 0x10000000}
		if ci != nil {
			seg.Mapped = ci.mapped(load)
		}
		img.Segments = append(img.Segments, seg)
		xor ^= xorFold(data[dataOff : dataOff+int(ln)])
		off = dataOff + int(ln)
	}
	cs := off + 15 - off%16
	img.ChecksumOffset = cs
	img.ComputedChecksum = xor
	img.Len = cs + 1
	if h.HashAppended {
		img.Len += digestLen
	}
	img.guessKind(data)
	if cs >= n {
		return fileErr(img.Kind, CodeTruncated, "the file is incomplete; download or build it again",
			"truncated after the last segment: the checksum byte at offset 0x%x is missing (%d bytes missing)", cs, img.Len-n)
	}
	img.Checksum = data[cs]
	img.ChecksumOK = img.Checksum == xor
	if img.Len > n {
		return fileErr(img.Kind, CodeTruncated, "the file is incomplete; download or build it again",
			"truncated in the appended SHA-256 digest at offset 0x%x: %d bytes missing", cs+1, img.Len-n)
	}
	return nil
}

// guessKind classifies an ESP32-family image as app or bootloader from what
// has been parsed so far (research §2.2).
func (img *Image) guessKind(data []byte) {
	img.Kind = KindApp
	if len(data) >= appDescOffset+4 && binary.LittleEndian.Uint32(data[appDescOffset:]) == appDescMagic {
		return
	}
	if len(img.Segments) > 0 && img.Segments[0].Len >= bootDescLen && len(data) > appDescOffset && data[appDescOffset] == bootDescMagic {
		img.Kind = KindBootloader
		return
	}
	ci := lookupChip(img.Header.ChipID)
	if ci == nil || len(img.Segments) == 0 {
		return
	}
	for _, s := range img.Segments {
		if s.Mapped {
			return
		}
	}
	if !img.Segments[0].Padding {
		// The first segment loads into RAM and nothing (parsed) is flash-mapped.
		img.Kind = KindBootloader
	}
}

// finishESP32 completes a structurally intact ESP32-family image: digest,
// descriptions, kind, signature, trailing bytes, MMU alignment.
func finishESP32(img *Image, data []byte, top bool) *FileError {
	n := len(data)
	cs := img.ChecksumOffset
	hs := sha256.New()
	hs.Write(data[:cs+1])
	hs.Sum(img.SHA256[:0])
	if img.Header.HashAppended {
		img.Digest = bytes.Clone(data[cs+1 : cs+1+digestLen])
		img.DigestOK = bytes.Equal(img.Digest, img.SHA256[:])
	}
	if seg0 := img.Segments[0]; seg0.Len >= appDescLen && binary.LittleEndian.Uint32(data[appDescOffset:]) == appDescMagic {
		img.App = parseAppDesc(data[appDescOffset : appDescOffset+appDescLen])
	} else if seg0.Len >= bootDescLen && data[appDescOffset] == bootDescMagic {
		img.Boot = parseBootDesc(data[appDescOffset : appDescOffset+bootDescLen])
	}
	img.guessKind(data)
	parseSignature(img, data, hs)
	img.Trailing = n - img.Signature.End
	img.TrailingPadding = allFF(data[img.Signature.End:])
	if img.Kind == KindApp {
		checkAlignment(img)
	}

	if img.Kind == KindBootloader {
		if top {
			if err, ok := parseMerged(img, data, 0); ok {
				return err
			}
		}
		what := "bootloader or RAM-only image"
		if img.Boot != nil {
			what = "2nd-stage bootloader"
		}
		detail := "all segments load into RAM, none is flash-mapped"
		if img.Boot != nil {
			detail = fmt.Sprintf("bootloader description at 0x20: IDF %s", img.Boot.IDFVer)
		}
		return notApp(img, KindBootloader,
			"give the application image (firmware.bin), not bootloader.bin; bootloaders are not updated over OTA",
			"this is a %s for %s (%s), not an application image", what, img.Header.ChipID.DisplayName(), detail)
	}
	if !img.ChecksumOK {
		return fileErr(KindApp, CodeChecksumMismatch, "the file is corrupted; download or build it again",
			"checksum mismatch: stored 0x%02x at offset 0x%x, computed 0x%02x", img.Checksum, cs, img.ComputedChecksum)
	}
	if img.Header.HashAppended && !img.DigestOK {
		return fileErr(KindApp, CodeDigestMismatch, "the file is corrupted; download or build it again",
			"SHA-256 digest mismatch: stored %x…, computed %x…", img.Digest[:8], img.SHA256[:8])
	}
	return nil
}

// checkAlignment applies the bootloader's page-alignment rule to mapped
// segments (§1.4): file data offset ≡ load address (mod MMU page size).
func checkAlignment(img *Image) {
	ci := lookupChip(img.Header.ChipID)
	if ci == nil {
		return
	}
	page, certain := 0x10000, true
	switch {
	case img.App != nil && img.App.MMUPageSize >= 13 && img.App.MMUPageSize <= 18:
		page = 1 << img.App.MMUPageSize
	case ci.mmuConfigurable:
		certain = false
		switch img.Header.FlashSizeFreq >> 4 {
		case 0:
			page = 0x4000
		case 1:
			page = 0x8000
		}
	}
	img.MMUPageSize, img.MMUPageSizeCertain = page, certain
	for i, s := range img.Segments {
		if s.Mapped && s.DataOffset%page != int(s.Load%uint32(page)) {
			img.Misaligned = append(img.Misaligned, i)
		}
	}
}

// xorFold returns the XOR of all bytes of b, eight bytes at a time.
func xorFold(b []byte) byte {
	var a0, a1, a2, a3 uint64
	for len(b) >= 32 {
		a0 ^= binary.LittleEndian.Uint64(b)
		a1 ^= binary.LittleEndian.Uint64(b[8:])
		a2 ^= binary.LittleEndian.Uint64(b[16:])
		a3 ^= binary.LittleEndian.Uint64(b[24:])
		b = b[32:]
	}
	for len(b) >= 8 {
		a0 ^= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	a := a0 ^ a1 ^ a2 ^ a3
	a ^= a >> 32
	a ^= a >> 16
	a ^= a >> 8
	x := byte(a)
	for _, c := range b {
		x ^= c
	}
	return x
}

func allFF(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != ^uint64(0) {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0xFF {
			return false
		}
	}
	return true
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// isIntelHex: ':' then at least 10 hex digits (length, address, type, checksum).
func isIntelHex(data []byte) bool {
	if len(data) < 11 || data[0] != ':' {
		return false
	}
	for _, c := range data[1:11] {
		if !isHexDigit(c) {
			return false
		}
	}
	return true
}
