package sim

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// BenchmarkUploadThroughput measures how fast one unthrottled device takes
// an image over loopback: the 1024-byte recv/write loop, the dedup writer
// and the final validation. The image's last byte is corrupted so the
// device answers 500 after validating instead of rebooting.
//
//	go test ./sim -run '^$' -bench UploadThroughput -benchtime 50x
func BenchmarkUploadThroughput(b *testing.B) {
	for _, size := range []int{1 << 20, 2<<20 - 64<<10} {
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			cfg := simtest.Config(Seed)
			cfg.WebPort = -1
			d := simtest.Start(b, cfg)
			img := simtest.Corrupt(simtest.ImageOf(b, "esp32s3", "1.0.1", size), size-1)
			head := fmt.Sprintf("POST /update HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", d.OTAAddr(), len(img))
			b.SetBytes(int64(len(img)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c, err := net.Dial("tcp", d.OTAAddr())
				if err != nil {
					b.Fatal(err)
				}
				c.Write([]byte(head))
				c.Write(img)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil || resp.StatusCode != 500 {
					b.Fatalf("%v %v", resp, err)
				}
				c.Close()
			}
		})
	}
}

func rssKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// BenchmarkFleet250 starts and stops 250 devices (2 TCP listeners each) and
// reports the start time, the heap in use and the process RSS with them up.
//
//	go test ./sim -run '^$' -bench Fleet250 -benchtime 3x
func BenchmarkFleet250(b *testing.B) {
	skipWithoutLoopbackRange(b)
	tmpl := simtest.Config(Seed)
	tmpl.ImageSize = 1 << 20 // a realistic 1 MB factory image
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		f, err := StartFleet(context.Background(), FleetConfig{N: 250, BaseIP: simtest.MustAddr(b, "127.42.8.2"), Template: tmpl, WebPort: 18082})
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(took.Milliseconds()), "ms/start")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heapMiB")
		b.ReportMetric(float64(rssKiB())/1024, "rssMiB")
		b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
		f.Close()
	}
}
