package image

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
)

// ESP8266 images (docs/protocols/esp8266-images.md). The ESP8266 has no
// chip id in its image header; ChipESP8266 stands for it where a Chip is
// wanted (Header.ChipID of an ESP8266 image, --chip esp8266). It is no
// esp_chip_id_t: Chips and Known cover the ESP32 family only.
const ChipESP8266 Chip = 0x8266

// IsESP8266 reports whether c stands for the ESP8266 (or ESP8285).
func (c Chip) IsESP8266() bool { return c == ChipESP8266 }

// Layout says which build made an ESP8266 image.
type Layout string

// ESP8266 layouts. Only LayoutArduino can be sent over the air by this tool:
// ArduinoOTA and HTTPUpdateServer run the esp8266/Arduino core, whose
// bootloader (eboot) copies the upload to flash 0x0 and runs the
// application it finds at 0x1000.
const (
	// LayoutArduino: esp8266/Arduino's elf2bin.py: eboot (a v1 image,
	// RAM segments only) at 0x0 padded to 0x1000, then the sketch as a v1
	// image whose first segment is flash code at 0x40201010.
	LayoutArduino Layout = "arduino"
	// LayoutRTOS: an ESP8266_RTOS_SDK application, linked for flash
	// 0x10000 behind the SDK's own bootloader (unflagged SHA-256 appended,
	// esp_app_desc_t in a later segment).
	LayoutRTOS Layout = "rtos_sdk"
	// LayoutNONOS: any other v1 image, such as a NONOS SDK 0x00000.bin.
	LayoutNONOS Layout = "nonos"
	// LayoutNONOSOTA: the NONOS SDK's OTA user1.bin/user2.bin (magic 0xEA).
	LayoutNONOSOTA Layout = "nonos_ota"
)

const (
	arduinoAppOffset = 0x1000 // APP_START_OFFSET in the esp8266/Arduino core
	arduinoCRCLen    = 0x1010 // elf2bin: u32 length of the file the CRC covers
	arduinoCRCVal    = 0x1014 // elf2bin: u32 CRC of it, both words taken as zero
	esp8266IROM      = 0x40200000
	// maxInflate bounds what a gzip file is inflated to: the ESP8266 maps 1 MB
	// of flash for code, so no sketch image comes near it.
	maxInflate = 2 << 20
)

const (
	hintArduino8266 = "build the sketch with the esp8266/Arduino core (Arduino IDE, or PlatformIO framework = arduino) and give its firmware.bin; an ESP8266_RTOS_SDK or NONOS SDK device updates with its own OTA, not ArduinoOTA"
	hintCorrupt8266 = "the file is corrupted; download or build it again"
)

func plausible8266Addr(a uint32) bool {
	return a == 0 ||
		a >= 0x3FFE0000 && a < 0x40000000 ||
		a >= 0x40100000 && a < 0x40110000 ||
		a >= 0x40200000 && a < 0x40300000 ||
		a >= 0x60000000 && a < 0x60002000
}

func allByte(b []byte, c byte) bool {
	for _, x := range b {
		if x != c {
			return false
		}
	}
	return true
}

func mapped8266(a uint32) bool { return a >= esp8266IROM && a < 0x40300000 }

// v1Image is an ESP8266 v1 image (8-byte header) found at some offset.
type v1Image struct {
	hdr   Header
	segs  [maxSegments]Segment
	count int
	cs    int // file offset of the checksum byte
	xor   byte
	end   int // just past the checksum byte
	// badSum: the checksum byte does not match (parseV1Layout only).
	badSum bool
}

// parseV1At reads the v1 image at off. ok only when every segment fits and
// the checksum matches. With crcWords, the 8 bytes at 0x1010 (where elf2bin
// stores its CRC after computing the checksum) may be counted as zero.
func parseV1At(data []byte, off int, crcWords bool) (v v1Image, ok bool) {
	v, ok = parseV1Layout(data, off, crcWords)
	return v, ok && !v.badSum
}

