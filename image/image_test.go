package image

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"strings"
	"testing"
)

func TestChipNames(t *testing.T) {
	want := map[Chip]string{
		ChipESP32: "esp32", ChipESP32S2: "esp32s2", ChipESP32S3: "esp32s3", ChipESP32C2: "esp32c2", ChipESP32C3: "esp32c3",
		ChipESP32C5: "esp32c5", ChipESP32C6: "esp32c6", ChipESP32C61: "esp32c61", ChipESP32H2: "esp32h2", ChipESP32H21: "esp32h21",
		ChipESP32H4: "esp32h4", ChipESP32P4: "esp32p4", ChipESP32E22: "esp32e22", ChipESP32S31: "esp32s31",
	}
	if len(Chips()) != len(want) {
		t.Errorf("Chips() has %d entries, want %d", len(Chips()), len(want))
	}
	for c, name := range want {
		if c.String() != name || !c.Known() || c.PreRelease() {
			t.Errorf("%d: String %q Known %v", uint16(c), c.String(), c.Known())
		}
		for _, in := range []string{name, strings.ToUpper(name), c.DisplayName(), strings.Replace(c.DisplayName(), "-", "_", 1)} {
			if got, ok := ChipByName(in); !ok || got != c {
				t.Errorf("ChipByName(%q) = %v, %v", in, got, ok)
			}
		}
	}
	if ChipESP32S3.DisplayName() != "ESP32-S3" || ChipESP32C61.DisplayName() != "ESP32-C61" {
		t.Error("display names")
	}
	for _, id := range []Chip{4, 6, 7, 10, 14, 17, 19} {
		if !id.PreRelease() || !strings.HasPrefix(id.String(), "pre-release chip") {
			t.Errorf("id %d: %q", uint16(id), id.String())
		}
	}
	if s := Chip(0x3808).String(); s != "unknown chip (id 14344)" {
		t.Errorf("unknown chip: %q", s)
	}
	if c, ok := ChipByName("esp8266"); !ok || c.Known() || !c.IsESP8266() {
		t.Error("esp8266 is a chip name, but no ESP32-family chip id")
	}
	if ChipESP32.BootloaderOffset() != 0x1000 || ChipESP32C5.BootloaderOffset() != 0x2000 || ChipESP32S3.BootloaderOffset() != 0 {
		t.Error("bootloader offsets")
	}
	if !ChipESP32C3.RISCV() || ChipESP32S3.RISCV() {
		t.Error("RISCV")
	}
}

