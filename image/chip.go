package image

import (
	"fmt"
	"slices"
	"strings"
)

// chipInfo holds what the parser and the builder need to know about a chip.
// Values come from esptool targets/*.py and ESP-IDF (research/esp-image.md §1).
type chipInfo struct {
	id      Chip
	name    string // esptool --chip name, e.g. "esp32s3"
	display string // esptool CHIP_NAME, e.g. "ESP32-S3"
	riscv   bool

	// Flash-mapped windows (esptool IROM_MAP_* / DROM_MAP_*), [start, end).
	iromStart, iromEnd uint32
	dromStart, dromEnd uint32

	// sharedMMU: instruction and data buses share one set of MMU pages, so
	// the linker places rodata pages after the code pages (S3, C3, C2 and
	// every unified-address chip). ESP32 and ESP32-S2 have separate tables.
	sharedMMU bool
	// unified: rodata lives in the IROM window (C6-style memory map).
	unified bool
	// mmuConfigurable: SOC_MMU_PAGE_SIZE_CONFIGURABLE (page depends on flash size).
	mmuConfigurable bool
	// addr32: SOC_SPI_MEM_SUPPORT_CACHE_32BIT_ADDR_MAP (segments may exceed 16 MB).
	addr32 bool

	bootloaderOffset int

	// Flash frequency names indexed by the low nibble of header byte 3.
	freq map[byte]string
	// freqCode is the code Build writes (the chip's "80m" setting).
	freqCode byte

	// Chip revisions written by a default ESP-IDF v5.x build (§1.2).
	minRev     byte
	minRevFull uint16
	maxRevFull uint16

	// RAM addresses used by Build for the DRAM and IRAM segments.
	dram, iram uint32
}

var (
	freqClassic = map[byte]string{0x0: "40m", 0x1: "26m", 0x2: "20m", 0xF: "80m"}
	freqC2      = map[byte]string{0x0: "30m", 0x1: "20m", 0x2: "15m", 0xF: "60m"}
	freqC5      = map[byte]string{0x0: "40m", 0x2: "20m", 0xF: "80m"}
	freqC6      = map[byte]string{0x0: "40m/80m", 0x2: "20m"}
	freqH2      = map[byte]string{0x0: "24m", 0x1: "16m", 0x2: "12m", 0xF: "48m"}
)

