package wled

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/ots-ota/ots-ota/image"
	"github.com/ots-ota/ots-ota/sim/core"
)

// WLED's release metadata ("WLED custom description"), as WLED 0.15.2 and
// later compile it into every build and look for it in an upload. Source:
// wled/WLED wled00/wled_metadata.h and wled_metadata.cpp (tags v0.15.2,
// v0.15.5, v16.0.0, HEAD 6d16dc2), wled00/ota_update.cpp for where it is
// looked for.
//
// Layout (packed, little-endian, 111 bytes):
//
//	0    u32      magic 0x57535453 ("STSW" in memory order; WLED calls it "WSTS")
//	4    u32      desc_version (1; 2 adds the safe-update check)
//	8    char[48] wled_version, NUL-padded (WLED_VERSION, e.g. "16.0.1")
//	56   char[48] release_name, NUL-padded (WLED_RELEASE_NAME, e.g. "ESP32")
//	104  u32      hash: DJB2 of release_name (h = 5381; h = h*33 + c)
//	108  u8[3]    safe_update_version: major, minor, patch
//
// The builds put it in a section of its own right behind the app
// description on ESP32 (.rodata_custom_desc, file offset about 0x120) and
// in .ver_number on ESP8266 (past 0x1000). findWledMetadata scans a buffer
// byte by byte for the magic, takes the first candidate whose hash matches
// its release_name, and the structure must fit the buffer whole.
const (
	metaMagic   = 0x57535453
	metaSize    = 111
	metaStrLen  = 48
	metaOffVer  = 8
	metaOffRel  = 56
	metaOffHash = 104
	metaOffSafe = 108
)

// metadata is one found WLED custom description.
type metadata struct {
	descVersion uint32
	version     string
	release     string
	safe        [3]byte
}

// djb2 is WLED's djb2_hash_runtime over a NUL-terminated string.
func djb2(s string) uint32 {
	h := uint32(5381)
	for i := 0; i < len(s) && s[i] != 0; i++ {
		h = h<<5 + h + uint32(s[i])
	}
	return h
}

// cstr reads a NUL-padded char array.
func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// findMetadata is findWledMetadata: the first structure in b whose magic
// and hash match. The hash covers release_name up to its NUL, which may lie
// past the 48 bytes (a release name of 48 characters runs into the hash);
// the sim stops at the array's end, as a release name that long does not
// compile (static_assert).
func findMetadata(b []byte) (metadata, bool) {
	for off := 0; off+metaSize <= len(b); off++ {
		if binary.LittleEndian.Uint32(b[off:]) != metaMagic {
			continue
		}
		c := b[off : off+metaSize]
		rel := cstr(c[metaOffRel : metaOffRel+metaStrLen])
		if binary.LittleEndian.Uint32(c[metaOffHash:]) != djb2(rel) {
			continue
		}
		return metadata{
			descVersion: binary.LittleEndian.Uint32(c[4:]),
			version:     cstr(c[metaOffVer : metaOffVer+metaStrLen]),
			release:     rel,
			safe:        [3]byte{c[metaOffSafe], c[metaOffSafe+1], c[metaOffSafe+2]},
		}, true
	}
	return metadata{}, false
}

// encodeMetadata is a build's structure.
func encodeMetadata(m metadata) []byte {
	b := make([]byte, metaSize)
	binary.LittleEndian.PutUint32(b, metaMagic)
	binary.LittleEndian.PutUint32(b[4:], m.descVersion)
	copy(b[metaOffVer:metaOffVer+metaStrLen-1], m.version)
	copy(b[metaOffRel:metaOffRel+metaStrLen-1], m.release)
	binary.LittleEndian.PutUint32(b[metaOffHash:], djb2(m.release))
	copy(b[metaOffSafe:], m.safe[:])
	return b
}

// Where the sim's images carry the structure: right behind the app
// description on ESP32 (inside the first, DROM, segment), and inside the
// sketch's flash code on ESP8266, behind its header, CRC words and
// description string.
const (
	metaAtESP32   = 0x20 + 256
	metaAtESP8266 = 0x1080
)

// ImageOptions describe a WLED build for Image.
type ImageOptions struct {
	// Chip is the esptool chip name ("esp32", "esp32s3", "esp8266" …).
	Chip string
	// Version is WLED_VERSION ("16.0.1"); Release WLED_RELEASE_NAME
	// ("ESP32"); default "16.0.1" and the chip's default release.
	Version, Release string
	// Size is about the file size (0 = small); Seed varies the filler.
	Size int
	Seed int64
	// NoMetadata is an image without the structure: a build from before
	// 0.15.2, or another firmware altogether.
	NoMetadata bool
	// DescVersion is the structure's desc_version (default 1, what 16.x
	// builds write) and Safe its safe_update_version (16.x: 0.15.3 for a
	// classic ESP32, 0.15.2 for the others).
	DescVersion uint32
	Safe        [3]byte
}

