package image

import (
	"crypto/sha256"
	"testing"
)

func benchValidate(b *testing.B, size int) {
	data, err := Build(BuildOptions{Chip: ChipESP32S3, Size: size, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	p := Policy{Chip: ChipESP32S3, ChipSet: true, SlotSize: 8 << 20}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if r := Validate(data, p); !r.OK() {
			b.Fatal(r.Errors)
		}
	}
}

func BenchmarkValidate2MB(b *testing.B) { benchValidate(b, 2<<20) }
func BenchmarkValidate4MB(b *testing.B) { benchValidate(b, 4<<20) }

func BenchmarkBuild2MB(b *testing.B) {
	b.SetBytes(2 << 20)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(BuildOptions{Chip: ChipESP32C6, Size: 2 << 20, Seed: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSHA256Baseline is the ceiling for Validate: hashing the same 2 MB once.
func BenchmarkSHA256Baseline(b *testing.B) {
	data := make([]byte, 2<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
}