// chipTable is read-only after package initialisation.
var chipTable = [...]chipInfo{
	{id: ChipESP32, name: "esp32", display: "ESP32",
		iromStart: 0x400D0000, iromEnd: 0x40400000, dromStart: 0x3F400000, dromEnd: 0x3F800000,
		bootloaderOffset: 0x1000, freq: freqClassic, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 399, dram: 0x3FFB0000, iram: 0x40080000},
	{id: ChipESP32S2, name: "esp32s2", display: "ESP32-S2",
		iromStart: 0x40080000, iromEnd: 0x40B80000, dromStart: 0x3F000000, dromEnd: 0x3F3F0000,
		bootloaderOffset: 0x1000, freq: freqClassic, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 199, dram: 0x3FFBE000, iram: 0x40022000},
	{id: ChipESP32C3, name: "esp32c3", display: "ESP32-C3", riscv: true, sharedMMU: true,
		iromStart: 0x42000000, iromEnd: 0x42800000, dromStart: 0x3C000000, dromEnd: 0x3C800000,
		freq: freqClassic, freqCode: 0xF,
		minRev: 3, minRevFull: 3, maxRevFull: 199, dram: 0x3FC8A000, iram: 0x40380000},
	{id: ChipESP32S3, name: "esp32s3", display: "ESP32-S3", sharedMMU: true, addr32: true,
		iromStart: 0x42000000, iromEnd: 0x44000000, dromStart: 0x3C000000, dromEnd: 0x3E000000,
		freq: freqClassic, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 99, dram: 0x3FC8EB00, iram: 0x40374000},
	{id: ChipESP32C2, name: "esp32c2", display: "ESP32-C2", riscv: true, sharedMMU: true, mmuConfigurable: true,
		iromStart: 0x42000000, iromEnd: 0x42400000, dromStart: 0x3C000000, dromEnd: 0x3C400000,
		freq: freqC2, freqCode: 0xF,
		minRev: 1, minRevFull: 100, maxRevFull: 199, dram: 0x3FCA4000, iram: 0x40380000},
	{id: ChipESP32C6, name: "esp32c6", display: "ESP32-C6", riscv: true, sharedMMU: true, unified: true, mmuConfigurable: true,
		iromStart: 0x42000000, iromEnd: 0x42800000, dromStart: 0x42800000, dromEnd: 0x43000000,
		freq: freqC6, freqCode: 0x0,
		minRev: 0, minRevFull: 0, maxRevFull: 99, dram: 0x40810000, iram: 0x40800000},
	{id: ChipESP32H2, name: "esp32h2", display: "ESP32-H2", riscv: true, sharedMMU: true, unified: true, mmuConfigurable: true,
		iromStart: 0x42000000, iromEnd: 0x42800000, dromStart: 0x42800000, dromEnd: 0x43000000,
		freq: freqH2, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 99, dram: 0x40810000, iram: 0x40800000},
	{id: ChipESP32P4, name: "esp32p4", display: "ESP32-P4", riscv: true, sharedMMU: true, unified: true, addr32: true,
		iromStart: 0x40000000, iromEnd: 0x4C000000, dromStart: 0x40000000, dromEnd: 0x4C000000,
		bootloaderOffset: 0x2000, freq: freqClassic, freqCode: 0xF,
		minRev: 0, minRevFull: 1, maxRevFull: 199, dram: 0x4FF10000, iram: 0x4FF00000},
	{id: ChipESP32C61, name: "esp32c61", display: "ESP32-C61", riscv: true, sharedMMU: true, unified: true, mmuConfigurable: true, addr32: true,
		iromStart: 0x42000000, iromEnd: 0x42800000, dromStart: 0x42800000, dromEnd: 0x43000000,
		freq: freqC5, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 99, dram: 0x40810000, iram: 0x40800000},
	{id: ChipESP32C5, name: "esp32c5", display: "ESP32-C5", riscv: true, sharedMMU: true, unified: true, addr32: true,
		iromStart: 0x42000000, iromEnd: 0x44000000, dromStart: 0x42000000, dromEnd: 0x44000000,
		bootloaderOffset: 0x2000, freq: freqC5, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 99, dram: 0x40810000, iram: 0x40800000},
	{id: ChipESP32H21, name: "esp32h21", display: "ESP32-H21", riscv: true, sharedMMU: true, unified: true, mmuConfigurable: true,
		iromStart: 0x42000000, iromEnd: 0x42800000, dromStart: 0x42800000, dromEnd: 0x43000000,
		freq: freqH2, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 99, dram: 0x40810000, iram: 0x40800000},
	{id: ChipESP32H4, name: "esp32h4", display: "ESP32-H4", riscv: true, sharedMMU: true, unified: true, mmuConfigurable: true, addr32: true,
		iromStart: 0x42000000, iromEnd: 0x42800000, dromStart: 0x42800000, dromEnd: 0x43000000,
		bootloaderOffset: 0x2000, freq: freqH2, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 99, dram: 0x40810000, iram: 0x40800000},
	{id: ChipESP32E22, name: "esp32e22", display: "ESP32-E22", sharedMMU: true, unified: true,
		iromStart: 0x3C000000, iromEnd: 0x40000000, dromStart: 0x3C000000, dromEnd: 0x40000000,
		freq: freqClassic, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 99, dram: 0x31010000, iram: 0x31000000},
	{id: ChipESP32S31, name: "esp32s31", display: "ESP32-S31", riscv: true, sharedMMU: true, unified: true, mmuConfigurable: true, addr32: true,
		iromStart: 0x40000000, iromEnd: 0x54000000, dromStart: 0x40000000, dromEnd: 0x54000000,
		bootloaderOffset: 0x2000, freq: freqC5, freqCode: 0xF,
		minRev: 0, minRevFull: 0, maxRevFull: 99, dram: 0x2F010000, iram: 0x2F000000},
}

