package image

import "time"

// Header is the 24-byte esp_image_header_t (research/esp-image.md §1.1–1.2).
type Header struct {
	Magic         byte
	SegmentCount  int
	FlashMode     byte // 0 QIO, 1 QOUT, 2 DIO, 3 DOUT; see FlashModeName
	FlashSizeFreq byte // high nibble size code, low nibble frequency code
	Entry         uint32
	WPPin         byte
	Drive         [3]byte
	ChipID        Chip
	MinRev        byte   // legacy minimum revision
	MinRevFull    uint16 // major*100+minor
	MaxRevFull    uint16 // major*100+minor; 0 or 0xFFFF = no maximum
	HashAppended  bool
}

// Segment is one segment header plus where its data sits in the file.
type Segment struct {
	Load       uint32
	Len        uint32
	DataOffset int
	// Mapped: the load address is in the chip's flash-mapped (IROM/DROM) window.
	Mapped bool
	// Padding: a padding segment (load address below 0x10000000, never loaded).
	Padding bool
}

// AppDesc is esp_app_desc_t at file offset 0x20 (§2).
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
	SPIFlashMode   uint8 // 1-based; 0 = not recorded; see AppFlashModeName
}

// BootloaderDesc is esp_bootloader_desc_t at file offset 0x20 (IDF ≥ 5.2).
type BootloaderDesc struct {
	SecureVersion byte
	Version       uint32
	IDFVer        string
	DateTime      string
}

// SigBlock is one valid Secure Boot v2 signature block.
type SigBlock struct {
	Version   byte   // 2 RSA-3072, 3 ECDSA
	Scheme    string // "RSA-3072", "ECDSA-P192", "ECDSA-P256", "ECDSA-P384"
	Digest    []byte // image digest stored in the block (32 bytes, 48 for P-384)
	DigestOK  bool   // Digest equals the hash of the file before the signature sector
	KeyDigest [32]byte
	CRC       uint32 // CRC-32 stored at block offset 1196 (it matched)
}

// Signature schemes reported in Signature.Scheme.
const (
	SigNone = "none"
	SigV1   = "sbv1"
	SigV2   = "sbv2"
	// SigESP8266: a signed esp8266/Arduino sketch (signature, then its length as a u32).
	SigESP8266 = "esp8266_signed"
)

// Signature describes what follows the image: nothing, an SBv1 signature or an SBv2 sector.
type Signature struct {
	Scheme string // SigNone, SigV1 or SigV2
	// Offset is where the signature starts: the SBv1 version word or the
	// SBv2 4 KB sector. 0 when Scheme is SigNone.
	Offset int
	// Blocks are the consecutive valid SBv2 blocks (at most 3).
	Blocks []SigBlock
	// End is the offset just past the signature (past the SBv1 slack or the
	// SBv2 sector); equal to Image.Len when unsigned.
	End int
}