var imageCache sync.Map // ImageOptions → []byte

// Image is a WLED build as the sim's devices read it: a valid application
// image for the chip (checksum, SHA-256, esp8266/Arduino CRC) that carries
// the release metadata where WLED's builds do, and an app description (on
// ESP32) of project "WLED" and the version. The same options give the same
// bytes. The slice is shared: do not modify it.
func Image(o ImageOptions) ([]byte, error) {
	if o.Chip == "" {
		o.Chip = "esp32"
	}
	o.Chip = strings.ToLower(o.Chip)
	if o.Version == "" {
		o.Version = defaultVersion
	}
	if o.Release == "" {
		o.Release = DefaultRelease(o.Chip)
	}
	if len(o.Version) >= metaStrLen || len(o.Release) >= metaStrLen {
		return nil, errors.New("wled image: version and release name must be shorter than 48 bytes")
	}
	if o.DescVersion == 0 {
		o.DescVersion = 1
	}
	if b, ok := imageCache.Load(o); ok {
		return b.([]byte), nil
	}
	chip, ok := image.ChipByName(o.Chip)
	if !ok && o.Chip != "esp8266" {
		return nil, fmt.Errorf("wled image: unknown chip %q", o.Chip)
	}
	if o.Chip == "esp8266" {
		chip = image.ChipESP8266
	}
	data, err := image.Build(image.BuildOptions{Chip: chip, Project: "WLED", Version: o.Version, Size: o.Size, Seed: o.Seed})
	if err != nil {
		return nil, fmt.Errorf("wled image: %w", err)
	}
	if !o.NoMetadata {
		m := metadata{descVersion: o.DescVersion, version: o.Version, release: o.Release, safe: o.Safe}
		if err := addMetadata(data, m, chip == image.ChipESP8266); err != nil {
			return nil, err
		}
	}
	imageCache.Store(o, data)
	return data, nil
}

// AddMetadata returns a copy of img (an application image the image
// package built, ESP32 or esp8266/Arduino) that carries WLED's release
// metadata for version and release where WLED's builds do, its checksum,
// SHA-256 and CRC mended: an image a wled device of that release takes
// without skipValidation.
func AddMetadata(img []byte, version, release string) ([]byte, error) {
	if len(version) >= metaStrLen || len(release) >= metaStrLen {
		return nil, errors.New("wled metadata: version and release name must be shorter than 48 bytes")
	}
	parsed, err := image.Parse(img)
	if err != nil || parsed == nil {
		return nil, errors.New("wled metadata: not an application image")
	}
	out := bytes.Clone(img)
	m := metadata{descVersion: 1, version: version, release: release}
	if err := addMetadata(out, m, parsed.Layout == image.LayoutArduino); err != nil {
		return nil, err
	}
	return out, nil
}

func addMetadata(data []byte, m metadata, esp8266 bool) error {
	at := metaAtESP32
	if esp8266 {
		at = metaAtESP8266
	}
	return patch(data, at, encodeMetadata(m))
}

// patch writes p into data at off, inside a segment's data, and mends the
// image's checksum, appended SHA-256 and (ESP8266) elf2bin CRC.
func patch(data []byte, off int, p []byte) error {
	img, err := image.Parse(data)
	if err != nil || img == nil {
		return fmt.Errorf("wled image: %v", err)
	}
	inside := false
	for _, s := range img.Segments {
		if off >= s.DataOffset && off+len(p) <= s.DataOffset+int(s.Len) {
			inside = true
		}
	}
	if !inside || img.ChecksumOffset <= 0 {
		return errors.New("wled metadata: the image is too small to hold it where WLED's builds do")
	}
	x := byte(0)
	for i, c := range p {
		x ^= data[off+i] ^ c
	}
	copy(data[off:], p)
	data[img.ChecksumOffset] ^= x
	if img.Digest != nil {
		sum := sha256.Sum256(data[:img.ChecksumOffset+1])
		copy(data[img.ChecksumOffset+1:], sum[:])
	}
	if img.CRCPresent {
		n := binary.LittleEndian.Uint32(data[0x1010:])
		binary.LittleEndian.PutUint32(data[0x1014:], crc8266(data[:n]))
	}
	return nil
}

// crc8266 is elf2bin's CRC-32 (polynomial 0x04C11DB7, MSB first, initial
// 0xFFFFFFFF, no final XOR) with the two words at 0x1010 counted as zero.
func crc8266(b []byte) uint32 {
	crc := ^uint32(0)
	for i, c := range b {
		if i >= 0x1010 && i < 0x1018 {
			c = 0
		}
		crc ^= uint32(c) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04C11DB7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// imageFor is the factory image of a device: its chip, version and
// release, as a build of the sim (core.Image's filler, WLED's metadata).
func imageFor(c *core.Config) ([]byte, error) {
	return Image(ImageOptions{Chip: c.Chip, Version: c.Version, Release: c.Release, Size: c.ImageSize, Seed: c.BuildSeed})
}