// preRelease names retired engineering-sample chip ids (§1.3).
var preRelease = map[Chip]string{
	4:  "ESP32-S3 beta2",
	6:  "ESP32-S3 beta3",
	7:  "ESP32-C6 beta",
	10: "ESP32-H2 beta1",
	14: "ESP32-H2 beta2",
	17: "ESP32-C5 beta3",
	19: "ESP32-C5 placeholder",
}

func lookupChip(c Chip) *chipInfo {
	for i := range chipTable {
		if chipTable[i].id == c {
			return &chipTable[i]
		}
	}
	return nil
}

// Chips lists every chip id the package knows, in chip-id order.
func Chips() []Chip {
	out := make([]Chip, len(chipTable))
	for i := range chipTable {
		out[i] = chipTable[i].id
	}
	return out
}

// ChipByName maps "esp32s3" (also "ESP32-S3", "esp32-s3", "esp32_s3") to its
// id, and "esp8266" (or "esp8285", an ESP8266 with flash inside) to ChipESP8266.
func ChipByName(name string) (Chip, bool) {
	n := normChipName(name)
	for i := range chipTable {
		if chipTable[i].name == n {
			return chipTable[i].id, true
		}
	}
	if n == "esp8266" || n == "esp8285" {
		return ChipESP8266, true
	}
	return 0, false
}

func normChipName(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	return strings.NewReplacer("-", "", "_", "", " ", "", ".", "").Replace(n)
}

// BoardChip reads the chip out of an Arduino board name, as ArduinoOTA
// devices tell it in TXT board= (ESP8266: build.board such as
// "ESP8266_GENERIC"; ESP32: the variant such as "esp32s3" or
// "adafruit_feather_esp32s3"). ok is false when the name holds no chip
// name, or names two different chips: many boards ("d1_mini",
// "nodemcu-32s") do not say.
func BoardChip(board string) (Chip, bool) {
	b := normChipName(board)
	type hit struct {
		at, n int
		c     Chip
	}
	var hits []hit
	try := func(name string, c Chip) {
		for from := 0; ; {
			i := strings.Index(b[from:], name)
			if i < 0 {
				return
			}
			hits = append(hits, hit{from + i, len(name), c})
			from += i + 1
		}
	}
	for i := range chipTable {
		try(chipTable[i].name, chipTable[i].id)
	}
	try("esp8266", ChipESP8266)
	try("esp8285", ChipESP8266)
	// "esp32" inside "esp32s3", "esp32c6" inside "esp32c61": the longer
	// name at the same place is the chip.
	var found []Chip
	for _, h := range hits {
		inside := false
		for _, o := range hits {
			inside = inside || o.n > h.n && o.at <= h.at && h.at+h.n <= o.at+o.n
		}
		if !inside && !slices.Contains(found, h.c) {
			found = append(found, h.c)
		}
	}
	if len(found) != 1 {
		return 0, false
	}
	return found[0], true
}

// String is the esptool --chip name, e.g. "esp32s3" ("esp8266" for
// ChipESP8266). Retired beta ids give "pre-release chip (…)" and other ids
// "unknown chip (id N)".
func (c Chip) String() string {
	if ci := lookupChip(c); ci != nil {
		return ci.name
	}
	if c == ChipESP8266 {
		return "esp8266"
	}
	if n, ok := preRelease[c]; ok {
		return "pre-release chip (" + n + ")"
	}
	return fmt.Sprintf("unknown chip (id %d)", uint16(c))
}

// DisplayName is esptool's CHIP_NAME, e.g. "ESP32-S3"; for ids that are not
// in the table it is the same as String.
func (c Chip) DisplayName() string {
	if ci := lookupChip(c); ci != nil {
		return ci.display
	}
	if c == ChipESP8266 {
		return "ESP8266"
	}
	return c.String()
}

// Known reports whether c is a released ESP32-family chip the package
// knows (false for ChipESP8266, which has no chip id).
func (c Chip) Known() bool { return lookupChip(c) != nil }

