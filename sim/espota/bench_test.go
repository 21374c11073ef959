package espota_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/espota"
)

// BenchmarkTransfer1MB measures a whole no-auth espota upload of 1 MiB on
// loopback with espota's lock-step (1024-byte chunk, wait for the count),
// with and without a modelled round trip. Run:
//
//	go test -run='^$' -bench=Transfer1MB -benchtime=3x ./sim/espota/
func BenchmarkTransfer1MB(b *testing.B) {
	for _, lat := range []time.Duration{0, 5 * time.Millisecond} {
		b.Run("latency="+lat.String(), func(b *testing.B) {
			img := image(1 << 20)
			sum := md5hex(img)
			u := &fakeUpdater{flavor: espota.ESP32}
			pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer pc.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv := espota.NewServer(espota.Config{Flavor: espota.ESP32, Latency: lat}, u)
			go func() { _ = srv.Serve(ctx, pc) }()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatal(err)
				}
				udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatal(err)
				}
				inv := "0 " + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + " " + strconv.Itoa(len(img)) + " " + sum + "\n"
				if _, err := udp.WriteTo([]byte(inv), pc.LocalAddr()); err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, 64)
				_ = udp.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, _, err := udp.ReadFrom(buf); err != nil || string(buf[:n]) != "OK" {
					b.Fatalf("invitation reply %q, %v", buf[:n], err)
				}
				_ = ln.SetDeadline(time.Now().Add(5 * time.Second))
				c, err := ln.Accept()
				if err != nil {
					b.Fatal(err)
				}
				got, err := lockstep(c, img, 1024, 10*time.Second)
				if err != nil || !strings.HasSuffix(got, "OK") {
					b.Fatalf("upload: %v, stream tail %q", err, got[max(0, len(got)-20):])
				}
				c.Close()
				ln.Close()
				udp.Close()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/upload")
			b.SetBytes(int64(len(img)))
		})
	}
}
