// Package partition reads ESP-IDF partition tables (partitions.csv and the
// binary form written at flash offset 0x8000) and answers how large an OTA
// app slot is. It also encodes tables and the otadata partition, so tests and
// the device simulator can build the same bytes a real device holds.
//
// The rules follow ESP-IDF's gen_esp32part.py (CSV syntax, default offsets,
// layout checks) and the bootloader's esp_partition_table_verify (binary
// structure). The package does no I/O beyond the io.Reader it is given.
package partition

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Entry is one partition.
type Entry struct {
	Label   string
	Type    uint8
	SubType uint8
	Offset  uint32
	Size    uint32
	Flags   uint32
}

// Table is a partition table in file order.
type Table []Entry

// Partition types (esp_partition_type_t). 0x40–0xFE are free for custom use.
const (
	TypeApp            uint8 = 0x00
	TypeData           uint8 = 0x01
	TypeBootloader     uint8 = 0x02 // ESP-IDF v5.4+, for bootloader OTA
	TypePartitionTable uint8 = 0x03 // ESP-IDF v5.4+, for partition table OTA
)

// App subtypes.
const (
	SubTypeAppFactory uint8 = 0x00
	SubTypeAppOTAMin  uint8 = 0x10 // ota_0
	SubTypeAppOTAMax  uint8 = 0x1F // ota_15
	SubTypeAppTest    uint8 = 0x20
	SubTypeAppTEE0    uint8 = 0x30
	SubTypeAppTEE1    uint8 = 0x31
)

// Data subtypes.
const (
	SubTypeDataOTA       uint8 = 0x00 // otadata
	SubTypeDataPhy       uint8 = 0x01
	SubTypeDataNVS       uint8 = 0x02
	SubTypeDataCoredump  uint8 = 0x03
	SubTypeDataNVSKeys   uint8 = 0x04
	SubTypeDataEFuse     uint8 = 0x05
	SubTypeDataUndefined uint8 = 0x06 // what an empty CSV subtype means
	SubTypeDataESPHTTPD  uint8 = 0x80
	SubTypeDataFAT       uint8 = 0x81
	SubTypeDataSPIFFS    uint8 = 0x82
	SubTypeDataLittleFS  uint8 = 0x83
	SubTypeDataTEEOTA    uint8 = 0x90
)

// Bootloader and partition-table subtypes.
const (
	SubTypeBootloaderPrimary     uint8 = 0x00
	SubTypeBootloaderOTA         uint8 = 0x01
	SubTypeBootloaderRecovery    uint8 = 0x02
	SubTypePartitionTablePrimary uint8 = 0x00
	SubTypePartitionTableOTA     uint8 = 0x01
)

// Flag bits of Entry.Flags.
const (
	FlagEncrypted uint32 = 1 << 0
	FlagReadOnly  uint32 = 1 << 1
)

// Layout constants.
const (
	// MaxTableLen is the binary table's length: one 4 KB sector minus 1 KB
	// kept for a Secure Boot v1 signature.
	MaxTableLen = 0xC00
	// EntrySize is the size of one binary entry.
	EntrySize = 32
	// MaxEntries is how many partitions fit next to the MD5 entry and the end marker.
	MaxEntries = MaxTableLen/EntrySize - 2
	// MaxLabelLen is the label field's size; a 16-byte label has no NUL.
	MaxLabelLen = 16
	// DefaultTableOffset is CONFIG_PARTITION_TABLE_OFFSET's default.
	DefaultTableOffset = 0x8000
	// TableSectorSize is the flash space the table occupies.
	TableSectorSize = 0x1000
	// AppAlignment is the offset alignment of app partitions (MMU page).
	AppAlignment = 0x10000
	// SectorAlignment is the offset alignment of every other partition.
	SectorAlignment = 0x1000
)

// ErrNoOTASlots is returned (wrapped) by OTASlotSize when the table has no ota_N app.
var ErrNoOTASlots = errors.New("no OTA app slots")

var typeNames = map[uint8]string{
	TypeApp:            "app",
	TypeData:           "data",
	TypeBootloader:     "bootloader",
	TypePartitionTable: "partition_table",
}

// subTypeNames are the CSV keywords per type, as in gen_esp32part.py.
var subTypeNames = map[uint8]map[uint8]string{
	TypeApp: func() map[uint8]string {
		m := map[uint8]string{
			SubTypeAppFactory: "factory",
			SubTypeAppTest:    "test",
			SubTypeAppTEE0:    "tee_0",
			SubTypeAppTEE1:    "tee_1",
		}
		for i := range 16 {
			m[SubTypeAppOTAMin+uint8(i)] = fmt.Sprintf("ota_%d", i)
		}
		return m
	}(),
	TypeData: {
		SubTypeDataOTA:       "ota",
		SubTypeDataPhy:       "phy",
		SubTypeDataNVS:       "nvs",
		SubTypeDataCoredump:  "coredump",
		SubTypeDataNVSKeys:   "nvs_keys",
		SubTypeDataEFuse:     "efuse",
		SubTypeDataUndefined: "undefined",
		SubTypeDataESPHTTPD:  "esphttpd",
		SubTypeDataFAT:       "fat",
		SubTypeDataSPIFFS:    "spiffs",
		SubTypeDataLittleFS:  "littlefs",
		SubTypeDataTEEOTA:    "tee_ota",
	},
	TypeBootloader: {
		SubTypeBootloaderPrimary:  "primary",
		SubTypeBootloaderOTA:      "ota",
		SubTypeBootloaderRecovery: "recovery",
	},
	TypePartitionTable: {
		SubTypePartitionTablePrimary: "primary",
		SubTypePartitionTableOTA:     "ota",
	},
}

