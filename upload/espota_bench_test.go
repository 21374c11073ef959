package upload

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim"
)

// stopAndWait is espota.py's data phase, the baseline of the benchmark:
// 1 KiB, then wait for the device's count, then the next 1 KiB.
func stopAndWait(s *espotaSession, _ context.Context, conn net.Conn) error {
	defer conn.Close()
	var a espotaAnswer
	buf := make([]byte, 64)
	read := func() error {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.Read(buf)
		a.feed(buf[:n])
		return err
	}
	data := s.fw.Data
	for off := 0; off < len(data); off += 1024 {
		if _, err := conn.Write(data[off:min(off+1024, len(data))]); err != nil {
			return err
		}
		if err := read(); err != nil {
			return err
		}
		if a.started() && !a.ok() {
			break
		}
	}
	for !a.complete() {
		if err := read(); err != nil {
			return err
		}
	}
	if !a.ok() {
		return errors.New(a.words())
	}
	return nil
}

// BenchmarkEspotaLatency is issue 9's Measure (c): one espota device with
// a 5 ms reply latency and an unlimited write rate, the pipelined transfer
// against espota.py's stop-and-wait, alternating in the same run. It
// reports the wall time of each and their ratio ("speedup", target ≥ 3;
// the device's ~5.7 KB window caps it near 5.6).
//
//	go test ./upload -run '^$' -bench EspotaLatency -benchtime 3x
func BenchmarkEspotaLatency(b *testing.B) {
	tm := sim.FastTiming()
	lat, err := sim.ParseFault("latency:5ms")
	if err != nil {
		b.Fatal(err)
	}
	d, err := sim.Start(context.Background(), sim.Config{Personality: sim.Arduino, Timing: &tm, Seed: 1, Faults: []sim.Fault{lat}})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	size := 256 << 10
	imgs := [2]*Firmware{espotaImage(b, "1.0.1", size), espotaImage(b, "1.0.2", size)}
	tg := espotaTarget(d)
	tr := &EspotaTransport{ConnectTimeout: 5 * time.Second}
	var pipelined, lockstep time.Duration
	run := func(i int, data func(*espotaSession, context.Context, net.Conn) error) time.Duration {
		fw := imgs[i%2]
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.WaitUp(ctx); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := tr.send(ctx, tg, fw, Credentials{}, nil, data); err != nil {
			b.Fatal(err)
		}
		el := time.Since(start)
		// The device reboots into the new image before the next upload.
		if _, err := d.WaitVersion(ctx, fw.Image.App.Version); err != nil {
			b.Fatal(err)
		}
		return el
	}
	n := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pipelined += run(n, (*espotaSession).transfer)
		n++
		lockstep += run(n, stopAndWait)
		n++
	}
	b.StopTimer()
	ratio := float64(lockstep) / float64(pipelined)
	b.ReportMetric(float64(pipelined.Milliseconds())/float64(b.N), "pipelined-ms")
	b.ReportMetric(float64(lockstep.Milliseconds())/float64(b.N), "stopwait-ms")
	b.ReportMetric(ratio, "speedup")
	b.Logf("%d KiB at latency 5 ms: pipelined %v, stop-and-wait %v per upload: %.1f× faster",
		size>>10, pipelined/time.Duration(b.N), lockstep/time.Duration(b.N), ratio)
}
