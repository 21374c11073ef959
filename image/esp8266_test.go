package image

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"strings"
	"testing"
)

func arduinoImage(t testing.TB, size int) []byte {
	t.Helper()
	b, err := Build(BuildOptions{Chip: ChipESP8266, Version: "2.0.0", Size: size, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func TestBuildArduino8266(t *testing.T) {
	for _, size := range []int{0, 40000, 300001} {
		b := arduinoImage(t, size)
		if size > 0 && len(b) != (size+15)&^15 {
			t.Errorf("size %d: %d bytes", size, len(b))
		}
		img, err := Parse(b)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if img.Kind != KindESP8266 || img.Layout != LayoutArduino || img.AppOffset != 0x1000 || !img.ChecksumOK ||
			!img.CRCPresent || !img.CRCOK || img.Len != len(b) || img.Trailing != 0 || len(img.Segments) != 5 {
			t.Fatalf("size %d: %+v", size, img)
		}
		if s := img.Segments[0]; s.Load != 0x40201010 || s.DataOffset != 0x1010 || !s.Mapped {
			t.Errorf("segment 0 %+v", s)
		}
		if c, ok := img.ForChip(); !ok || c != ChipESP8266 || c.String() != "esp8266" || c.DisplayName() != "ESP8266" {
			t.Errorf("ForChip %v %v", c, ok)
		}
		// eboot at 0: the header the Updater reads (4M, 40m) and 0xAA up to the sketch.
		if b[0] != 0xE9 || b[3] != 0x40 || b[0x1000] != 0xE9 || b[0xFFF] != 0xAA {
			t.Errorf("layout % x", b[:4])
		}
	}
	if _, err := Build(BuildOptions{Chip: ChipESP8266, Size: 2 << 20}); err == nil {
		t.Error("a 2 MiB ESP8266 sketch was built")
	}
	if _, err := Build(BuildOptions{Chip: ChipESP8266, Size: 5000}); err == nil {
		t.Error("a 5000-byte ESP8266 sketch was built")
	}
	a, b := arduinoImage(t, 0), arduinoImage(t, 0)
	if !bytes.Equal(a, b) {
		t.Error("not reproducible")
	}
}

// TestCRC8266 pins the CRC elf2bin.py writes (CRC-32/MPEG-2 with the two
// words at 0x1010 taken as zero) against values computed independently.
func TestCRC8266(t *testing.T) {
	if got := crc8266([]byte("123456789")); got != 0x0376E6E7 { // CRC-32/MPEG-2 check value
		t.Errorf("check value 0x%08x", got)
	}
	b := arduinoImage(t, 40000)
	c := bytes.Clone(b)
	copy(c[0x1010:], []byte{1, 2, 3, 4, 5, 6, 7, 8})
	if crc8266(b) != crc8266(c) {
		t.Error("the CRC words are not taken as zero")
	}
}

func TestValidateESP8266(t *testing.T) {
	ard := arduinoImage(t, 0)
	esp32 := tinyApp(ChipESP32S3, true)
	corrupt := bytes.Clone(ard)
	corrupt[0x2000] ^= 0x40
	crcOnly := bytes.Clone(ard)
	crcOnly[0x1014] ^= 1
	oldCore := bytes.Clone(ard) // cores before 2.7 leave the CRC words zero
	clear(oldCore[0x1010:0x1018])
	signed := append(bytes.Clone(ard), bytes.Repeat([]byte{0x5A}, 256)...)
	signed = binary.LittleEndian.AppendUint32(signed, 256)
	v1 := append([]byte{0xE9, 1, 0, 0x20, 0x04, 0x00, 0x10, 0x40, 0x00, 0x00, 0x10, 0x40, 16, 0, 0, 0}, make([]byte, 16)...)
	for len(v1)%16 != 15 {
		v1 = append(v1, 0)
	}
	v1 = append(v1, 0xEF)
	v2 := append([]byte{0xEA, 4, 0, 0x60, 4, 0, 0x10, 0x40, 0, 0, 0, 0, 16, 0, 0, 0}, make([]byte, 16)...)
	s8266 := Policy{Chip: ChipESP8266, ChipSet: true}
	s3 := Policy{Chip: ChipESP32S3, ChipSet: true}
	tests := []struct {
		name   string
		data   []byte
		p      Policy
		errs   []string
		reason string
		layout Layout
	}{
		{"arduino, no chip", ard, Policy{}, nil, "", LayoutArduino},
		{"arduino to esp8266", ard, s8266, nil, "", LayoutArduino},
		{"arduino to esp32s3", ard, s3, []string{CodeChipFamilyMismatch}, "the device is ESP32-S3", LayoutArduino},
		{"gzip arduino to esp8266", gzipped(ard), s8266, nil, "", LayoutArduino},
		{"gzip arduino to esp32s3", gzipped(ard), s3, []string{CodeChipFamilyMismatch}, "built for ESP8266", LayoutArduino},
		{"esp32 to esp8266", esp32, s8266, []string{CodeChipFamilyMismatch}, "built for ESP32-S3, the device is an ESP8266", ""},
		{"gzip esp32", gzipped(esp32), Policy{}, []string{CodeNotApp}, "gzip-compressed application image for ESP32-S3", ""},
		{"gzip corrupt arduino", gzipped(corrupt), s8266, []string{CodeChecksumMismatch}, "gzip-compressed: checksum mismatch", LayoutArduino},
		{"gzip text", gzipped([]byte("hello")), Policy{}, []string{CodeNotApp}, "unrecognised data inside", ""},
		{"gzip cut off", gzipped(ard)[:3000], Policy{}, []string{CodeTruncated}, "corrupt or cut off", ""},
		{"gzip bomb", gzipped(make([]byte, maxInflate+1)), Policy{}, []string{CodeNotApp}, "larger than any ESP8266 sketch", ""},
		{"corrupt sketch", corrupt, s8266, []string{CodeChecksumMismatch}, "checksum mismatch in the esp8266/Arduino sketch", LayoutArduino},
		{"cut sketch", ard[:0x3000], s8266, []string{CodeTruncated}, "sketch at 0x1000 is cut off", LayoutArduino},
		{"crc", crcOnly, s8266, []string{CodeChecksumMismatch}, "CRC-32 mismatch", LayoutArduino},
		{"old core without crc", oldCore, s8266, nil, "", LayoutArduino},
		{"signed sketch", signed, s8266, nil, "", LayoutArduino},
		{"eboot only", ard[:0x1000], s8266, []string{CodeTruncated}, "before its sketch", LayoutArduino},
		{"nonos v1", v1, s8266, []string{CodeNotApp}, "NONOS", LayoutNONOS},
		{"v2", v2, s8266, []string{CodeNotApp}, "0xEA", LayoutNONOSOTA},
		{"v2 forced chip", v2, Policy{}, []string{CodeNotApp}, "Updater refuses it", LayoutNONOSOTA},
		{"slot", ard, Policy{Chip: ChipESP8266, ChipSet: true, SlotSize: 100000}, []string{CodeTooLarge}, "", LayoutArduino},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Validate(tt.data, tt.p)
			if got := codes(r.Errors); strings.Join(got, ",") != strings.Join(tt.errs, ",") {
				t.Fatalf("errors %v, want %v (%+v)", got, tt.errs, r.Errors)
			}
			if len(r.Warnings) != 0 {
				t.Errorf("warnings %+v", r.Warnings)
			}
			if tt.reason != "" && !strings.Contains(r.Errors[0].Message, tt.reason) {
				t.Errorf("message %q, want %q", r.Errors[0].Message, tt.reason)
			}
			for _, f := range r.Errors {
				if f.Hint == "" || strings.Contains(f.Message, "\n") {
					t.Errorf("finding %+v", f)
				}
			}
			e := r.Image.esp8266Image()
			if tt.layout == "" {
				return
			}
			if e == nil || e.Layout != tt.layout {
				t.Errorf("layout %+v", e)
			}
		})
	}
	img, _ := Parse(signed)
	if img.Signature.Scheme != SigESP8266 || img.Trailing != 0 {
		t.Errorf("signed: %+v", img.Signature)
	}
}

// TestRealRTOSImage: the ESP8266_RTOS_SDK hello-world is named as such
// and refused for ESP8266 targets; the eboot of an Arduino device would copy
// it to 0x0, where it does not boot.
func TestRealRTOSImage(t *testing.T) {
	data := readTestImage(t, "esf-esp8266-rtos-hello-world.bin")
	for _, p := range []Policy{{}, {Chip: ChipESP8266, ChipSet: true}} {
		r := Validate(data, p)
		if r.OK() || r.Image.Layout != LayoutRTOS || r.Errors[0].Code != CodeNotApp ||
			!strings.Contains(r.Errors[0].Message, "ESP8266_RTOS_SDK") || !strings.Contains(r.Errors[0].Message, "flash 0x0") ||
			!strings.Contains(r.Errors[0].Hint, "esp8266/Arduino core") {
			t.Errorf("%+v: %+v", p, r.Errors)
		}
	}
	r := Validate(gzipped(data), Policy{Chip: ChipESP8266, ChipSet: true})
	if r.OK() || !strings.Contains(r.Errors[0].Message, "gzip-compressed: this is an ESP8266_RTOS_SDK application") {
		t.Errorf("gzip: %+v", r.Errors)
	}
	v2 := readTestImage(t, "esptool-esp8266-v2-user1.bin")
	if r := Validate(v2, Policy{Chip: ChipESP8266, ChipSet: true}); r.OK() || r.Image.Layout != LayoutNONOSOTA {
		t.Errorf("v2: %+v", r.Errors)
	}
}

func TestChipByNameESP8266(t *testing.T) {
	for _, n := range []string{"esp8266", "ESP8266", "esp-8266", "ESP8285"} {
		if c, ok := ChipByName(n); !ok || c != ChipESP8266 {
			t.Errorf("%q: %v %v", n, c, ok)
		}
	}
	if ChipESP8266.Known() || !ChipESP8266.IsESP8266() || ChipESP32.IsESP8266() {
		t.Error("ESP8266 is no esp_chip_id_t")
	}
}

func TestBoardChip(t *testing.T) {
	tests := []struct {
		board string
		chip  Chip
		ok    bool
	}{
		{"ESP8266_GENERIC", ChipESP8266, true},
		{"ESP8266_NODEMCU_ESP12E", ChipESP8266, true},
		{"ESP8266_ESP01", ChipESP8266, true},
		{"ESP8285", ChipESP8266, true},
		{"esp32", ChipESP32, true},
		{"esp32s3", ChipESP32S3, true},
		{"ESP32S3_DEV", ChipESP32S3, true},
		{"esp32-s3-devkitc-1", ChipESP32S3, true},
		{"adafruit_feather_esp32s3", ChipESP32S3, true},
		{"XIAO_ESP32C3", ChipESP32C3, true},
		{"esp32c6", ChipESP32C6, true},
		{"esp32c61", ChipESP32C61, true},
		{"lolin_s2_mini", 0, false},
		{"d1_mini", 0, false},
		{"nodemcu-32s", 0, false},
		{"", 0, false},
		{"esp32_to_esp8266_bridge", 0, false},
	}
	for _, tt := range tests {
		c, ok := BoardChip(tt.board)
		if ok != tt.ok || ok && c != tt.chip {
			t.Errorf("%q: %v %v, want %v %v", tt.board, c, ok, tt.chip, tt.ok)
		}
	}
}

// tinyArduino is a small esp8266/Arduino image (elf2bin layout) for fuzz
// seeds: a two-segment eboot, 0xAA to 0x1000, a two-segment sketch, the CRC.
func tinyArduino() []byte {
	v1 := func(entry uint32, segs ...tseg) []byte {
		b := []byte{0xE9, byte(len(segs)), 3, 0x40}
		b = binary.LittleEndian.AppendUint32(b, entry)
		x := byte(0xEF)
		for _, s := range segs {
			b = binary.LittleEndian.AppendUint32(b, s.load)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(s.data)))
			b = append(b, s.data...)
			x ^= xorFold(s.data)
		}
		for len(b)%16 != 15 {
			b = append(b, 0)
		}
		return append(b, x)
	}
	b := v1(0x4010F000, tseg{0x4010F000, bytes.Repeat([]byte{1}, 32)}, tseg{0x3FFF20B8, make([]byte, 8)})
	b = append(b, bytes.Repeat([]byte{0xAA}, 0x1000-len(b))...)
	b = append(b, v1(0x40100000, tseg{0x40201010, make([]byte, 64)}, tseg{0x40100000, bytes.Repeat([]byte{7}, 16)})...)
	binary.LittleEndian.PutUint32(b[0x1010:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[0x1014:], crc8266(b))
	return b
}

func TestTinyArduino(t *testing.T) {
	for _, b := range [][]byte{tinyArduino(), gzipped(tinyArduino())} {
		if r := Validate(b, Policy{Chip: ChipESP8266, ChipSet: true}); !r.OK() || len(r.Warnings) != 0 {
			t.Errorf("%v %v", r.Errors, r.Warnings)
		}
	}
}