func TestFlashNames(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{FlashModeName(0), "QIO"}, {FlashModeName(2), "DIO"}, {FlashModeName(3), "DOUT"}, {FlashModeName(9), "unknown (0x09)"},
		{AppFlashModeName(3), "DIO"}, {AppFlashModeName(5), "OPI"}, {AppFlashModeName(0), ""},
		{FlashSizeName(0), "1MB"}, {FlashSizeName(1), "2MB"}, {FlashSizeName(4), "16MB"}, {FlashSizeName(7), "128MB"}, {FlashSizeName(8), "unknown (0x8)"},
		{FlashFreqName(ChipESP32, 0xF), "80m"}, {FlashFreqName(ChipESP32, 0), "40m"}, {FlashFreqName(ChipESP32C2, 0xF), "60m"},
		{FlashFreqName(ChipESP32H2, 0xF), "48m"}, {FlashFreqName(ChipESP32C6, 0), "40m/80m"}, {FlashFreqName(ChipESP32C5, 1), "unknown (0x1)"},
		{RevString(301), "v3.1"}, {RevString(3), "v0.3"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	if FlashSizeBytes(1) != 2<<20 || FlashSizeBytes(9) != 0 {
		t.Error("FlashSizeBytes")
	}
}

func TestBuildLayout(t *testing.T) {
	for _, c := range Chips() {
		b := mustBuild(t, BuildOptions{Chip: c, Size: 1 << 20, Seed: 3})
		img, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		page := 0x10000
		if lookupChip(c).mmuConfigurable {
			page = 0x8000
		}
		if img.MMUPageSize != page {
			t.Errorf("%s: page %d, want %d", c, img.MMUPageSize, page)
		}
		segs := img.Segments
		if len(segs) != 5 || !segs[0].Mapped || segs[0].DataOffset != 0x20 || segs[0].Load%uint32(page) != 0x20 ||
			segs[1].Mapped || segs[2].Mapped || !segs[3].Padding || !segs[4].Mapped {
			t.Errorf("%s: segments %+v", c, segs)
		}
		if segs[4].DataOffset%page != 0x20 {
			t.Errorf("%s: IROM data offset 0x%x", c, segs[4].DataOffset)
		}
		e := img.Header.Entry
		iram := segs[1]
		if segs[2].Load == lookupChip(c).iram {
			iram = segs[2]
		}
		if lookupChip(c).iram != iram.Load || e < iram.Load || e >= iram.Load+iram.Len {
			t.Errorf("%s: entry 0x%x outside IRAM %+v", c, e, iram)
		}
		ci := lookupChip(c)
		if img.Header.MinRevFull != ci.minRevFull || img.Header.MaxRevFull != ci.maxRevFull || img.Header.MinRev != ci.minRev {
			t.Errorf("%s: revs %+v", c, img.Header)
		}
		if img.Header.FlashFreq() == "" || strings.HasPrefix(img.Header.FlashFreq(), "unknown") {
			t.Errorf("%s: freq %s", c, img.Header.FlashFreq())
		}
	}
}

func TestBuildSizes(t *testing.T) {
	if _, err := Build(BuildOptions{Chip: ChipESP32, Size: 1000}); err == nil {
		t.Error("tiny size accepted")
	}
	if _, err := Build(BuildOptions{Chip: ChipESP32, Size: MaxBuildSize + 1}); err == nil {
		t.Error("oversize accepted")
	}
	if _, err := Build(BuildOptions{Chip: Chip(99)}); err == nil {
		t.Error("unknown chip accepted")
	}
	if _, err := Build(BuildOptions{Chip: ChipESP32, Size: -5}); err == nil {
		t.Error("negative size accepted")
	}
	b := mustBuild(t, BuildOptions{Chip: ChipESP32S3, Size: MaxBuildSize, Seed: 9})
	if len(b) != MaxBuildSize || !Validate(b, Policy{}).OK() {
		t.Error("16 MiB image")
	}
	// The smallest possible size: one page plus a minimal IROM segment.
	for _, c := range []Chip{ChipESP32, ChipESP32C6} {
		var min int
		for s := 0x8000; s < 0x12000; s += 16 {
			if _, err := Build(BuildOptions{Chip: c, Size: s}); err == nil {
				min = s
				break
			}
		}
		b := mustBuild(t, BuildOptions{Chip: c, Size: min})
		if r := Validate(b, Policy{}); !r.OK() {
			t.Errorf("%s min size %d: %+v", c, min, r.Errors)
		}
	}
	// Version strings are cut to 31 bytes like IDF does.
	long := strings.Repeat("x", 40)
	img, _ := Parse(mustBuild(t, BuildOptions{Chip: ChipESP32, Version: long, Project: long, IDFVer: "v5.4.1"}))
	if img.App.Version != long[:31] || img.App.ProjectName != long[:31] || img.App.MMUPageSize != 16 || img.App.MaxEfuseBlkRev != 99 {
		t.Errorf("app desc %+v", img.App)
	}
	img, _ = Parse(mustBuild(t, BuildOptions{Chip: ChipESP32C6, IDFVer: "v6.0"}))
	if img.App.MMUPageSize != 15 || !img.MMUPageSizeCertain {
		t.Errorf("C6 v6.0: mmu %d", img.App.MMUPageSize)
	}
}

func TestCorruption(t *testing.T) {
	base := mustBuild(t, BuildOptions{Chip: ChipESP32C3, Size: 300_000, Seed: 5})
	img, _ := Parse(base)
	segs := img.Segments
	tests := []struct {
		name   string
		edit   func(b []byte) []byte
		code   string
		policy Policy
	}{
		{"magic", func(b []byte) []byte { b[0] = 0xE8; return b }, CodeNotApp, Policy{}},
		{"hash_appended byte", func(b []byte) []byte { b[23] = 7; return b }, CodeBadHeader, Policy{}},
		{"segment count too big", func(b []byte) []byte { b[1] = 17; return b }, CodeBadSegment, Policy{}},
		{"segment count zero", func(b []byte) []byte { b[1] = 0; return b }, CodeBadSegment, Policy{}},
		{"entry byte", func(b []byte) []byte { b[5] ^= 1; return b }, CodeDigestMismatch, Policy{}},
		{"segment length unaligned", func(b []byte) []byte { b[segs[2].DataOffset-4]++; return b }, CodeBadSegment, Policy{}},
		{"segment length huge", func(b []byte) []byte { b[segs[2].DataOffset-1] = 0x40; return b }, CodeBadSegment, Policy{}},
		{"segment length past end", func(b []byte) []byte { b[segs[4].DataOffset-2] = 0x10; return b }, CodeTruncated, Policy{}},
		{"checksum", func(b []byte) []byte { b[img.ChecksumOffset] ^= 0x55; return b }, CodeChecksumMismatch, Policy{}},
		{"segment data", func(b []byte) []byte { b[segs[4].DataOffset+100] ^= 1; return b }, CodeChecksumMismatch, Policy{}},
		{"digest", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, CodeDigestMismatch, Policy{}},
		{"app desc magic", func(b []byte) []byte { b[0x20] = 0; reseal(b); return b }, CodeNoAppDesc, Policy{}},
		{"chip id", func(b []byte) []byte { b[12] = byte(ChipESP32S3); reseal(b); return b }, CodeChipMismatch, Policy{Chip: ChipESP32C3, ChipSet: true}},
		{"wrong device chip", func(b []byte) []byte { return b }, CodeChipMismatch, Policy{Chip: ChipESP32, ChipSet: true}},
		{"too large", func(b []byte) []byte { return b }, CodeTooLarge, Policy{SlotSize: 299_999}},
		{"misaligned IROM", func(b []byte) []byte {
			// Move the IROM segment's load address off its page offset.
			binary.LittleEndian.PutUint32(b[segs[4].DataOffset-8:], segs[4].Load+4)
			reseal(b)
			return b
		}, CodeSegmentMisaligned, Policy{}},
		{"chip rev too low", func(b []byte) []byte { return b }, CodeChipRevTooLow, Policy{ChipRev: 2, ChipRevSet: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.edit(bytes.Clone(base))
			r := Validate(b, tt.policy)
			if r.OK() || !r.Has(tt.code) {
				t.Fatalf("want error %s, got errors %v warnings %v", tt.code, codes(r.Errors), codes(r.Warnings))
			}
			for _, f := range r.Errors {
				if f.Message == "" || f.Hint == "" || f.Severity != SevError || strings.Contains(f.Message, "\n") {
					t.Errorf("finding %+v", f)
				}
			}
			_, err := Parse(b)
			if fe, ok := err.(*FileError); ok && (fe.Reason == "" || fe.Hint == "" || fe.Code == "") {
				t.Errorf("file error %+v", fe)
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	for _, nd := range []bool{false, true} {
		base := mustBuild(t, BuildOptions{Chip: ChipESP32S3, Size: 200_000, Seed: 11, NoDigest: nd})
		img, _ := Parse(base)
		cuts := []int{1, 10, 23, 24, 28}
		for _, s := range img.Segments {
			hdr := s.DataOffset - 8
			cuts = append(cuts, hdr, hdr+3, s.DataOffset, s.DataOffset+int(s.Len)/2, s.DataOffset+int(s.Len)-1)
		}
		cuts = append(cuts, img.ChecksumOffset-3, img.ChecksumOffset)
		if !nd {
			cuts = append(cuts, img.ChecksumOffset+1, img.ChecksumOffset+17, len(base)-1)
		}
		for _, cut := range cuts {
			r := Validate(base[:cut], Policy{Chip: ChipESP32S3, ChipSet: true})
			if r.OK() || len(r.Errors) != 1 || r.Errors[0].Code != CodeTruncated {
				t.Errorf("nodigest %v cut %d: errors %v", nd, cut, codes(r.Errors))
				continue
			}
			if !strings.Contains(r.Errors[0].Message, "missing") || r.Errors[0].Hint == "" {
				t.Errorf("cut %d: message %q", cut, r.Errors[0].Message)
			}
		}
	}
	// The exact number of missing bytes is reported when only the digest is cut.
	base := mustBuild(t, BuildOptions{Chip: ChipESP32, Seed: 1})
	_, err := Parse(base[:len(base)-5])
	if fe := asFileError(t, err); fe.Code != CodeTruncated || !strings.Contains(fe.Reason, "5 bytes missing") {
		t.Errorf("digest cut: %+v", fe)
	}
}

func TestPolicyWarnings(t *testing.T) {
	b := mustBuild(t, BuildOptions{Chip: ChipESP32, Project: "thermo", Version: "1.2.3", Size: 0x30000, Seed: 2})
	tests := []struct {
		name string
		data []byte
		p    Policy
		code string
	}{
		{"project", b, Policy{DeviceProject: "other"}, CodeProjectMismatch},
		{"same version", b, Policy{DeviceVersion: "1.2.3"}, CodeSameVersion},
		{"nearly full", b, Policy{SlotSize: 0x30000 + 100}, CodeNearlyFull},
		{"unsigned", b, Policy{ExpectSigned: true}, CodeUnsigned},
		{"trailing data", append(bytes.Clone(b), 1, 2, 3, 4), Policy{}, CodeTrailingData},
		{"no digest", mustBuild(t, BuildOptions{Chip: ChipESP32, NoDigest: true}), Policy{}, CodeNoDigest},
		{"chip rev above max", b, Policy{ChipRev: 400, ChipRevSet: true}, CodeChipRevAboveMax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Validate(tt.data, tt.p)
			if !r.OK() || !r.Has(tt.code) || len(r.Warnings) != 1 {
				t.Fatalf("errors %v warnings %v", codes(r.Errors), codes(r.Warnings))
			}
			if w := r.Warnings[0]; w.Message == "" || w.Severity != SevWarning {
				t.Errorf("warning %+v", w)
			}
		})
	}
	// No warnings for a matching device, 0xFF padding or a fitting slot.
	padded := append(bytes.Clone(b), bytes.Repeat([]byte{0xFF}, 4096)...)
	r := Validate(padded, Policy{Chip: ChipESP32, ChipSet: true, DeviceProject: "thermo", DeviceVersion: "1.2.2", SlotSize: 0x100000, ChipRev: 301, ChipRevSet: true})
	if !r.OK() || len(r.Warnings) != 0 || r.Image.Trailing != 4096 || !r.Image.TrailingPadding {
		t.Errorf("clean image: errors %v warnings %v", codes(r.Errors), codes(r.Warnings))
	}
	// Pre-release and unknown chip ids are warned about, not refused.
	for id, code := range map[Chip]string{7: CodePreReleaseChip, 0x77: CodeUnknownChip} {
		x := bytes.Clone(b)
		binary.LittleEndian.PutUint16(x[12:], uint16(id))
		reseal(x)
		r := Validate(x, Policy{})
		if !r.OK() || !r.Has(code) || r.Image.Kind != KindApp {
			t.Errorf("chip %d: errors %v warnings %v kind %s", uint16(id), codes(r.Errors), codes(r.Warnings), r.Image.Kind)
		}
		if r := Validate(x, Policy{Chip: ChipESP32, ChipSet: true}); !r.Has(CodeChipMismatch) {
			t.Errorf("chip %d vs ESP32: %v", uint16(id), codes(r.Errors))
		}
	}
}

func TestSBv2Synthetic(t *testing.T) {
	b := mustBuild(t, BuildOptions{Chip: ChipESP32C6, Size: 100_000, Seed: 4})
	signed := append(bytes.Clone(b), bytes.Repeat([]byte{0xFF}, (4096-len(b)%4096)%4096)...)
	sigOff := len(signed)
	d256 := sha256.Sum256(signed)
	d384 := sha512.Sum384(signed)
	sector := append(sigBlock(3, 0, 2, d256[:]), sigBlock(2, 0, 0, d256[:])...)
	sector = append(sector, sigBlock(3, 1, 3, d384[:])...)
	sector = append(sector, bytes.Repeat([]byte{0xFF}, 4096-len(sector))...)
	signed = append(signed, sector...)

	r := Validate(signed, Policy{ExpectSigned: true})
	s := r.Image.Signature
	if !r.OK() || len(r.Warnings) != 0 || s.Scheme != SigV2 || s.Offset != sigOff || len(s.Blocks) != 3 {
		t.Fatalf("errors %v warnings %v sig %+v", codes(r.Errors), codes(r.Warnings), s)
	}
	for i, want := range []string{"ECDSA-P256", "RSA-3072", "ECDSA-P384"} {
		if s.Blocks[i].Scheme != want || !s.Blocks[i].DigestOK {
			t.Errorf("block %d: %+v", i, s.Blocks[i])
		}
	}
	if s.Blocks[0].KeyDigest != sha256.Sum256(sector[36:101]) || s.Blocks[1].KeyDigest != sha256.Sum256(sector[1216+36:1216+812]) {
		t.Error("key digests")
	}
	p192 := bytes.Clone(signed)
	copy(p192[sigOff:], sigBlock(3, 0, 1, d256[:]))
	if img, _ := Parse(p192); img.Signature.Blocks[0].Scheme != "ECDSA-P192" {
		t.Errorf("P-192: %+v", img.Signature.Blocks[0])
	}

	// A signature made for other bytes: warning, or error when signing is expected.
	wrong := bytes.Clone(signed)
	other := sha256.Sum256([]byte("other"))
	copy(wrong[sigOff:], sigBlock(3, 0, 2, other[:]))
	if r := Validate(wrong, Policy{}); !r.OK() || !r.Has(CodeSignatureMismatch) {
		t.Errorf("wrong digest: %v %v", codes(r.Errors), codes(r.Warnings))
	}
	if r := Validate(wrong, Policy{ExpectSigned: true}); r.OK() || !r.Has(CodeSignatureMismatch) {
		t.Errorf("wrong digest, expect signed: %v", codes(r.Errors))
	}
	// A broken CRC ends the block list.
	badcrc := bytes.Clone(signed)
	badcrc[sigOff+1216+10] ^= 1
	if img, _ := Parse(badcrc); len(img.Signature.Blocks) != 1 {
		t.Errorf("bad CRC: %d blocks", len(img.Signature.Blocks))
	}
	badcrc[sigOff+10] ^= 1
	if r := Validate(badcrc, Policy{}); !r.Has(CodeBadSignature) {
		t.Errorf("no valid block: %v", codes(r.Warnings))
	}
}

func TestWrongKinds(t *testing.T) {
	elf := func(machine uint16) []byte {
		b := make([]byte, 64)
		copy(b, "\x7fELF\x01\x01\x01")
		binary.LittleEndian.PutUint16(b[16:], 2)
		binary.LittleEndian.PutUint16(b[18:], machine)
		return b
	}
	uf2 := make([]byte, 512)
	copy(uf2, "UF2\n")
	binary.LittleEndian.PutUint32(uf2[4:], 0x9E5D5157)
	binary.LittleEndian.PutUint32(uf2[8:], 0x2000)
	binary.LittleEndian.PutUint32(uf2[28:], 0xC47E5767)
	binary.LittleEndian.PutUint32(uf2[508:], 0x0AB16F30)
	enc := append([]byte{0xCF, 0xB6, 0x88, 0x07}, bytes.Repeat([]byte{0x5A}, 1020)...)
	lfs := make([]byte, 4096)
	copy(lfs, []byte{1, 0, 0, 0, 0xF0, 0x0F, 0xF0, 0x10})
	copy(lfs[8:], "littlefs")

	// ESP8266 v1: 8-byte header, RAM segments, checksum.
	e8266 := []byte{0xE9, 2, 0, 0x20, 0x04, 0x00, 0x10, 0x40}
	xor := byte(0xEF)
	for _, s := range []struct {
		load uint32
		n    int
	}{{0x40100000, 64}, {0x3FFE8000, 32}} {
		e8266 = binary.LittleEndian.AppendUint32(e8266, s.load)
		e8266 = binary.LittleEndian.AppendUint32(e8266, uint32(s.n))
		for i := 0; i < s.n; i++ {
			e8266 = append(e8266, byte(i*7))
			xor ^= byte(i * 7)
		}
	}
	for len(e8266)%16 != 15 {
		e8266 = append(e8266, 0)
	}
	e8266 = append(e8266, xor)
	e8266v2 := append([]byte{0xEA, 4, 0, 0x60, 4, 0, 0x10, 0x40, 0, 0, 0, 0, 16, 0, 0, 0}, make([]byte, 16)...)

	tests := []struct {
		name   string
		data   []byte
		kind   Kind
		reason string
	}{
		{"empty", nil, KindEmpty, "empty"},
		{"elf xtensa", elf(0x5E), KindELF, "Xtensa"},
		{"elf riscv", elf(0xF3), KindELF, "a RISC-V ELF file (ESP32-C/H/P series)"},
		{"elf riscv64", append(elf(0xF3)[:4:4], append([]byte{2}, elf(0xF3)[5:]...)...), KindELF, "a 64-bit RISC-V ELF file, not for an ESP32 chip"},
		{"elf x86-64", elf(0x3E), KindELF, "ELF file for x86-64, not an ESP32 chip"},
		{"elf arm", elf(0x28), KindELF, "ELF file for ARM,"},
		{"elf unknown machine", elf(0x1234), KindELF, "machine type 4660"},
		{"gzip", []byte{0x1F, 0x8B, 8, 0, 0, 0, 0, 0}, KindGzip, "gzip"},
		{"zip", []byte("PK\x03\x04\x14\x00\x00\x00firmware.bin"), KindZip, "zip"},
		{"intel hex", []byte(":020000040000FA\n:10000000E9050210F40B0840EE00000009000000AB\n"), KindIntelHex, "Intel HEX"},
		{"uf2", uf2, KindUF2, "ESP32-S3"},
		{"encrypted", enc, KindEncrypted, "pre-encrypted"},
		{"littlefs", lfs, KindLittleFS, "LittleFS"},
		{"partition table", makeTable([3]uint32{0, 0x10000, 0x100000}), KindPartitionTable, `"factory"`},
		{"esp8266 v1", e8266, KindESP8266, "ESP8266"},
		{"esp8266 v2", e8266v2, KindESP8266, "0xEA"},
		{"bootloader", makeBootloader(ChipESP32C3), KindBootloader, "ESP32-C3"},
		{"ram only", makeImage(ChipESP32, true, tseg{0x3FFB0000, make([]byte, 16)}, tseg{0x40080000, make([]byte, 64)}), KindBootloader, "RAM"},
		{"text", []byte("hello, this is not firmware"), KindUnknown, "unrecognised"},
		{"erased", bytes.Repeat([]byte{0xFF}, 8192), KindUnknown, "0xFF"},
		{"E9 garbage", append([]byte{0xE9}, bytes.Repeat([]byte{0x37}, 100)...), KindUnknown, "not valid"},
		{"short E9", []byte{0xE9, 1, 2}, KindApp, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Parse(tt.data)
			fe := asFileError(t, err)
			if img.Kind != tt.kind || fe.Kind != tt.kind || fe.Hint == "" || !strings.Contains(fe.Reason, tt.reason) {
				t.Fatalf("kind %s, err %+v", img.Kind, fe)
			}
			if strings.Contains(fe.Reason, "\n") || strings.Contains(fe.Hint, "\n") {
				t.Errorf("multi-line: %+v", fe)
			}
			r := Validate(tt.data, Policy{})
			if r.OK() || len(r.Errors) != 1 || r.Errors[0].Hint == "" {
				t.Errorf("Validate: %+v", r.Errors)
			}
		})
	}
	if _, err := Parse(elf(0x5E)); !strings.Contains(err.(*FileError).Hint, "firmware.bin, not firmware.elf") {
		t.Errorf("ELF hint: %q", err.(*FileError).Hint)
	}
}

func TestMerged(t *testing.T) {
	s3app := mustBuild(t, BuildOptions{Chip: ChipESP32S3, Seed: 1})
	s3 := place(nil, 0, makeBootloader(ChipESP32S3))
	s3 = place(s3, 0x8000, makeTable([3]uint32{0, 0x10000, 0x100000}))
	s3 = place(s3, 0x10000, s3app)

	e32app := mustBuild(t, BuildOptions{Chip: ChipESP32, Seed: 2})
	e32 := place(nil, 0, bytes.Repeat([]byte{0xFF}, 0x1000))
	e32 = place(e32, 0x1000, makeBootloader(ChipESP32))
	e32 = place(e32, 0x8000, makeTable([3]uint32{0x10, 0x20000, 0x100000}, [3]uint32{0x11, 0x120000, 0x100000}))
	e32 = place(e32, 0x20000, e32app)

	c5 := place(bytes.Repeat([]byte{0xFF}, 0x2000), 0x2000, makeBootloader(ChipESP32C5))
	c5 = place(c5, 0x10000, mustBuild(t, BuildOptions{Chip: ChipESP32C5}))

	noApp := place(nil, 0, makeBootloader(ChipESP32C6))
	noApp = place(noApp, 0x9000, makeTable([3]uint32{0, 0x10000, 0x100000}))

	tests := []struct {
		name      string
		data      []byte
		chip      Chip
		appOff    int
		tableOff  int
		appChip   Chip
		inReason  string
		appInHint bool
	}{
		{"s3 bootloader at 0", s3, ChipESP32S3, 0x10000, 0x8000, ChipESP32S3, "application at 0x10000", true},
		{"esp32 0xFF then 0x1000, app from table", e32, ChipESP32, 0x20000, 0x8000, ChipESP32, "bootloader at 0x1000", true},
		{"c5 at 0x2000 without table", c5, ChipESP32C5, 0x10000, 0, ChipESP32C5, "bootloader at 0x2000", true},
		{"bootloader and table only", noApp, ChipESP32C6, 0, 0x9000, 0, "no application", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Parse(tt.data)
			fe := asFileError(t, err)
			if img.Kind != KindMerged || fe.Kind != KindMerged || fe.Code != CodeNotApp || img.AppOffset != tt.appOff ||
				img.TableOffset != tt.tableOff || img.Header.ChipID != tt.chip || !strings.Contains(fe.Reason, tt.inReason) {
				t.Fatalf("kind %s app 0x%x table 0x%x chip %s err %+v", img.Kind, img.AppOffset, img.TableOffset, img.Header.ChipID, fe)
			}
			if tt.appInHint != strings.Contains(fe.Hint, "starts at offset") {
				t.Errorf("hint %q", fe.Hint)
			}
			if tt.appOff > 0 {
				if img.Embedded == nil || img.Embedded.Kind != KindApp || img.Embedded.Header.ChipID != tt.appChip || img.Embedded.App == nil {
					t.Errorf("embedded %+v", img.Embedded)
				}
			}
			if r := Validate(tt.data, Policy{}); r.OK() || r.Errors[0].Code != CodeNotApp {
				t.Errorf("Validate: %v", codes(r.Errors))
			}
		})
	}
	// A real bootloader + partition table + app, as merge_bin lays them out.
	boot := readTestImage(t, "esf-esp32s3-bootloader.bin")
	table := readTestImage(t, "esf-esp32-partition-table.bin")
	m := place(place(place(nil, 0, boot), 0x8000, table), 0x10000, readTestImage(t, "esf-esp32s3-hello_world.bin"))
	img, _ := Parse(m)
	if img.Kind != KindMerged || img.AppOffset != 0x10000 || img.Embedded == nil || img.Embedded.App.ProjectName != "hello_world" {
		t.Errorf("real merged: kind %s off 0x%x", img.Kind, img.AppOffset)
	}
}
