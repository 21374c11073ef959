package image

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// SizeError is Build's answer to a size it cannot make: more than Max, or
// less than Min, the smallest image that holds Chip's IROM segment behind
// its first MMU page of Page bytes. Exactly one of Min and Max is set.
type SizeError struct {
	Size     int
	Min, Max int
	Chip     string
	Page     int
}

func (e *SizeError) Error() string {
	return "build image: size " + strconv.Itoa(e.Size) + " " + e.Reason()
}

// Reason is the error without the size it is about, for messages that name
// the size already.
func (e *SizeError) Reason() string {
	if e.Max > 0 {
		return fmt.Sprintf("exceeds %d bytes", e.Max)
	}
	return fmt.Sprintf("too small for %s: at least %d bytes (the IROM segment starts after the first %d KB page)", e.Chip, e.Min, e.Page/1024)
}

// MaxBuildSize is the largest image Build makes (16 MiB, the largest flash
// an ESP32 app partition can be mapped from on most chips).
const MaxBuildSize = 16 << 20

var defaultBuilt = time.Date(2024, time.July, 25, 16, 23, 40, 0, time.UTC)

// rng is splitmix64: tiny, fast and deterministic for a seed.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9E3779B97F4A7C15
	z := r.s
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// words returns a multiple of 4 in [0, max).
func (r *rng) words(max int) int {
	if max < 4 {
		return 0
	}
	return int(r.next()%uint64(max/4)) * 4
}

func (r *rng) fill(b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, r.next())
		b = b[8:]
	}
	if len(b) > 0 {
		var t [8]byte
		binary.LittleEndian.PutUint64(t[:], r.next())
		copy(b, t[:])
	}
}

// idfAtLeast reports whether an IDF version string such as "v5.4.1" or
// "v5.4-407-g649f9a72ae-dirty" is at least major.minor.
func idfAtLeast(v string, major, minor int) bool {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	parts := strings.SplitN(v, ".", 3)
	num := func(s string) int {
		end := 0
		for end < len(s) && s[end] >= '0' && s[end] <= '9' {
			end++
		}
		n, _ := strconv.Atoi(s[:end])
		return n
	}
	ma := num(parts[0])
	mi := 0
	if len(parts) > 1 {
		mi = num(parts[1])
	}
	return ma > major || ma == major && mi >= minor
}

type buildSeg struct {
	load uint32
	len  int
	kind byte // 'D' DROM, 'd' DRAM, 'i' IRAM, 'p' padding, 'I' IROM
}

