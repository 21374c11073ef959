package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func FuzzParse(f *testing.F) {
	for i, c := range Chips() {
		if b, err := Build(BuildOptions{Chip: c, Seed: int64(i), NoDigest: i%3 == 0}); err == nil {
			// Keep seeds small: the header, the first segments and the tail.
			f.Add(b)
		}
	}
	f.Add(makeBootloader(ChipESP32S3))
	f.Add(makeImage(ChipESP32, true, tseg{0x3F400020, make([]byte, 256)}))
	f.Add(makeTable([3]uint32{0, 0x10000, 0x100000}))
	f.Add([]byte("\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x5e\x00"))
	f.Add([]byte{0x1F, 0x8B, 8, 0})
	f.Add([]byte("PK\x03\x04"))
	f.Add([]byte(":020000040000FA\n"))
	f.Add([]byte{0xCF, 0xB6, 0x88, 0x07, 1, 2, 3})
	f.Add([]byte{0xEA, 4, 0, 0x60, 4, 0, 0x10, 0x40})
	f.Add([]byte{})
	f.Add([]byte{0xE9})
	merged := place(nil, 0, makeBootloader(ChipESP32C3))
	merged = place(merged, 0x8000, makeTable([3]uint32{0, 0x10000, 0x100000}))
	f.Add(place(merged, 0x10000, makeImage(ChipESP32C3, true, tseg{0x3C000020, make([]byte, 256)})))
	dir := filepath.Join("..", "..", "shared", "testdata", "esp-images")
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if filepath.Ext(e.Name()) == ".bin" {
				if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
					f.Add(b)
				}
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
		if err == nil {
			if img.Kind != KindApp || !img.ChecksumOK || img.Header.HashAppended && !img.DigestOK || img.Len > len(data) {
				t.Fatalf("nil error but kind %s checksum %v digest %v len %d", img.Kind, img.ChecksumOK, img.DigestOK, img.Len)
			}
		} else {
			fe, ok := err.(*FileError)
			if !ok || fe.Code == "" || fe.Reason == "" || fe.Hint == "" || fe.Kind != img.Kind {
				t.Fatalf("bad error %#v (kind %s)", err, img.Kind)
			}
		}
		r := Validate(data, Policy{})
		if r.OK() {
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