// parseV1Layout is parseV1At that also reports a v1 image whose segments
// fit but whose checksum does not match (ok, with badSum set).
func parseV1Layout(data []byte, off int, crcWords bool) (v v1Image, ok bool) {
	n := len(data)
	if off+8 > n || data[off] != imageMagic || data[off+1] == 0 || data[off+1] > maxSegments {
		return v, false
	}
	v.count = int(data[off+1])
	v.hdr = Header{Magic: imageMagic, SegmentCount: v.count, FlashMode: data[off+2], FlashSizeFreq: data[off+3],
		Entry: binary.LittleEndian.Uint32(data[off+4:]), ChipID: ChipESP8266}
	p := off + 8
	xor := byte(checksumSeed)
	for i := 0; i < v.count; i++ {
		if p+segHeaderLen > n {
			return v, false
		}
		load := binary.LittleEndian.Uint32(data[p:])
		ln := binary.LittleEndian.Uint32(data[p+4:])
		if !plausible8266Addr(load) || uint64(p)+segHeaderLen+uint64(ln) > uint64(n) {
			return v, false
		}
		d := p + segHeaderLen
		v.segs[i] = Segment{Load: load, Len: ln, DataOffset: d, Padding: load == 0, Mapped: mapped8266(load)}
		xor ^= xorFold(data[d : d+int(ln)])
		p = d + int(ln)
	}
	// The checksum ends a 16-byte block counted from the image start.
	rel := p - off
	v.cs = off + rel + 15 - rel%16
	if v.cs >= n {
		return v, false
	}
	v.end = v.cs + 1
	v.xor = xor
	if data[v.cs] == xor {
		return v, true
	}
	s0 := v.segs[0]
	if crcWords && s0.DataOffset == arduinoCRCLen && s0.Len >= 8 && data[v.cs] == xor^xorFold(data[arduinoCRCLen:arduinoCRCLen+8]) {
		v.xor = data[v.cs]
		return v, true
	}
	v.badSum = true
	return v, true
}

func (v *v1Image) anyMapped() bool {
	for _, s := range v.segs[:v.count] {
		if s.Mapped {
			return true
		}
	}
	return false
}

// fill describes v as img, an ESP8266 image of the given layout.
func (v *v1Image) fill(img *Image, n int, layout Layout) {
	*img = Image{
		Kind: KindESP8266, Size: n, Layout: layout, Header: v.hdr,
		Segments:       append([]Segment(nil), v.segs[:v.count]...),
		ChecksumOffset: v.cs, Checksum: v.xor, ComputedChecksum: v.xor, ChecksumOK: true,
		Len: v.end, Signature: Signature{Scheme: SigNone, End: v.end},
	}
}

// parseESP8266V1 recognises the v1 layouts (§5 of the research notes):
// esp8266/Arduino (eboot + sketch at 0x1000), ESP8266_RTOS_SDK and others.
// ok is false when data is no ESP8266 v1 image at all. A nil error means an
// intact Arduino-layout image, which may be sent to an ESP8266 device.
func parseESP8266V1(img *Image, data []byte) (*FileError, bool) {
	n := len(data)
	boot, ok := parseV1At(data, 0, false)
	if !ok {
		return nil, false
	}
	// eboot: RAM segments only, ending before the sketch at 0x1000;
	// elf2bin fills the gap with 0xAA.
	if boot.end <= arduinoAppOffset && !boot.anyMapped() &&
		(n > arduinoAppOffset && data[arduinoAppOffset] == imageMagic || n > boot.end && allByte(data[boot.end:], 0xAA)) {
		return parseArduino(img, data, &boot), true
	}
	if boot.anyMapped() {
		boot.fill(img, n, LayoutRTOS)
		desc := false
		for _, s := range boot.segs[1:boot.count] {
			desc = desc || s.Len >= 4 && binary.LittleEndian.Uint32(data[s.DataOffset:]) == appDescMagic
		}
		digest := false
		if boot.end+digestLen <= n {
			sum := sha256.Sum256(data[:boot.end])
			if bytes.Equal(sum[:], data[boot.end:boot.end+digestLen]) {
				img.Digest, img.DigestOK, img.SHA256 = bytes.Clone(sum[:]), true, sum
				img.Len += digestLen
				img.Signature.End = img.Len
				digest = true
			}
		}
		img.setTrailing(data)
		if digest || desc {
			return fileErr(KindESP8266, CodeNotApp, hintArduino8266,
				"this is an ESP8266_RTOS_SDK application (flash code at 0x%08x, for flash 0x10000 behind the SDK's bootloader); the esp8266/Arduino bootloader of ArduinoOTA and HTTPUpdateServer devices would copy it to flash 0x0, where it does not boot",
				boot.segs[0].Load), true
		}
	} else {
		boot.fill(img, n, LayoutNONOS)
		img.setTrailing(data)
	}
	img.Layout = LayoutNONOS
	return fileErr(KindESP8266, CodeNotApp, hintArduino8266,
		"this is an ESP8266 v1 image that runs from flash 0x0 (NONOS SDK 0x00000.bin or esptool elf2image), not an esp8266/Arduino sketch image (eboot at 0x0, the sketch at 0x1000)"), true
}