// TypeName is the CSV keyword for a type ("app", "data", …) or its hex value.
func TypeName(t uint8) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("0x%02x", t)
}

// SubTypeName is the CSV keyword for a subtype of type t ("ota_0", "nvs", …)
// or its hex value.
func SubTypeName(t, sub uint8) string {
	if n, ok := subTypeNames[t][sub]; ok {
		return n
	}
	return fmt.Sprintf("0x%02x", sub)
}

// TypeName is TypeName(e.Type).
func (e Entry) TypeName() string { return TypeName(e.Type) }

// SubTypeName is SubTypeName(e.Type, e.SubType).
func (e Entry) SubTypeName() string { return SubTypeName(e.Type, e.SubType) }

// End is the first address after the partition (64-bit: offset+size may pass 4 GB).
func (e Entry) End() uint64 { return uint64(e.Offset) + uint64(e.Size) }

// Encrypted reports the encrypted flag.
func (e Entry) Encrypted() bool { return e.Flags&FlagEncrypted != 0 }

// ReadOnly reports the readonly flag.
func (e Entry) ReadOnly() bool { return e.Flags&FlagReadOnly != 0 }

// IsOTAApp reports whether e is an ota_N app slot.
func (e Entry) IsOTAApp() bool {
	return e.Type == TypeApp && e.SubType >= SubTypeAppOTAMin && e.SubType <= SubTypeAppOTAMax
}

// OTAIndex is N of an ota_N slot; ok is false for anything else.
func (e Entry) OTAIndex() (n int, ok bool) {
	if !e.IsOTAApp() {
		return 0, false
	}
	return int(e.SubType - SubTypeAppOTAMin), true
}

// String is a one-line summary: `"ota_0" app/ota_0 @0x110000 1M (0x100000) encrypted`.
func (e Entry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q %s/%s @0x%x %s", e.Label, e.TypeName(), e.SubTypeName(), e.Offset, sizeString(uint64(e.Size)))
	if f := flagNames(e.Flags); f != "" {
		b.WriteString(" " + f)
	}
	return b.String()
}

// flagNames is the CSV flags column; unknown bits are shown in hex.
func flagNames(f uint32) string {
	var parts []string
	if f&FlagEncrypted != 0 {
		parts = append(parts, "encrypted")
	}
	if f&FlagReadOnly != 0 {
		parts = append(parts, "readonly")
	}
	if rest := f &^ (FlagEncrypted | FlagReadOnly); rest != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", rest))
	}
	return strings.Join(parts, ":")
}

// sizeString renders a byte count as "2M (0x200000)", the notation
// partitions.csv uses, with the exact hex value beside it.
func sizeString(n uint64) string {
	return fmt.Sprintf("%s (0x%x)", FormatSize(int64(n)), n)
}

// Find returns the partition with the given label.
func (t Table) Find(label string) (Entry, bool) {
	for _, e := range t {
		if e.Label == label {
			return e, true
		}
	}
	return Entry{}, false
}

// FindType returns the first partition with the given type and subtype.
func (t Table) FindType(typ, sub uint8) (Entry, bool) {
	for _, e := range t {
		if e.Type == typ && e.SubType == sub {
			return e, true
		}
	}
	return Entry{}, false
}

// OTASlots returns the ota_N app partitions ordered by N (which is the slot
// index the bootloader uses), not by file order.
func (t Table) OTASlots() Table {
	var s Table
	for _, e := range t {
		if e.IsOTAApp() {
			s = append(s, e)
		}
	}
	sort.SliceStable(s, func(i, j int) bool { return s[i].SubType < s[j].SubType })
	return s
}

// OTASlotSize is the size of the smallest ota_N app slot: the largest image
// every slot takes, so a firmware image must not be larger. ESP-IDF allows
// slots of different sizes; OTASlotSizesDiffer says when they are. An error
// when there are no OTA slots or the smallest has size 0.
func (t Table) OTASlotSize() (int64, error) {
	slots := t.OTASlots()
	if len(slots) == 0 {
		msg := "the table has no app partitions of subtype ota_0…ota_15"
		if f, ok := t.FindType(TypeApp, SubTypeAppFactory); ok {
			msg += fmt.Sprintf(" (only a factory app, %q)", f.Label)
		}
		return 0, fmt.Errorf("%w: %s; a factory-only table cannot take OTA updates", ErrNoOTASlots, msg)
	}
	size := minSize(slots)
	if size == 0 {
		return 0, fmt.Errorf("OTA app slots have size 0")
	}
	return int64(size), nil
}

// OTASlotSizesDiffer lists the OTA slots with their sizes when they are not
// all the same size (`ota_0 "a" 2M (0x200000), ota_1 "b" 1M (0x100000)`),
// "" when they are.
func (t Table) OTASlotSizesDiffer() string {
	slots := t.OTASlots()
	same := true
	for _, e := range slots {
		same = same && e.Size == slots[0].Size
	}
	if same {
		return ""
	}
	parts := make([]string, len(slots))
	for i, e := range slots {
		parts[i] = fmt.Sprintf("%s %q %s", e.SubTypeName(), e.Label, sizeString(uint64(e.Size)))
	}
	return strings.Join(parts, ", ")
}

func minSize(t Table) uint32 {
	m := t[0].Size
	for _, e := range t[1:] {
		m = min(m, e.Size)
	}
	return m
}

// Parse sniffs the format (binary starts AA 50) and parses either.
func Parse(b []byte) (Table, error) {
	if len(b) >= 2 && b[0] == 0xAA && b[1] == 0x50 {
		return ParseBinary(b)
	}
	return ParseCSV(bytes.NewReader(b))
}
