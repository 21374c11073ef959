package image

// THIS FILE IS A TEMPORARY CONTRACT STUB. The image helper replaces it with
// the real implementation (keeping these exported names and signatures).

import (
	"errors"
	"time"
)

// Header is the 24-byte esp_image_header_t.
type Header struct {
	Magic         byte
	SegmentCount  int
	FlashMode     byte
	FlashSizeFreq byte
	Entry         uint32
	WPPin         byte
	Drive         [3]byte
	ChipID        Chip
	MinRev        byte
	MinRevFull    uint16
	MaxRevFull    uint16
	HashAppended  bool
}

// Segment is one segment header plus where its data sits in the file.
type Segment struct {
	Load       uint32
	Len        uint32
	DataOffset int
}

// AppDesc is esp_app_desc_t at file offset 0x20.
type AppDesc struct {
	SecureVersion  uint32
	Version        string
	ProjectName    string
	Time           string
	Date           string
	IDFVer         string
	ELFSHA256      [32]byte
	MinEfuseBlkRev uint16
	MaxEfuseBlkRev uint16
	MMUPageSize    uint8 // log2; 0 = not recorded
	SPIFlashMode   uint8 // 1-based; 0 = not recorded
}

// BootloaderDesc is esp_bootloader_desc_t at file offset 0x20 (IDF ≥ 5.2).
type BootloaderDesc struct {
	SecureVersion byte
	Version       uint32
	IDFVer        string
	DateTime      string
}

// SigBlock is one Secure Boot v2 signature block.
type SigBlock struct {
	Version   byte   // 2 RSA-3072, 3 ECDSA
	Scheme    string // "RSA-3072", "ECDSA-P256", ...
	Digest    []byte
	DigestOK  bool
	KeyDigest [32]byte
}

// Signature describes what follows the image: nothing, an SBv1 signature or an SBv2 sector.
type Signature struct {
	Scheme string // "none", "sbv1", "sbv2"
	Offset int
	Blocks []SigBlock
}

// Image is a parsed file. Fields past Kind are filled as far as parsing got.
type Image struct {
	Kind           Kind
	Size           int // bytes in the file
	Header         Header
	Segments       []Segment
	ChecksumOffset int
	Checksum       byte
	ChecksumOK     bool
	Digest         []byte // appended SHA-256, nil when not appended
	DigestOK       bool
	Len            int // image length: up to and including the digest
	App            *AppDesc
	Boot           *BootloaderDesc
	Signature      Signature
	AppOffset      int // merged images: where the app starts, else 0
}

// FileError says why a file is not an uploadable application image and
// what to give instead.
type FileError struct {
	Kind   Kind
	Reason string
	Hint   string
}

func (e *FileError) Error() string { return e.Reason }

// Parse identifies data and decodes an ESP32-family image. It never panics.
// A non-nil *Image is returned even with an error, with Kind set.
func Parse(data []byte) (*Image, error) {
	return &Image{Kind: KindUnknown}, errors.New("not implemented")
}

// Severity of a Finding.
type Severity string

const (
	SevError   Severity = "error"
	SevWarning Severity = "warning"
)

// Finding is one problem found by Validate.
type Finding struct {
	Severity Severity
	Code     string // stable snake_case id, e.g. "checksum_mismatch"
	Message  string
	Hint     string
}

// Policy is what Validate checks an image against. Zero values skip the check.
type Policy struct {
	Chip          Chip
	ChipSet       bool // Chip is meaningful (ChipESP32 is 0)
	SlotSize      int64
	DeviceProject string
	DeviceVersion string
	ExpectSigned  bool
}

// Report is the result of Validate.
type Report struct {
	Image    *Image
	Errors   []Finding
	Warnings []Finding
}

// OK reports whether the image may be uploaded.
func (r *Report) OK() bool { return len(r.Errors) == 0 }

// Validate parses data and applies the policy.
func Validate(data []byte, p Policy) *Report { return &Report{} }

// BuildOptions describe an image for Build. Zero values take sensible defaults.
type BuildOptions struct {
	Chip          Chip
	Project       string
	Version       string
	IDFVer        string
	Built         time.Time // date and time strings in app_desc
	Size          int       // target file size in bytes (approximate, rounded to 16); 0 = small
	SecureVersion uint32
	NoDigest      bool
	Seed          int64 // fills segment data deterministically
}

// Build makes a valid application image, byte-compatible with esptool's elf2image output.
func Build(o BuildOptions) ([]byte, error) { return nil, errors.New("not implemented") }

// ChipByName maps "esp32s3" (also "ESP32-S3", "esp32-s3") to its id.
func ChipByName(name string) (Chip, bool) { return 0, false }

// String is the esptool --chip name, e.g. "esp32s3".
func (c Chip) String() string { return "unknown" }