// parseArduino describes an elf2bin image whose eboot checked out.
func parseArduino(img *Image, data []byte, boot *v1Image) *FileError {
	n := len(data)
	app, ok := parseV1Layout(data, arduinoAppOffset, true)
	if !ok || !app.segs[0].Mapped || app.badSum {
		boot.fill(img, n, LayoutArduino)
		img.AppOffset = arduinoAppOffset
		switch {
		case n <= arduinoAppOffset:
			return fileErr(KindESP8266, CodeTruncated, hintCorrupt8266,
				"truncated: this esp8266/Arduino image ends at 0x%x, before its sketch at 0x1000 (only the eboot bootloader is there)", n)
		case ok && app.segs[0].Mapped:
			img.ChecksumOK = false
			return fileErr(KindESP8266, CodeChecksumMismatch, hintCorrupt8266,
				"checksum mismatch in the esp8266/Arduino sketch at 0x1000: stored 0x%02x at offset 0x%x, computed 0x%02x", data[app.cs], app.cs, app.xor)
		}
		return fileErr(KindESP8266, CodeTruncated, hintCorrupt8266,
			"this esp8266/Arduino image's sketch at 0x1000 is cut off or not a sketch image (its segments do not fit the file)")
	}
	app.fill(img, n, LayoutArduino)
	// The flash settings the Updater checks are those of the header at 0x0.
	img.Header.FlashMode, img.Header.FlashSizeFreq = data[2], data[3]
	img.AppOffset = arduinoAppOffset
	crcLen := binary.LittleEndian.Uint32(data[arduinoCRCLen:])
	crcVal := binary.LittleEndian.Uint32(data[arduinoCRCVal:])
	if crcLen != 0 || crcVal != 0 {
		// Cores since 2.7 store a CRC of the file; older ones leave zeros.
		img.CRCPresent = true
		if int64(crcLen) != int64(app.end) || int(crcLen) > n {
			img.setTrailing(data)
			return fileErr(KindESP8266, CodeChecksumMismatch, hintCorrupt8266,
				"the length elf2bin stored at 0x1010 is %d, the image ends at %d: corrupted or edited after the build", crcLen, app.end)
		}
		img.CRC = crc8266(data[:crcLen])
		img.CRCOK = img.CRC == crcVal
		if !img.CRCOK {
			img.setTrailing(data)
			return fileErr(KindESP8266, CodeChecksumMismatch, hintCorrupt8266,
				"CRC-32 mismatch: stored 0x%08x at 0x1014, computed 0x%08x", crcVal, img.CRC)
		}
	}
	// A signed sketch (the core's signing.py) appends the signature and its
	// length as a u32.
	if t := n - img.Len; t > 4 {
		if sl := binary.LittleEndian.Uint32(data[n-4:]); int64(sl) == int64(t-4) {
			img.Signature = Signature{Scheme: SigESP8266, Offset: img.Len, End: n}
		}
	}
	img.setTrailing(data)
	return nil
}

// setTrailing counts the bytes after the image (and its signature).
func (img *Image) setTrailing(data []byte) {
	end := max(img.Len, img.Signature.End)
	img.Trailing = len(data) - end
	img.TrailingPadding = allFF(data[end:])
}

// crc8266 is the CRC eboot's tools and the core's checkFlashCRC compute:
// CRC-32 polynomial 0x04C11DB7, most significant bit first, initial value
// 0xFFFFFFFF, no final XOR. The words at 0x1010 and 0x1014 count as zero.
func crc8266(b []byte) uint32 {
	crc := ^uint32(0)
	for i, c := range b {
		if i >= arduinoCRCLen && i < arduinoCRCLen+8 {
			c = 0
		}
		crc = crc<<8 ^ crcTable8266[byte(crc>>24)^c]
	}
	return crc
}