// Image is a parsed file. Fields past Kind are filled as far as parsing got.
type Image struct {
	Kind           Kind
	Size           int // bytes in the file
	Header         Header
	Segments       []Segment
	ChecksumOffset int
	Checksum       byte // stored checksum byte
	ChecksumOK     bool
	// ComputedChecksum is the XOR checksum recomputed over the segment data.
	ComputedChecksum byte
	Digest           []byte // appended SHA-256, nil when not appended
	DigestOK         bool
	// SHA256 is the SHA-256 of bytes [0, ChecksumOffset+1): what an appended
	// digest must equal. Zero when parsing stopped before the checksum.
	SHA256    [32]byte
	Len       int // image length: up to and including the digest
	App       *AppDesc
	Boot      *BootloaderDesc
	Signature Signature
	AppOffset int // merged images: where the app starts, else 0
	// Embedded is the application found at AppOffset in a merged image,
	// parsed on its own (offsets relative to AppOffset); nil otherwise.
	Embedded *Image
	// TableOffset is where a merged image holds its partition table, else 0.
	TableOffset int

	// Trailing counts the bytes after the image and its signature.
	Trailing int
	// TrailingPadding: every trailing byte is 0xFF (esptool --pad-to-size).
	TrailingPadding bool
	// MMUPageSize is the page size used to check mapped-segment alignment
	// (from the app description, the chip or the header flash size); 0 if unknown.
	MMUPageSize int
	// MMUPageSizeCertain: MMUPageSize is fixed for the chip or recorded in
	// the app description, not inferred from the flash size.
	MMUPageSizeCertain bool
	// Misaligned lists mapped segments whose file offset and load address
	// disagree modulo MMUPageSize (the bootloader refuses them).
	Misaligned []int

	// Layout is which build made an ESP8266 image ("" for other files).
	// For LayoutArduino, Header and Segments are the sketch's at AppOffset
	// 0x1000 (file offsets), behind the eboot bootloader at 0x0.
	Layout Layout
	// CRCPresent: an esp8266/Arduino image carries elf2bin's CRC-32 (cores
	// since 2.7); CRC is the one computed, CRCOK whether it matched.
	CRCPresent, CRCOK bool
	CRC               uint32
	// Inner is what a gzip file inflates to, parsed; nil when not inflated.
	Inner *Image
}

// FileError says why a file is not an uploadable application image and
// what to give instead.
type FileError struct {
	Kind   Kind
	Code   string // stable snake_case id, the same as the Finding code Validate reports
	Reason string // one line: what the file is / what is wrong
	Hint   string // one line: what to give instead
}

func (e *FileError) Error() string { return e.Reason }

// Severity of a Finding.
type Severity string

// Severities.
const (
	SevError   Severity = "error"
	SevWarning Severity = "warning"
)

// Finding is one problem found by Validate.
type Finding struct {
	Severity Severity
	Code     string // stable snake_case id, e.g. "checksum_mismatch"
	Message  string // one line
	Hint     string // what to do instead (always set for errors)
}

// Policy is what Validate checks an image against. Zero values skip the check.
type Policy struct {
	Chip    Chip // the device's chip
	ChipSet bool // Chip is meaningful (ChipESP32 is 0)
	// SlotSize is the OTA partition size in bytes. The whole file is
	// written, so the file size (image, signature and any padding) must fit.
	SlotSize int64
	// DeviceProject and DeviceVersion are what the device runs now (its
	// app description); a different project or the same version is warned about.
	DeviceProject string
	DeviceVersion string
	// ExpectSigned: the device verifies signatures (secure boot or signed
	// apps), so an unsigned image is warned about and a signature made for
	// other bytes is an error.
	ExpectSigned bool
	// ChipRev is the device's chip revision (major*100+minor), checked
	// against the image's min/max revision when ChipRevSet.
	ChipRev    uint16
	ChipRevSet bool
}

// Report is the result of Validate.
type Report struct {
	Image    *Image
	Errors   []Finding
	Warnings []Finding
}

// OK reports whether the image may be uploaded.
func (r *Report) OK() bool { return len(r.Errors) == 0 }

// Has reports whether the report holds a finding (error or warning) with code.
func (r *Report) Has(code string) bool {
	for _, f := range r.Errors {
		if f.Code == code {
			return true
		}
	}
	for _, f := range r.Warnings {
		if f.Code == code {
			return true
		}
	}
	return false
}

// BuildOptions describe an image for Build. Zero values take sensible defaults.
type BuildOptions struct {
	Chip          Chip
	Project       string    // default "app"
	Version       string    // default "1.0.0"; cut to 31 bytes
	IDFVer        string    // default "v5.2.2"
	Built         time.Time // date and time strings in app_desc; zero = 2024-07-25 16:23:40
	Size          int       // target file size in bytes (rounded up to 16); 0 = small (~100 KB)
	SecureVersion uint32
	NoDigest      bool
	Seed          int64 // fills segment data deterministically
}