// PreRelease reports whether c is a retired engineering-sample (beta) id.
func (c Chip) PreRelease() bool {
	_, ok := preRelease[c]
	return ok
}

// RISCV reports whether the chip has RISC-V cores (false: Xtensa or unknown).
func (c Chip) RISCV() bool {
	ci := lookupChip(c)
	return ci != nil && ci.riscv
}

// BootloaderOffset is the flash offset of the 2nd-stage bootloader (0x0,
// 0x1000 or 0x2000), or -1 for an unknown chip.
func (c Chip) BootloaderOffset() int {
	if ci := lookupChip(c); ci != nil {
		return ci.bootloaderOffset
	}
	return -1
}

// mapped reports whether addr lies in one of the chip's flash-mapped windows.
func (ci *chipInfo) mapped(addr uint32) bool {
	return (addr >= ci.iromStart && addr < ci.iromEnd) || (addr >= ci.dromStart && addr < ci.dromEnd)
}

// FlashModeName names header byte 2: "QIO", "QOUT", "DIO", "DOUT",
// "FAST_READ", "SLOW_READ", or "unknown (0xNN)".
func FlashModeName(mode byte) string {
	switch mode {
	case 0:
		return "QIO"
	case 1:
		return "QOUT"
	case 2:
		return "DIO"
	case 3:
		return "DOUT"
	case 4:
		return "FAST_READ"
	case 5:
		return "SLOW_READ"
	}
	return fmt.Sprintf("unknown (0x%02x)", mode)
}

// AppFlashModeName names esp_app_desc_t.spi_flash_mode, which counts from 1
// (1 QIO … 5 OPI); 0 means "not recorded" and gives "".
func AppFlashModeName(mode byte) string {
	switch mode {
	case 0:
		return ""
	case 1:
		return "QIO"
	case 2:
		return "QOUT"
	case 3:
		return "DIO"
	case 4:
		return "DOUT"
	case 5:
		return "OPI"
	}
	return fmt.Sprintf("unknown (%d)", mode)
}

// FlashSizeName names a flash size code (high nibble of header byte 3),
// e.g. 1 → "2MB".
func FlashSizeName(code byte) string {
	names := [...]string{"1MB", "2MB", "4MB", "8MB", "16MB", "32MB", "64MB", "128MB"}
	if int(code) < len(names) {
		return names[code]
	}
	return fmt.Sprintf("unknown (0x%x)", code)
}

// FlashSizeBytes is the size in bytes for a flash size code, 0 if invalid.
func FlashSizeBytes(code byte) int64 {
	if code > 7 {
		return 0
	}
	return (1 << 20) << code
}

// FlashFreqName names a flash frequency code (low nibble of header byte 3)
// for the given chip, e.g. (ChipESP32, 0xF) → "80m". The meaning is chip
// specific; for unknown chips or codes it is "unknown (0xN)".
func FlashFreqName(c Chip, code byte) string {
	if ci := lookupChip(c); ci != nil {
		if n, ok := ci.freq[code]; ok {
			return n
		}
	}
	return fmt.Sprintf("unknown (0x%x)", code)
}

// FlashModeName returns the header flash mode name, e.g. "DIO".
func (h Header) FlashModeName() string { return FlashModeName(h.FlashMode) }

// FlashSize returns the header flash size name, e.g. "2MB".
func (h Header) FlashSize() string { return FlashSizeName(h.FlashSizeFreq >> 4) }

// FlashFreq returns the header flash frequency name for the image's chip, e.g. "80m".
func (h Header) FlashFreq() string { return FlashFreqName(h.ChipID, h.FlashSizeFreq&0x0F) }

// RevString formats a major*100+minor chip revision as "v3.1".
func RevString(full uint16) string { return fmt.Sprintf("v%d.%d", full/100, full%100) }

// MaxRevSet reports whether MaxRevFull limits the chip revision (0 and
// 0xFFFF both mean "no maximum").
func (h Header) MaxRevSet() bool { return h.MaxRevFull != 0 && h.MaxRevFull != 0xFFFF }