var crcTable8266 = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04C11DB7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// parseESP8266V2 describes a NONOS SDK OTA image (magic 0xEA, §5).
func parseESP8266V2(img *Image, data []byte) *FileError {
	img.Kind = KindESP8266
	img.Layout = LayoutNONOSOTA
	if len(data) >= 8 {
		img.Header = Header{Magic: data[0], FlashMode: data[2], FlashSizeFreq: data[3],
			Entry: binary.LittleEndian.Uint32(data[4:]), ChipID: ChipESP8266}
	}
	return fileErr(KindESP8266, CodeNotApp, hintArduino8266,
		"this is an ESP8266 NONOS SDK OTA image (magic 0xEA, user1/user2.bin); the esp8266/Arduino Updater refuses it (its first byte must be 0xE9)")
}

// parseGzip inflates a gzip file (at most maxInflate bytes) and parses what
// it holds: the esp8266/Arduino core takes gzip-compressed sketches, and
// eboot inflates them to flash 0x0. Only the top level is inflated.
func parseGzip(img *Image, data []byte, top bool) *FileError {
	img.Kind = KindGzip
	hintGunzip := "decompress it first (gunzip) and give the .bin inside; ESP-IDF OTA does not decompress"
	n := len(data)
	if !top {
		return fileErr(KindGzip, CodeNotApp, hintGunzip, "this is a gzip-compressed file, not a raw application image")
	}
	if n < 18 {
		return fileErr(KindGzip, CodeTruncated, hintCorrupt8266, "this gzip file is cut off (%d bytes; header and trailer alone are 18)", n)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fileErr(KindGzip, CodeBadHeader, hintCorrupt8266, "this gzip file is corrupt: %v", err)
	}
	zr.Multistream(false)
	out, err := io.ReadAll(io.LimitReader(zr, maxInflate+1))
	switch {
	case len(out) > maxInflate:
		return fileErr(KindGzip, CodeNotApp, hintGunzip,
			"this is a gzip-compressed file of more than %d bytes inflated, larger than any ESP8266 sketch; not an application image", maxInflate)
	case err != nil:
		return fileErr(KindGzip, CodeTruncated, hintCorrupt8266, "this gzip file is corrupt or cut off: %v", err)
	case binary.LittleEndian.Uint32(data[n-4:]) != uint32(len(out)):
		// eboot inflates as many bytes as the trailer says.
		return fileErr(KindGzip, CodeBadHeader, hintCorrupt8266,
			"this gzip file's trailer says %d bytes inflated, its data gives %d (more data follows the first stream?)", binary.LittleEndian.Uint32(data[n-4:]), len(out))
	}
	inner := &Image{Kind: KindUnknown, Size: len(out)}
	ierr := parseInto(inner, out, false)
	img.Inner = inner
	switch {
	case inner.Kind == KindESP8266 && ierr == nil:
		return nil
	case inner.Kind == KindESP8266:
		return fileErr(KindGzip, ierr.Code, ierr.Hint, "gzip-compressed: %s", ierr.Reason)
	case inner.Kind == KindApp || inner.Kind == KindMerged || inner.Kind == KindBootloader:
		return fileErr(KindGzip, CodeNotApp, hintGunzip,
			"this is a gzip-compressed %s image for %s; only the esp8266/Arduino core inflates uploads", kindWord(inner.Kind), inner.Header.ChipID.DisplayName())
	}
	return fileErr(KindGzip, CodeNotApp, hintGunzip, "this is a gzip-compressed file (%s inside), not a raw application image", kindWord(inner.Kind))
}

func kindWord(k Kind) string {
	switch k {
	case KindApp:
		return "application"
	case KindMerged:
		return "merged flash"
	case KindBootloader:
		return "bootloader"
	case KindUnknown:
		return "unrecognised data"
	}
	return string(k)
}

// ForChip is the chip a file's image is built for, as far as it tells:
// the header's chip id for ESP32-family images, ChipESP8266 for ESP8266
// images (also inside a gzip file). ok is false for other files.
func (img *Image) ForChip() (Chip, bool) {
	switch {
	case img == nil:
		return 0, false
	case img.Kind == KindESP8266:
		return ChipESP8266, true
	case img.Kind == KindGzip && img.Inner != nil:
		return img.Inner.ForChip()
	case img.Kind == KindApp || img.Kind == KindBootloader || img.Kind == KindMerged:
		return img.Header.ChipID, true
	}
	return 0, false
}

