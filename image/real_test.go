package image

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// testdataDir locates the shared real images (../../shared/testdata/esp-images
// from this package) and skips when they are absent.
func testdataDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join("..", "..", "shared", "testdata", "esp-images")
	if _, err := os.Stat(filepath.Join(d, "README.md")); err != nil {
		t.Skipf("shared test images not found at %s: %v", d, err)
	}
	return d
}

func readTestImage(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdataDir(t), name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

type segFact struct {
	load uint32
	len  uint32
}

type appFact struct {
	file         string
	size         int
	chip         Chip
	segs         []segFact
	entry        uint32
	mode, sizeF  byte
	freq         byte
	minRev       byte
	minFull      uint16
	maxFull      uint16
	csOff        int
	cs           byte
	imgLen       int
	digest       string
	project      string
	version      string
	idf          string
	date, time   string
	efMin, efMax uint16
	mmu          uint8
	sig          string
	freqName     string
	elfSHA       string
	irom0DataOff int // data offset of the first IROM segment, 0 = don't check
	iromSegIndex int
}

var appFacts = []appFact{
	{file: "esf-esp32-hello_world.bin", size: 124416, chip: ChipESP32, entry: 0x40080AF0, mode: 2, sizeF: 1, freq: 0x0, freqName: "40m",
		minRev: 0, minFull: 0, maxFull: 399, csOff: 0x1E5DF, cs: 0x9A, imgLen: 124416, digest: "6cb56aed943b28b3",
		segs:    []segFact{{0x3F400020, 7908}, {0x3FFB0000, 6208}, {0x40080000, 38828}, {0, 12560}, {0x400D0020, 58804}},
		project: "hello_world", version: "v1.4.1-2-g0296947-dirty", idf: "v5.2.2-dirty", date: "Jul 25 2024", time: "16:23:40",
		sig: SigNone, irom0DataOff: 0x10020, iromSegIndex: 4},
	{file: "esf-esp32s3-hello_world.bin", size: 135008, chip: ChipESP32S3, entry: 0x40374BC4, mode: 2, sizeF: 1, freq: 0xF, freqName: "80m",
		minFull: 0, maxFull: 99, csOff: 0x20F3F, cs: 0x47, imgLen: 135008, digest: "2f1dabd3f0587f35",
		segs:    []segFact{{0x3C020020, 9924}, {0x3FC8EB00, 7008}, {0x40374000, 43672}, {0, 4900}, {0x42000020, 69400}},
		project: "hello_world", version: "v1.4.1-2-g0296947-dirty", idf: "v5.2.2-dirty", date: "Jul 25 2024", time: "16:25:51", sig: SigNone},
	{file: "esf-esp32c3-hello_world.bin", size: 124192, chip: ChipESP32C3, entry: 0x40380250, mode: 2, sizeF: 1, freq: 0xF, freqName: "80m",
		minRev: 3, minFull: 3, maxFull: 199, csOff: 0x1E4FF, cs: 0x2F, imgLen: 124192, digest: "7649e5a30b390bb4",
		segs:    []segFact{{0x3C010020, 5844}, {0x3FC87C00, 1988}, {0x40380000, 31664}, {0, 26008}, {0x42000020, 58584}},
		project: "hello_world", version: "v1.4.1-2-g0296947-dirty", idf: "v5.2.2-dirty", date: "Jul 25 2024", time: "16:24:20", sig: SigNone},
	{file: "esf-esp32c5-hello_world.bin", size: 92736, chip: ChipESP32C5, entry: 0x408002E4, mode: 2, sizeF: 1, freq: 0xF, freqName: "80m",
		minFull: 0, maxFull: 99, csOff: 0x16A1F, cs: 0xCF, imgLen: 92736, digest: "9b4b4f5357289ac9",
		segs:    []segFact{{0x42010020, 2408}, {0x40800000, 28824}, {0x40807100, 2468}, {0, 31804}, {0x42000020, 27132}},
		project: "hello_world", version: "v1.7.0-14-gc7b8433", idf: "v5.4-407-g649f9a72ae-dirty", date: "Jan 23 2025", time: "15:50:04",
		efMin: 0, efMax: 99, mmu: 16, sig: SigNone},
	{file: "esptool-esp32s2-blink.bin", size: 182368, chip: ChipESP32S2, entry: 0x40022F84, mode: 2, sizeF: 1, freq: 0xF, freqName: "80m",
		csOff: 0x2C83F, cs: 0x18, imgLen: 182368, digest: "10f48f4a71a48cc4",
		segs:    []segFact{{0x3F000020, 35864}, {0x3FFBDE90, 8268}, {0x40022000, 21380}, {0x40080020, 89320}, {0x40027384, 27404}, {0x50000000, 16}},
		project: "blink", version: "qa-test-v5.0-20220830-4-g4532e6", idf: "v5.0-beta1-427-g4532e6e0b2-dirt", date: "Sep 13 2022", time: "19:46:07",
		elfSHA: "3059e6b55a965865febd28fa9f6028ad5cd0dab311febb0a3ea79eaa223ac2b0", sig: SigNone},
	{file: "esptool-esp32-hello-world-sbv1-signed.bin", size: 196608, chip: ChipESP32, entry: 0x40080C54, mode: 2, sizeF: 1, freq: 0, freqName: "40m",
		csOff: 0x2FF8F, cs: 0x30, imgLen: 196528, digest: "06a1d6eb2c280ca6",
		segs: []segFact{{0x3F400020, 22316}, {0x3FFB0000, 5596}, {0x40080000, 1024}, {0x40080400, 26064}, {0, 10488},
			{0x400D0018, 73700}, {0, 57212}},
		project: "hello-world", version: "v3.3-beta3-21-g0706bd0d1-dirty", idf: "v3.3-beta3-21-g0706bd0d1-dirty", date: "Jun 19 2019", time: "14:43:38",
		sig: SigV1},
}

func TestRealAppImages(t *testing.T) {
	for _, f := range appFacts {
		t.Run(f.file, func(t *testing.T) {
			data := readTestImage(t, f.file)
			if len(data) != f.size {
				t.Fatalf("file size %d, want %d", len(data), f.size)
			}
			img, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			h := img.Header
			if img.Kind != KindApp || h.Magic != 0xE9 || h.ChipID != f.chip || h.Entry != f.entry || h.FlashMode != f.mode ||
				h.FlashSizeFreq != f.sizeF<<4|f.freq || h.WPPin != 0xEE || h.Drive != [3]byte{} || !h.HashAppended {
				t.Errorf("header %+v kind %s", h, img.Kind)
			}
			if h.FlashModeName() != "DIO" || h.FlashSize() != "2MB" || h.FlashFreq() != f.freqName {
				t.Errorf("flash names %s %s %s", h.FlashModeName(), h.FlashSize(), h.FlashFreq())
			}
			if h.MinRev != f.minRev || h.MinRevFull != f.minFull || h.MaxRevFull != f.maxFull {
				t.Errorf("revs %d/%d/%d", h.MinRev, h.MinRevFull, h.MaxRevFull)
			}
			if h.SegmentCount != len(f.segs) || len(img.Segments) != len(f.segs) {
				t.Fatalf("segments %d/%d, want %d", h.SegmentCount, len(img.Segments), len(f.segs))
			}
			off := 24
			for i, s := range img.Segments {
				if s.Load != f.segs[i].load || s.Len != f.segs[i].len || s.DataOffset != off+8 {
					t.Errorf("segment %d = %+v, want %+v at data offset %d", i, s, f.segs[i], off+8)
				}
				if s.Padding != (s.Load == 0) {
					t.Errorf("segment %d padding flag %v", i, s.Padding)
				}
				off += 8 + int(s.Len)
			}
			if !img.Segments[0].Mapped {
				t.Errorf("segment 0 not flash-mapped")
			}
			if f.irom0DataOff != 0 && img.Segments[f.iromSegIndex].DataOffset != f.irom0DataOff {
				t.Errorf("IROM data offset 0x%x", img.Segments[f.iromSegIndex].DataOffset)
			}
			if len(img.Misaligned) != 0 {
				t.Errorf("misaligned segments %v (page %d)", img.Misaligned, img.MMUPageSize)
			}
			if img.ChecksumOffset != f.csOff || img.Checksum != f.cs || !img.ChecksumOK {
				t.Errorf("checksum 0x%02x @0x%x ok=%v", img.Checksum, img.ChecksumOffset, img.ChecksumOK)
			}
			if img.Len != f.imgLen || !img.DigestOK || hex.EncodeToString(img.Digest[:8]) != f.digest {
				t.Errorf("len %d digest %x ok=%v", img.Len, img.Digest, img.DigestOK)
			}
			a := img.App
			if a == nil {
				t.Fatal("no app desc")
			}
			if a.ProjectName != f.project || a.Version != f.version || a.IDFVer != f.idf || a.Date != f.date || a.Time != f.time ||
				a.SecureVersion != 0 || a.MinEfuseBlkRev != f.efMin || a.MaxEfuseBlkRev != f.efMax || a.MMUPageSize != f.mmu || a.SPIFlashMode != 0 {
				t.Errorf("app desc %+v", a)
			}
			if f.elfSHA != "" && hex.EncodeToString(a.ELFSHA256[:]) != f.elfSHA {
				t.Errorf("elf sha %x", a.ELFSHA256)
			}
			if img.Signature.Scheme != f.sig {
				t.Errorf("signature %+v", img.Signature)
			}
			if img.Trailing != 0 {
				t.Errorf("trailing %d", img.Trailing)
			}
			r := Validate(data, Policy{Chip: f.chip, ChipSet: true, SlotSize: 0x100000, DeviceProject: f.project})
			if !r.OK() || len(r.Warnings) != 0 {
				t.Errorf("Validate: errors %+v warnings %+v", r.Errors, r.Warnings)
			}
		})
	}
}

func TestRealSBv1(t *testing.T) {
	data := readTestImage(t, "esptool-esp32-hello-world-sbv1-signed.bin")
	img, _ := Parse(data)
	s := img.Signature
	if s.Scheme != SigV1 || s.Offset != 196528 || s.End != 196608 || len(s.Blocks) != 0 {
		t.Fatalf("signature %+v", s)
	}
	if r := Validate(data, Policy{ExpectSigned: true}); !r.OK() || r.Has(CodeUnsigned) {
		t.Errorf("signed image: %+v %+v", r.Errors, r.Warnings)
	}
}

func TestRealBootloaders(t *testing.T) {
	t.Run("s3", func(t *testing.T) {
		data := readTestImage(t, "esf-esp32s3-bootloader.bin")
		img, err := Parse(data)
		fe := asFileError(t, err)
		if img.Kind != KindBootloader || fe.Kind != KindBootloader || fe.Code != CodeNotApp || fe.Hint == "" {
			t.Fatalf("kind %s err %+v", img.Kind, fe)
		}
		h := img.Header
		if h.ChipID != ChipESP32S3 || len(img.Segments) != 4 || h.Entry != 0x403C98FC || img.Segments[0].Load != 0x3FCE3810 ||
			!h.HashAppended || img.Checksum != 0x67 || !img.ChecksumOK || !img.DigestOK ||
			hex.EncodeToString(img.Digest[:8]) != "6829c6879693c1d0" || h.MinRev != 0 || h.MinRevFull != 0 || h.MaxRevFull != 99 {
			t.Errorf("header/segments: %+v %+v", h, img.Segments)
		}
		for i, s := range img.Segments {
			if s.Mapped {
				t.Errorf("segment %d mapped", i)
			}
		}
		b := img.Boot
		if b == nil || b.Version != 1 || b.IDFVer != "v5.2.2-dirty" || b.DateTime != "Jul 25 2024 16:26:01" || img.App != nil {
			t.Errorf("boot desc %+v", b)
		}
		if r := Validate(data, Policy{}); r.OK() || !r.Has(CodeNotApp) {
			t.Errorf("Validate accepted a bootloader: %+v", r)
		}
	})
	t.Run("sbv2", func(t *testing.T) {
		data := readTestImage(t, "esptool-esp32-bootloader-sbv2-ecdsa256-3sig.bin")
		img, err := Parse(data)
		fe := asFileError(t, err)
		if img.Kind != KindBootloader || fe.Code != CodeNotApp {
			t.Fatalf("kind %s err %+v", img.Kind, fe)
		}
		h := img.Header
		if h.ChipID != ChipESP32 || len(img.Segments) != 4 || h.Entry != 0x400806F8 || h.MinRev != 3 || h.MinRevFull != 0 ||
			h.MaxRevFull != 0 || !h.HashAppended || img.Checksum != 0xFC || !img.ChecksumOK || !img.DigestOK ||
			hex.EncodeToString(img.Digest[:8]) != "ae743beed340fd6a" || img.Len != 30480 || img.Boot != nil {
			t.Errorf("header: %+v len %d", h, img.Len)
		}
		s := img.Signature
		if s.Scheme != SigV2 || s.Offset != 32768 || s.End != 36864 || len(s.Blocks) != 3 || img.Trailing != 0 {
			t.Fatalf("signature %+v", s)
		}
		crcs := []uint32{0x57A968B3, 0xD06969D9, 0x22E6AF20}
		keys := []string{"f35cc5db", "716eea78", "dbee11b9"}
		for i, b := range s.Blocks {
			if b.Version != 3 || b.Scheme != "ECDSA-P256" || !b.DigestOK || b.CRC != crcs[i] ||
				hex.EncodeToString(b.Digest) != "41e8df85bcf9632d97f97d3716e09e403c4acece1ccc25749241be2b6ddd21de" ||
				hex.EncodeToString(b.KeyDigest[:4]) != keys[i] {
				t.Errorf("block %d: %+v key %x", i, b, b.KeyDigest[:4])
			}
		}
	})
}

func TestRealWrongFiles(t *testing.T) {
	cases := []struct {
		file string
		kind Kind
	}{
		{"esf-esp32-partition-table.bin", KindPartitionTable},
		{"esf-esp8266-rtos-hello-world.bin", KindESP8266},
		{"esptool-esp8266-v2-user1.bin", KindESP8266},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			data := readTestImage(t, c.file)
			img, err := Parse(data)
			fe := asFileError(t, err)
			if img.Kind != c.kind || fe.Kind != c.kind || fe.Code != CodeNotApp || fe.Hint == "" || fe.Reason == "" {
				t.Fatalf("kind %s err %+v", img.Kind, fe)
			}
			r := Validate(data, Policy{})
			if r.OK() || len(r.Errors) != 1 || r.Errors[0].Code != CodeNotApp || r.Errors[0].Hint == "" {
				t.Errorf("Validate: %+v", r.Errors)
			}
			t.Logf("%s: %s / %s", c.file, fe.Reason, fe.Hint)
		})
	}
	t.Run("rtos details", func(t *testing.T) {
		data := readTestImage(t, "esf-esp8266-rtos-hello-world.bin")
		img, _ := Parse(data)
		want := []segFact{{0x40210010, 79880}, {0x40223818, 14924}, {0x3FFE8000, 988}, {0x40100000, 128}, {0x40100080, 17736}}
		if img.Header.Entry != 0x402107F4 || img.Header.FlashMode != 2 || img.Header.FlashSizeFreq != 0x10 || len(img.Segments) != len(want) {
			t.Fatalf("header %+v segs %d", img.Header, len(img.Segments))
		}
		for i, s := range img.Segments {
			if s.Load != want[i].load || s.Len != want[i].len {
				t.Errorf("segment %d %+v", i, s)
			}
		}
		if img.Checksum != 0x0F || img.ChecksumOffset != 0x1BC2F || !img.ChecksumOK || !img.DigestOK ||
			hex.EncodeToString(img.Digest[:8]) != "c855005c8d48d131" || img.Len != len(data) {
			t.Errorf("checksum 0x%x @0x%x digest %x len %d", img.Checksum, img.ChecksumOffset, img.Digest, img.Len)
		}
	})
	t.Run("table entries", func(t *testing.T) {
		data := readTestImage(t, "esf-esp32-partition-table.bin")
		es := readTable(data)
		if len(es) != 3 || es[0].label != "nvs" || es[0].offset != 0x9000 || es[0].size != 0x6000 || es[0].typ != 1 || es[0].subtype != 2 ||
			es[2].label != "factory" || es[2].offset != 0x10000 || es[2].size != 0x100000 || es[2].typ != 0 {
			t.Errorf("entries %+v", es)
		}
	})
}

func asFileError(t testing.TB, err error) *FileError {
	t.Helper()
	fe, ok := err.(*FileError)
	if !ok {
		t.Fatalf("error %v (%T) is not a *FileError", err, err)
	}
	return fe
}
