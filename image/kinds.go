package image

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// parseELF names the architecture from e_machine (§2.3).
func parseELF(img *Image, data []byte) *FileError {
	arch := "an ELF file"
	if len(data) >= 20 {
		var m uint16
		if data[5] == 2 { // EI_DATA: big-endian
			m = binary.BigEndian.Uint16(data[18:])
		} else {
			m = binary.LittleEndian.Uint16(data[18:])
		}
		switch {
		case m == 0x5E:
			arch = "an Xtensa ELF file (ESP32, ESP32-S2, ESP32-S3 or ESP8266)"
		case m == 0xF3 && data[4] == 2: // EI_CLASS: ELFCLASS64
			arch = "a 64-bit RISC-V ELF file, not for an ESP32 chip (their RISC-V cores are 32-bit)"
		case m == 0xF3:
			arch = "a RISC-V ELF file (ESP32-C/H/P series)"
		default:
			arch = fmt.Sprintf("an ELF file for %s, not an ESP32 chip", elfMachine(m))
		}
	}
	return notApp(img, KindELF,
		"upload .pio/build/<env>/firmware.bin, not firmware.elf (ESP-IDF: build/<project>.bin; Arduino: Sketch > Export Compiled Binary)",
		"this is %s, the linker output, not a flashable application image", arch)
}

// elfMachine names the common e_machine values (System V ABI); others by number.
func elfMachine(m uint16) string {
	switch m {
	case 0x03:
		return "x86"
	case 0x3E:
		return "x86-64"
	case 0x28:
		return "ARM"
	case 0xB7:
		return "ARM64 (AArch64)"
	case 0x08:
		return "MIPS"
	case 0x14, 0x15:
		return "PowerPC"
	case 0x5E:
		return "Xtensa"
	case 0xF3:
		return "RISC-V"
	case 0x53:
		return "AVR"
	}
	return fmt.Sprintf("machine type %d", m)
}

// partEntry is one esp_partition_info_t.
type partEntry struct {
	typ, subtype byte
	offset, size uint32
	label        string
}

// readTable decodes partition entries at the start of b, stopping at the
// end marker, the MD5 entry or anything that is not an entry.
func readTable(b []byte) []partEntry {
	var out []partEntry
	for off := 0; off+partEntryLen <= len(b) && off < partTableMaxLen; off += partEntryLen {
		e := b[off : off+partEntryLen]
		if binary.LittleEndian.Uint16(e) != partTableMagic {
			break
		}
		out = append(out, partEntry{
			typ: e[2], subtype: e[3],
			offset: binary.LittleEndian.Uint32(e[4:]),
			size:   binary.LittleEndian.Uint32(e[8:]),
			label:  cString(e[12:28]),
		})
	}
	return out
}

// plausibleTable: the first entry has the magic, a known type and a 4 KB-aligned offset.
func plausibleTable(b []byte) bool {
	if len(b) < partEntryLen || binary.LittleEndian.Uint16(b) != partTableMagic {
		return false
	}
	t := b[2]
	off := binary.LittleEndian.Uint32(b[4:])
	return (t <= 3 || t >= 0x40 && t != 0xFF) && off%0x1000 == 0 && binary.LittleEndian.Uint32(b[8:]) != 0
}

func describeTable(data []byte) string {
	es := readTable(data)
	if len(es) == 0 {
		return ""
	}
	names := make([]string, 0, len(es))
	for i, e := range es {
		if i == 6 {
			names = append(names, "…")
			break
		}
		names = append(names, fmt.Sprintf("%q", e.label))
	}
	return fmt.Sprintf(" (%d entries: %s)", len(es), strings.Join(names, ", "))
}

// appPartition picks the partition a factory image's app is written to:
// factory, else ota_0, else the lowest app partition.
func appPartition(es []partEntry) (uint32, bool) {
	var best *partEntry
	for i := range es {
		e := &es[i]
		if e.typ != 0 {
			continue
		}
		switch {
		case best == nil:
			best = e
		case e.subtype == 0 && best.subtype != 0:
			best = e
		case e.subtype == 0x10 && best.subtype != 0:
			best = e
		case e.subtype == best.subtype && e.offset < best.offset:
			best = e
		}
	}
	if best == nil {
		return 0, false
	}
	return best.offset, true
}

