// Package wledmeta reads the release metadata block WLED (0.15.2 and
// later) embeds in its firmware images and checks before it installs one:
// the magic "WSTS" (0x57535453), a structure version, the WLED version and
// release name as C strings, and a DJB2 hash of the release name that
// tells a real block from bytes that happen to hold the magic. The layout,
// where a device looks for it and how it compares releases are in
// docs/protocols/wled.md, with their sources.
package wledmeta

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"strings"
)

// Magic is the block's first word, little-endian: "STSW" in memory, read
// by the device as the number 0x57535453 ("WSTS").
const Magic = 0x57535453

// The block's layout (wled_metadata_t, packed, little-endian): magic u32,
// desc_version u32, wled_version [48]char, release_name [48]char, hash u32,
// then (desc_version 2 and later) safe_update_version [3]u8.
const (
	nameLen     = 48
	offVersion  = 8
	offRelease  = offVersion + nameLen
	offHash     = offRelease + nameLen
	offSafeFrom = offHash + 4
	// Size is the block's length as the device copies it.
	Size = offSafeFrom + 3
)

// Where a device looks: it begins checking once SearchRange bytes past
// the chip's offset have arrived, and searches what it holds then. Every
// device sees at least the bytes before that point, so a block that ends
// there is found whatever the chunking.
const (
	OffsetESP32   = 256
	OffsetESP8266 = 0x1000
	SearchRange   = 512
)

// Meta is one metadata block.
type Meta struct {
	// Offset is where the block starts in the image (in its inflated
	// bytes when Gzip).
	Offset int
	// DescVersion is the structure's version (1 or 2; WLED 16.0 writes 1).
	DescVersion uint32
	// Version is the WLED version the image was built as ("0.15.5").
	Version string
	// Release is the release name ("ESP32", "ESP8266_160", "ESP32_V4").
	Release string
	// SafeFrom is the oldest WLED version (major, minor, patch) the image
	// may be installed over; only when DescVersion is 2 or more does a
	// device read it.
	SafeFrom [3]byte
	// Gzip: the image is gzipped (ESP8266 only); the block was found in
	// its first inflated bytes.
	Gzip bool
}

// HasSafeFrom reports whether a device checks SafeFrom.
func (m Meta) HasSafeFrom() bool { return m.DescVersion > 1 }

// ErrMissing: no valid block where a device looks.
var ErrMissing = errors.New("no WLED release metadata where WLED looks for it")

// ErrGzip: a gzipped image whose head does not inflate.
var ErrGzip = errors.New("the gzipped image's head does not inflate")

// Find returns the first valid block a device would find in image: within
// the first OffsetESP8266+SearchRange bytes for an ESP8266 (esp8266 true)
// or a gzipped image (inflated first; WLED inflates only an ESP8266's),
// else within the first OffsetESP32+SearchRange bytes. A block is valid
// when its magic matches and its hash is the DJB2 hash of its release
// name (a name that fills all 48 bytes, with no terminating NUL, is not).
func Find(image []byte, esp8266 bool) (Meta, error) {
	limit := OffsetESP32 + SearchRange
	if esp8266 {
		limit = OffsetESP8266 + SearchRange
	}
	gz := len(image) >= 2 && image[0] == 0x1f && image[1] == 0x8b
	if gz {
		limit = OffsetESP8266 + SearchRange
		var err error
		if image, err = inflateHead(image, limit); err != nil {
			return Meta{}, err
		}
	}
	m, ok := scan(image[:min(len(image), limit)])
	if !ok {
		return Meta{}, ErrMissing
	}
	m.Gzip = gz
	return m, nil
}

// inflateHead is the first n inflated bytes of a gzip stream (fewer when
// it is shorter).
func inflateHead(b []byte, n int) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, ErrGzip
	}
	out := make([]byte, n)
	k, err := io.ReadFull(zr, out)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, ErrGzip
	}
	return out[:k], nil
}

// scan is WLED's findWledMetadata: the first offset where the magic is
// followed by a block whose hash matches.
func scan(b []byte) (Meta, bool) {
	var magic [4]byte
	binary.LittleEndian.PutUint32(magic[:], Magic)
	for off := 0; off+Size <= len(b); off++ {
		i := bytes.Index(b[off:len(b)-Size+len(magic)], magic[:])
		if i < 0 {
			return Meta{}, false
		}
		off += i
		blk := b[off : off+Size]
		rel, ok := cString(blk[offRelease : offRelease+nameLen])
		if !ok || !hashMatches(rel, binary.LittleEndian.Uint32(blk[offHash:])) {
			continue
		}
		ver, _ := cString(blk[offVersion : offVersion+nameLen])
		m := Meta{Offset: off, DescVersion: binary.LittleEndian.Uint32(blk[4:]), Version: string(ver), Release: string(rel)}
		copy(m.SafeFrom[:], blk[offSafeFrom:])
		return m, true
	}
	return Meta{}, false
}

// cString is b up to its first NUL; ok false when there is none.
func cString(b []byte) ([]byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return b, false
	}
	return b[:i], true
}

// hashMatches: h is the DJB2 hash of name as the device computes it. Its
// C code adds each char, which is signed on some of WLED's compilers and
// unsigned on others; the two differ only for bytes of 0x80 and above, so
// either counts.
func hashMatches(name []byte, h uint32) bool {
	return DJB2(name, false) == h || DJB2(name, true) == h
}

// DJB2 is the hash WLED keeps of the release name: h = h*33 + c from 5381,
// c the byte read as a signed char when signed is true.
func DJB2(name []byte, signed bool) uint32 {
	h := uint32(5381)
	for _, c := range name {
		v := uint32(c)
		if signed {
			v = uint32(int32(int8(c)))
		}
		h = h<<5 + h + v
	}
	return h
}

// InstallsOver reports whether a WLED running version ver takes the image
// by its SafeFrom, as the device decides: component by component, the
// first that differs decides; a component ver does not start with a number
// (a malformed version) ends the check in the image's favour.
func (m Meta) InstallsOver(ver string) bool {
	if !m.HasSafeFrom() {
		return true
	}
	for i := range 3 {
		j := 0
		for j < len(ver) && ver[j] >= '0' && ver[j] <= '9' {
			j++
		}
		if j == 0 {
			return true
		}
		n := 0
		for _, c := range ver[:j] {
			n = min(n*10+int(c-'0'), 1<<20)
		}
		switch s := int(m.SafeFrom[i]); {
		case s > n:
			return false
		case s < n:
			return true
		}
		ver = strings.TrimPrefix(ver[j:], ".")
	}
	return true
}

// NormalizeRelease is a release name as WLED 0.15.5 and later compare it:
// without a trailing "_V4" (builds on ESP-IDF v4 and on later IDFs take
// each other's images).
func NormalizeRelease(s string) string { return strings.TrimSuffix(s, "_V4") }

// Block builds a valid block (for tests and simulators): desc version dv,
// version and release (each at most 47 bytes), safe-from version.
func Block(dv uint32, version, release string, safeFrom [3]byte) []byte {
	b := make([]byte, Size)
	binary.LittleEndian.PutUint32(b, Magic)
	binary.LittleEndian.PutUint32(b[4:], dv)
	copy(b[offVersion:offVersion+nameLen-1], version)
	copy(b[offRelease:offRelease+nameLen-1], release)
	rel, _ := cString(b[offRelease : offRelease+nameLen])
	binary.LittleEndian.PutUint32(b[offHash:], DJB2(rel, false))
	copy(b[offSafeFrom:], safeFrom[:])
	return b
}