// Build makes a valid application image, laid out like esptool elf2image
// output for an ESP-IDF app: header (DIO, 2MB, the chip's 80m code, wp_pin
// 0xEE, the chip's usual revision range), segment 0 = DROM carrying
// esp_app_desc_t at file offset 0x20, then DRAM and IRAM, a padding segment
// (load 0) and the IROM segment on the MMU page rule (64 KB pages, 32 KB on
// chips with a configurable page size, as IDF picks for 2 MB flash), the
// checksum on its 16-byte boundary and the SHA-256 unless NoDigest.
// Segment contents are pseudo-random from Seed, so equal options give equal
// bytes. The file is exactly Size bytes rounded up to 16; Build fails for an
// unknown chip, a negative size, more than MaxBuildSize or a size too small
// to hold the IROM segment behind its first page.
//
// For ChipESP8266 it makes an esp8266/Arduino image instead (elf2bin's
// layout, at most MaxBuildSizeESP8266), which has no app description.
//
// A size Build cannot make is a *SizeError, which carries the bounds.
func Build(o BuildOptions) ([]byte, error) {
	if o.Chip == ChipESP8266 {
		return buildArduino8266(o)
	}
	ci := lookupChip(o.Chip)
	if ci == nil {
		return nil, fmt.Errorf("build image: unknown chip id %d", uint16(o.Chip))
	}
	if o.Size < 0 {
		return nil, fmt.Errorf("build image: negative size %d", o.Size)
	}
	if o.Project == "" {
		o.Project = "app"
	}
	if o.Version == "" {
		o.Version = "1.0.0"
	}
	if o.IDFVer == "" {
		o.IDFVer = "v5.2.2"
	}
	if o.Built.IsZero() {
		o.Built = defaultBuilt
	}
	page := 0x10000
	if ci.mmuConfigurable {
		page = 0x8000 // IDF default for 2 MB flash
	}
	r := &rng{s: uint64(o.Seed)*0x2545F4914F6CDD1D ^ uint64(o.Chip)<<48}

	dromLen := page/8 + r.words(page/32)
	dramLen := page/16 + r.words(page/64)
	iramLen := page/2 + r.words(page/16)
	digest := digestLen
	if o.NoDigest {
		digest = 0
	}

	// Pad segment header sits after header + 3 segments; IROM data must land on ≡ 0x20 (mod page).
	front := headerLen + 3*segHeaderLen + dromLen + dramLen + iramLen
	padLen := -1 // -1: no padding segment needed
	if (front+segHeaderLen)%page != 0x20 {
		padLen = ((0x10-front)%page + page) % page
	}
	iromDataOff := front + segHeaderLen
	if padLen >= 0 {
		iromDataOff += segHeaderLen + padLen
	}

	var total int
	var iromLen int
	if o.Size == 0 {
		iromLen = 0xC000 + r.words(0x2000)
		end := iromDataOff + iromLen
		total = end + 16 - end%16 + digest
	} else {
		total = (o.Size + 15) &^ 15
		if total > MaxBuildSize {
			return nil, &SizeError{Size: o.Size, Max: MaxBuildSize}
		}
		iromLen = total - digest - 4 - iromDataOff // checksum at total-digest-1 after 3 zero bytes
		if iromLen < 4 {
			return nil, &SizeError{Size: o.Size, Min: (iromDataOff+8+15)&^15 + digest, Chip: ci.display, Page: page}
		}
	}
	csOff := total - digest - 1

	iram := ci.iram
	dram := ci.dram
	if ci.unified {
		dram = iram + uint32((iramLen+0xFF)&^0xFF)
	}
	iromLoad := ci.iromStart + 0x20
	dromLoad := ci.dromStart + 0x20
	if ci.sharedMMU {
		// Code pages come first in the shared virtual page space, rodata after them.
		base, end := ci.dromStart, ci.dromEnd
		if ci.unified {
			base, end = ci.iromStart, ci.iromEnd
		}
		codePages := uint32((0x20 + iromLen + page - 1) / page)
		if l := uint64(base) + uint64(codePages)*uint64(page) + 0x20; l+uint64(dromLen) <= uint64(end) {
			dromLoad = uint32(l)
		} else {
			dromLoad = ci.dromStart + 0x20
		}
	}

	segs := make([]buildSeg, 0, 5)
	segs = append(segs, buildSeg{dromLoad, dromLen, 'D'})
	ram := []buildSeg{{dram, dramLen, 'd'}, {iram, iramLen, 'i'}}
	if ram[0].load > ram[1].load {
		ram[0], ram[1] = ram[1], ram[0] // esptool orders segments by address
	}
	segs = append(segs, ram...)
	if padLen >= 0 {
		segs = append(segs, buildSeg{0, padLen, 'p'})
	}
	segs = append(segs, buildSeg{iromLoad, iromLen, 'I'})

	buf := make([]byte, total)
	buf[0] = imageMagic
	buf[1] = byte(len(segs))
	buf[2] = 2 // DIO
	buf[3] = 1<<4 | ci.freqCode
	entry := iram + 0x200 + uint32(r.words(0x800))
	binary.LittleEndian.PutUint32(buf[4:], entry)
	buf[8] = 0xEE
	binary.LittleEndian.PutUint16(buf[12:], uint16(o.Chip))
	buf[14] = ci.minRev
	binary.LittleEndian.PutUint16(buf[15:], ci.minRevFull)
	binary.LittleEndian.PutUint16(buf[17:], ci.maxRevFull)
	if !o.NoDigest {
		buf[23] = 1
	}

	off := headerLen
	xor := byte(checksumSeed)
	for _, s := range segs {
		binary.LittleEndian.PutUint32(buf[off:], s.load)
		binary.LittleEndian.PutUint32(buf[off+4:], uint32(s.len))
		d := buf[off+segHeaderLen : off+segHeaderLen+s.len]
		switch s.kind {
		case 'p':
			// esptool fills padding segments with zeros.
		case 'D':
			writeAppDesc(d[:appDescLen], o, page, r)
			r.fill(d[appDescLen:])
		default:
			r.fill(d)
		}
		xor ^= xorFold(d)
		off += segHeaderLen + s.len
	}
	if off > csOff || csOff-off > 15 {
		return nil, errors.New("build image: internal layout error")
	}
	buf[csOff] = xor
	if digest > 0 {
		sum := sha256.Sum256(buf[:csOff+1])
		copy(buf[csOff+1:], sum[:])
	}
	return buf, nil
}

// writeAppDesc fills the 256-byte esp_app_desc_t.
func writeAppDesc(d []byte, o BuildOptions, page int, r *rng) {
	binary.LittleEndian.PutUint32(d[0:], appDescMagic)
	binary.LittleEndian.PutUint32(d[4:], o.SecureVersion)
	putCString(d[16:48], o.Version)
	putCString(d[48:80], o.Project)
	putCString(d[80:96], o.Built.Format("15:04:05"))
	putCString(d[96:112], fmt.Sprintf("%s %2d %d", o.Built.Format("Jan"), o.Built.Day(), o.Built.Year()))
	putCString(d[112:144], o.IDFVer)
	// Stand-in for the ELF's SHA-256, deterministic for the options.
	elf := sha256.Sum256(fmt.Appendf(nil, "%d/%s/%s/%s/%d", o.Chip, o.Project, o.Version, o.IDFVer, r.next()))
	copy(d[144:176], elf[:])
	if idfAtLeast(o.IDFVer, 5, 4) {
		// Fields added in IDF v5.4 (§2): eFuse block revision range and MMU page size.
		binary.LittleEndian.PutUint16(d[178:], 99)
		d[180] = byte(bits.TrailingZeros(uint(page)))
	}
}