// esp8266Image is the ESP8266 image a file holds: itself, or what a gzip
// file inflates to; nil for other files.
func (img *Image) esp8266Image() *Image {
	switch {
	case img.Kind == KindESP8266:
		return img
	case img.Kind == KindGzip && img.Inner != nil && img.Inner.Kind == KindESP8266:
		return img.Inner
	}
	return nil
}

// MaxBuildSizeESP8266 is the largest esp8266/Arduino image Build makes: the
// sketch's flash code must fit the 1 MB the ESP8266 maps at 0x40200000.
const MaxBuildSizeESP8266 = 1 << 20

// buildArduino8266 lays an image out as esp8266/Arduino's elf2bin.py does:
// an eboot stand-in (two RAM segments) at 0x0, 0xAA up to 0x1000, then the
// sketch (.irom0.text at 0x40201010, .text, .text1, .data, .rodata), the
// checksum on its 16-byte boundary, and the CRC-32 of the file at 0x1014.
// ESP8266 images carry no app description: Project and Version only go into
// a readable string in the flash code.
func buildArduino8266(o BuildOptions) ([]byte, error) {
	if o.Size < 0 {
		return nil, fmt.Errorf("build image: negative size %d", o.Size)
	}
	if o.Project == "" {
		o.Project = "app"
	}
	if o.Version == "" {
		o.Version = "1.0.0"
	}
	r := &rng{s: uint64(o.Seed)*0x2545F4914F6CDD1D ^ uint64(ChipESP8266)<<32}
	const mode, sizeFreq = 3, 0x40 // DOUT, 4M (ESP8266 size code 4), 40m: the Arduino IDE's generic board
	v1 := func(entry uint32, segs []tseg8266) []byte {
		b := []byte{imageMagic, byte(len(segs)), mode, sizeFreq}
		b = binary.LittleEndian.AppendUint32(b, entry)
		xor := byte(checksumSeed)
		for _, s := range segs {
			b = binary.LittleEndian.AppendUint32(b, s.load)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(s.data)))
			b = append(b, s.data...)
			xor ^= xorFold(s.data)
		}
		for len(b)%16 != 15 {
			b = append(b, 0)
		}
		return append(b, xor)
	}
	fill := func(n int) []byte {
		b := make([]byte, n)
		r.fill(b)
		return b
	}
	boot := v1(0x4010F480, []tseg8266{{0x4010F000, fill(0xD60)}, {0x3FFF20B8, fill(0x28)}})
	out := append(boot, bytes.Repeat([]byte{0xAA}, arduinoAppOffset-len(boot))...)

	text, text1 := fill(0x6000+r.words(0x800)), fill(0x100+r.words(0x100))
	data, rodata := fill(0x500+r.words(0x100)), fill(0x1000+r.words(0x400))
	fixed := 8 + 5*segHeaderLen + len(text) + len(text1) + len(data) + len(rodata)
	iromLen := 0x30000 + r.words(0x8000)
	if o.Size > 0 {
		total := (o.Size + 15) &^ 15
		if total > MaxBuildSizeESP8266 {
			return nil, &SizeError{Size: o.Size, Max: MaxBuildSizeESP8266}
		}
		// The checksum ends the file: 1 to 16 bytes of pad and checksum.
		iromLen = (total - arduinoAppOffset - fixed - 1) &^ 3
		if iromLen < 64 {
			return nil, &SizeError{Size: o.Size, Min: (arduinoAppOffset + fixed + 64 + 16) &^ 15, Chip: "ESP8266", Page: arduinoAppOffset}
		}
	}
	irom := fill(iromLen)
	clear(irom[:8]) // the CRC words, filled in last
	copy(irom[8:], "ots-ota sim esp8266 sketch project="+o.Project+" version="+o.Version+"\x00")
	iramEnd := uint32(0x40100000 + len(text))
	app := v1(0x40100004, []tseg8266{{0x40201010, irom}, {0x40100000, text}, {iramEnd, text1},
		{0x3FFE8000, data}, {0x3FFE8000 + uint32(len(data)), rodata}})
	out = append(out, app...)
	binary.LittleEndian.PutUint32(out[arduinoCRCLen:], uint32(len(out)))
	binary.LittleEndian.PutUint32(out[arduinoCRCVal:], crc8266(out))
	return out, nil
}

type tseg8266 struct {
	load uint32
	data []byte
}
