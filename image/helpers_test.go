package image

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"testing"
)

type tseg struct {
	load uint32
	data []byte
}

// makeImage assembles an ESP32-family image from raw segments, with a
// correct checksum and (when hash) digest.
func makeImage(chip Chip, hash bool, segs ...tseg) []byte {
	b := make([]byte, 24, 4096)
	b[0], b[1], b[2], b[3] = 0xE9, byte(len(segs)), 2, 0x1F
	binary.LittleEndian.PutUint32(b[4:], 0x40080400)
	b[8] = 0xEE
	binary.LittleEndian.PutUint16(b[12:], uint16(chip))
	if hash {
		b[23] = 1
	}
	for _, s := range segs {
		b = binary.LittleEndian.AppendUint32(b, s.load)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s.data)))
		b = append(b, s.data...)
	}
	for len(b)%16 != 15 {
		b = append(b, 0)
	}
	b = append(b, 0)
	if hash {
		b = append(b, make([]byte, 32)...)
	}
	reseal(b)
	return b
}

// reseal recomputes the checksum and appended digest of an ESP32-family
// image in place (after a test edited it on purpose).
func reseal(b []byte) {
	var img Image
	if err := parseESP32(&img, b); err != nil {
		panic("reseal: " + err.Error())
	}
	b[img.ChecksumOffset] = img.ComputedChecksum
	if img.Header.HashAppended {
		sum := sha256.Sum256(b[:img.ChecksumOffset+1])
		copy(b[img.ChecksumOffset+1:], sum[:])
	}
}

// bootDesc returns an 80-byte esp_bootloader_desc_t.
func bootDesc() []byte {
	d := make([]byte, 80)
	d[0] = 0x50
	d[4] = 1
	copy(d[8:], "v5.2.2")
	copy(d[40:], "Jul 25 2024 16:26:01")
	return d
}

// makeBootloader builds a small RAM-only bootloader image for chip.
func makeBootloader(chip Chip) []byte {
	ci := lookupChip(chip)
	dram := append(bootDesc(), make([]byte, 176)...)
	return makeImage(chip, true, tseg{ci.dram, dram}, tseg{ci.iram, make([]byte, 1024)})
}

// makeTable returns a 0xC00-byte partition table with the given app partitions.
func makeTable(apps ...[3]uint32) []byte { // {subtype, offset, size}
	t := make([]byte, 0, 0xC00)
	add := func(typ, sub byte, off, size uint32, name string) {
		e := make([]byte, 32)
		e[0], e[1], e[2], e[3] = 0xAA, 0x50, typ, sub
		binary.LittleEndian.PutUint32(e[4:], off)
		binary.LittleEndian.PutUint32(e[8:], size)
		copy(e[12:], name)
		t = append(t, e...)
	}
	add(1, 2, 0x9000, 0x6000, "nvs")
	add(1, 1, 0xF000, 0x1000, "phy_init")
	for i, a := range apps {
		add(0, byte(a[0]), a[1], a[2], []string{"factory", "ota_0", "ota_1"}[i%3])
	}
	for len(t) < 0xC00 {
		t = append(t, 0xFF)
	}
	return t
}

// place writes part into a 0xFF-filled flash image at off.
func place(flash []byte, off int, part []byte) []byte {
	for len(flash) < off+len(part) {
		flash = append(flash, 0xFF)
	}
	copy(flash[off:], part)
	return flash
}

// sigBlock makes a valid SBv2 block with the given header bytes and digest.
func sigBlock(version, shaVer, curve byte, digest []byte) []byte {
	b := make([]byte, 1216)
	b[0], b[1] = 0xE7, version
	switch {
	case version == 2:
		copy(b[4:], digest)
		for i := 36; i < 812; i++ {
			b[i] = byte(i)
		}
	case shaVer == 1:
		b[2] = 1
		copy(b[4:52], digest)
		b[52] = curve
		for i := 53; i < 245; i++ {
			b[i] = byte(i)
		}
	default:
		copy(b[4:36], digest)
		b[36] = curve
		for i := 37; i < 165; i++ {
			b[i] = byte(i)
		}
	}
	binary.LittleEndian.PutUint32(b[1196:], crc32.ChecksumIEEE(b[:1196]))
	return b
}

func mustBuild(t testing.TB, o BuildOptions) []byte {
	t.Helper()
	b, err := Build(o)
	if err != nil {
		t.Fatalf("Build(%+v): %v", o, err)
	}
	return b
}

func codes(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Code)
	}
	return out
}