// parseMerged recognises a merged (factory) flash image whose bootloader
// starts at bootOff (§2.3). ok is false when data is not laid out like one.
// For bootOff 0, img already holds the parsed bootloader.
func parseMerged(img *Image, data []byte, bootOff int) (*FileError, bool) {
	n := len(data)
	var boot *Image
	if bootOff == 0 {
		boot = img
	} else {
		boot = &Image{Kind: KindUnknown, Size: n - bootOff}
		_ = parseInto(boot, data[bootOff:], false)
		if boot.Kind != KindBootloader {
			return nil, false
		}
	}
	bootEnd := bootOff + max(boot.Signature.End, boot.Len)
	tableOff := 0
	for off := (bootEnd + 0xFFF) &^ 0xFFF; off <= n-partEntryLen && off < 0x100000; off += 0x1000 {
		if plausibleTable(data[off:]) {
			tableOff = off
			break
		}
	}
	appOff := 0
	if tableOff > 0 {
		if o, ok := appPartition(readTable(data[tableOff:])); ok && int64(o) < int64(n) && data[o] == imageMagic {
			appOff = int(o)
		}
	}
	if appOff == 0 && n > defaultAppOffset && data[defaultAppOffset] == imageMagic {
		appOff = defaultAppOffset
	}
	if bootOff == 0 && tableOff == 0 && appOff == 0 {
		return nil, false
	}
	hdr := boot.Header
	*img = Image{Kind: KindMerged, Size: n, Header: hdr, AppOffset: appOff, TableOffset: tableOff,
		Signature: Signature{Scheme: SigNone}}
	parts := []string{fmt.Sprintf("bootloader at 0x%x", bootOff)}
	if tableOff > 0 {
		parts = append(parts, fmt.Sprintf("partition table at 0x%x", tableOff))
	}
	hint := "give the app-only image (firmware.bin; ESPHome/Tasmota: *.ota.bin, not *.factory.bin)"
	if appOff > 0 {
		emb := &Image{Kind: KindUnknown, Size: n - appOff}
		_ = parseInto(emb, data[appOff:], false)
		img.Embedded = emb
		parts = append(parts, fmt.Sprintf("application at 0x%x", appOff))
		hint += fmt.Sprintf("; in this file the app starts at offset 0x%x", appOff)
	} else {
		parts = append(parts, "no application")
	}
	return fileErr(KindMerged, CodeNotApp, hint,
		"this is a merged (factory) flash image for %s: %s; OTA takes the application alone",
		hdr.ChipID.DisplayName(), strings.Join(parts, ", ")), true
}

// uf2Families maps UF2 family ids to chip names (esptool UF2_FAMILY_ID).
var uf2Families = map[uint32]string{
	0x7EAB61ED: "ESP8266", 0x1C5F21B0: "ESP32", 0xBFDD4EEE: "ESP32-S2", 0xC47E5767: "ESP32-S3",
	0x2B88D29C: "ESP32-C2", 0xD42BA06C: "ESP32-C3", 0xF71C0343: "ESP32-C5", 0x540DDF62: "ESP32-C6",
	0x77D850C4: "ESP32-C61", 0x332726F6: "ESP32-H2", 0xB6DD00AF: "ESP32-H21", 0x9E0BAA8A: "ESP32-H4",
	0x3D308E94: "ESP32-P4", 0x3101F7C1: "ESP32-S31",
}

func uf2Family(data []byte) string {
	if len(data) < 32 || binary.LittleEndian.Uint32(data[8:])&0x2000 == 0 {
		return ""
	}
	id := binary.LittleEndian.Uint32(data[28:])
	if name, ok := uf2Families[id]; ok {
		return " for " + name
	}
	return fmt.Sprintf(" (family 0x%08x)", id)
}
