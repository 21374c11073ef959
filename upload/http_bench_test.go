package upload

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim"
)

// BenchmarkHTTPvsCurl is issue 9's measure (b): one unthrottled device with
// an 8 MiB slot, a 4 MB image, HTTPTransport against curl in the same run,
// alternating. It reports both times per upload and their ratio (target
// ≤ 1.1). The device's reboot between uploads is not timed.
//
//	go test ./upload/ -run '^$' -bench HTTPvsCurl -benchtime 10x
func BenchmarkHTTPvsCurl(b *testing.B) {
	bin, err := exec.LookPath("curl")
	if err != nil {
		b.Skip("curl not installed")
	}
	fw := httpImage(b, "2.0.0", 4_000_000)
	file := filepath.Join(b.TempDir(), "fw.bin")
	if err := os.WriteFile(file, fw.Data, 0o644); err != nil {
		b.Fatal(err)
	}
	d := httpDevice(b, sim.Config{Personality: sim.OTS, SlotSize: 8 << 20, IP: netip.MustParseAddr("127.0.0.2"), WebPort: -1})
	addr := d.OTAAddr()
	url := "http://" + addr + "/update"
	tg := httpTarget(b, addr, "")
	tr := &HTTPTransport{}
	ctx := context.Background()
	version := d.State().Version
	ready := func() {
		b.Helper()
		waitValid(b, d, version)
	}
	ready()
	version = "2.0.0"
	var ours, theirs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		runOurs := func() {
			start := time.Now()
			if err := tr.Send(ctx, tg, fw, Credentials{}, nil); err != nil {
				b.Fatalf("HTTPTransport: %v", err)
			}
			ours += time.Since(start)
			ready()
		}
		runCurl := func() {
			start := time.Now()
			out, err := exec.Command(bin, "-sS", "--data-binary", "@"+file, "-H", "Content-Type: application/octet-stream", url).CombinedOutput()
			theirs += time.Since(start)
			if err != nil || !strings.Contains(string(out), "successful") {
				b.Fatalf("curl: %v: %s", err, out)
			}
			ready()
		}
		if i%2 == 0 {
			runOurs()
			runCurl()
		} else {
			runCurl()
			runOurs()
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(ours.Milliseconds())/n, "ots-ms/upload")
	b.ReportMetric(float64(theirs.Milliseconds())/n, "curl-ms/upload")
	b.ReportMetric(ours.Seconds()/theirs.Seconds(), "ots/curl")
	b.Logf("%s: HTTPTransport %v, curl %v per upload: ratio %.3f", addr, ours/time.Duration(b.N), theirs/time.Duration(b.N), ours.Seconds()/theirs.Seconds())
}
