package image

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
)

// tinyApp is a minimal valid application image: a DROM segment carrying
// esp_app_desc_t plus two RAM segments (no IROM, so no page padding).
func tinyApp(chip Chip, hash bool) []byte {
	ci := lookupChip(chip)
	desc := make([]byte, 256)
	copy(desc, []byte{0x32, 0x54, 0xCD, 0xAB})
	copy(desc[16:], "1.0.0")
	copy(desc[48:], "tiny")
	drom := ci.dromStart + 0x20
	return makeImage(chip, hash, tseg{drom, desc}, tseg{ci.dram, make([]byte, 16)}, tseg{ci.iram, make([]byte, 32)})
}

// FuzzParse checks that Parse and Validate never panic and keep their
// invariants. Seeds are kept small on purpose: the fuzzer minimises every
// new interesting input for up to a minute, which stalls it on 100 KB+
// seeds. Full-size real and built images are covered by the unit tests;
// here they contribute their first 2 KB (header, segments, app desc) and
// small synthetic images stand in for complete ones.
func FuzzParse(f *testing.F) {
	for i, c := range Chips() {
		f.Add(tinyApp(c, i%3 != 0))
	}
	for _, c := range []Chip{ChipESP32S3, ChipESP32C6} {
		if b, err := Build(BuildOptions{Chip: c, Seed: 2}); err == nil {
			f.Add(b[:2048])
		}
	}
	f.Add(tinyArduino())
	f.Add(gzipped(tinyArduino()))
	f.Add(gzipped([]byte("not an image")))
	f.Add(makeBootloader(ChipESP32S3))
	f.Add(makeTable([3]uint32{0, 0x10000, 0x100000}))
	f.Add([]byte("\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x5e\x00"))
	f.Add([]byte{0x1F, 0x8B, 8, 0})
	f.Add([]byte("PK\x03\x04"))
	f.Add([]byte(":020000040000FA\n"))
	f.Add([]byte{0xCF, 0xB6, 0x88, 0x07, 1, 2, 3})
	f.Add([]byte{0xEA, 4, 0, 0x60, 4, 0, 0x10, 0x40})
	f.Add([]byte("UF2\n\x57\x51\x5d\x9e\x00\x20\x00\x00"))
	f.Add([]byte{})
	f.Add([]byte{0xE9})
	// Small signed image: tiny app, 0xFF to 4 KB, one SBv2 ECDSA block.
	signed := tinyApp(ChipESP32C6, true)
	signed = append(signed, bytes.Repeat([]byte{0xFF}, 4096-len(signed))...)
	sum := sha256.Sum256(signed)
	signed = append(signed, sigBlock(3, 0, 2, sum[:])...)
	f.Add(append(signed, bytes.Repeat([]byte{0xFF}, 4096-1216)...))
	// Small merged image: bootloader at 0, table at 0x8000, tiny app at 0x10000.
	merged := place(nil, 0, makeBootloader(ChipESP32C3))
	merged = place(merged, 0x8000, makeTable([3]uint32{0, 0x10000, 0x100000}))
	f.Add(place(merged, 0x10000, tinyApp(ChipESP32C3, true)))
	dir := filepath.Join("..", "..", "shared", "testdata", "esp-images")
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if filepath.Ext(e.Name()) != ".bin" {
				continue
			}
			if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
				f.Add(b[:min(len(b), 2048)])
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		img, err := Parse(data)
		if img == nil {
			t.Fatal("nil image")
		}
		if img.Size != len(data) {
			t.Fatalf("Size %d, len %d", img.Size, len(data))
		}
		if len(img.Segments) > maxSegments || len(img.Signature.Blocks) > 3 {
			t.Fatalf("%d segments, %d blocks", len(img.Segments), len(img.Signature.Blocks))
		}
		for i, s := range img.Segments {
			if s.DataOffset < 0 || s.DataOffset+int(s.Len) > len(data) {
				t.Fatalf("segment %d out of bounds: %+v", i, s)
			}
		}
		e8266 := img.esp8266Image()
		if err == nil {
			switch {
			case e8266 != nil:
				// An intact esp8266/Arduino image, maybe inflated from gzip.
				if e8266.Layout != LayoutArduino || !e8266.ChecksumOK || e8266.CRCPresent && !e8266.CRCOK || e8266.Len > e8266.Size {
					t.Fatalf("nil error but ESP8266 image %+v", e8266)
				}
			case img.Kind != KindApp || !img.ChecksumOK || img.Header.HashAppended && !img.DigestOK || img.Len > len(data):
				t.Fatalf("nil error but kind %s checksum %v digest %v len %d", img.Kind, img.ChecksumOK, img.DigestOK, img.Len)
			}
		} else {
			fe, ok := err.(*FileError)
			if !ok || fe.Code == "" || fe.Reason == "" || fe.Hint == "" || fe.Kind != img.Kind {
				t.Fatalf("bad error %#v (kind %s)", err, img.Kind)
			}
		}
		r := Validate(data, Policy{})
		if r.OK() && e8266 != nil {
			if err != nil || e8266.Layout != LayoutArduino {
				t.Fatalf("Validate OK for ESP8266 layout %s (parse err %v)", e8266.Layout, err)
			}
		} else if r.OK() {
			if r.Image.Kind != KindApp || !r.Image.ChecksumOK || r.Image.App == nil ||
				r.Image.Header.HashAppended && !r.Image.DigestOK || err != nil {
				t.Fatalf("Validate OK for kind %s checksum %v digest %v app %v (parse err %v)",
					r.Image.Kind, r.Image.ChecksumOK, r.Image.DigestOK, r.Image.App != nil, err)
			}
		}
		for _, fd := range append(r.Errors, r.Warnings...) {
			if fd.Code == "" || fd.Message == "" || fd.Severity == SevError && fd.Hint == "" {
				t.Fatalf("bad finding %+v", fd)
			}
		}
		if !bytes.Equal(orig, data) {
			t.Fatal("Parse modified its input")
		}
	})
}

func TestTinyAppValid(t *testing.T) {
	for _, c := range Chips() {
		if r := Validate(tinyApp(c, true), Policy{}); !r.OK() || len(r.Warnings) != 0 {
			t.Errorf("%s: %v %v", c, codes(r.Errors), codes(r.Warnings))
		}
	}
}
