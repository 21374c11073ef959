package esphome

import (
	"testing"

	"github.com/ots-ota/ots-ota/upload"
	"github.com/ots-ota/ots-ota/upload/internal/testkit"
)

// BenchmarkCompress is the gzip (level 9) of a 1.5 MiB app image that
// Send computes once per push, before its first connect: it must not fall
// inside a 2024 device's 1 s handshake reads.
// The simulator's image is mostly incompressible padding, the other one
// repetitive: real firmware lies between.
func BenchmarkCompress(b *testing.B) {
	for _, c := range []struct {
		name string
		img  []byte
	}{{"sim-image", testkit.SimImage(b, "1.0.0", 1536<<10)}, {"repetitive", testImage(1536 << 10)}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.img)))
			var saved float64
			for b.Loop() {
				tr := &Transport{}
				p := tr.compressed(upload.NewFirmware("fw.bin", c.img, false))
				saved = 100 - float64(len(p.gz))*100/float64(len(c.img))
			}
			b.ReportMetric(saved, "%saved")
		})
	}
}
