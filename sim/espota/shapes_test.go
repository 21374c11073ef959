package espota

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/internal/simtest"
)

// The device shapes of issue 13, each driven by a plain client (net/http or
// raw TCP/UDP) and checked on the wire and in the device's state.

func TestNoRebootEspota(t *testing.T) {
	cfg := simtest.Config(ArduinoSketch)
	cfg.Faults = []core.Fault{simtest.MustFault(t, "no-reboot")}
	d := simtest.Start(t, cfg)
	res, err := simtest.EspotaPush(t, d.OTAAddr(), simtest.Image(t, "1.0.1"), "")
	if err != nil || res.Final != "OK" {
		t.Fatalf("push: %+v %v", res, err)
	}
	time.Sleep(10 * (cfg.Timing.RebootDelayMax + cfg.Timing.BootTime))
	if st := d.State(); st.BootCount != 1 || st.Version != "1.0.0" || st.Running != "app0" || st.Boot != "app1" {
		t.Fatalf("after OK: %s on %s, boot %s, %d boots", st.Version, st.Running, st.Boot, st.BootCount)
	}
}

// espotaOpen invites the device to upload img (no auth) and returns the
// connection it makes back.
func espotaOpen(t *testing.T, device string, img []byte) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u, err := net.Dial("udp", device)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	fmt.Fprintf(u, "0 %d %d %s\n", ln.Addr().(*net.TCPAddr).Port, len(img), simtest.MD5Hex(img))
	buf := make([]byte, 64)
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := u.Read(buf); err != nil || string(buf[:n]) != "OK" {
		t.Fatalf("invitation: %q %v", buf[:n], err)
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readSome reads what the device sent within wait.
func readSome(c net.Conn, wait time.Duration) (string, error) {
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestEarlyOK: espota's OK arrives while most of the image is still to be
// sent; install mode takes the rest and installs without a second OK.
func TestEarlyOK(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
	for _, c := range []struct {
		spec    string
		version string
	}{{"early-ok@30%", "1.0.1"}, {"early-ok@30%:close", "1.0.0"}} {
		t.Run(c.spec, func(t *testing.T) {
			cfg := simtest.Config(ArduinoSketch)
			cfg.Faults = []core.Fault{simtest.MustFault(t, c.spec)}
			d := simtest.Start(t, cfg)
			conn := espotaOpen(t, d.OTAAddr(), img)
			okAt := -1
			var after strings.Builder
			sent := 0
			for sent < len(img) {
				end := min(sent+1024, len(img))
				conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Write(img[sent:end]); err != nil {
					break // close mode: the device is gone
				}
				sent = end
				got, err := readSome(conn, 5*time.Second)
				if okAt >= 0 {
					after.WriteString(got)
				} else if strings.Contains(got, "OK") {
					okAt = sent
				}
				if err != nil {
					break
				}
			}
			if okAt < len(img)*30/100 || okAt >= len(img)*35/100 {
				t.Fatalf("OK after %d of %d bytes sent, want at about 30 %%", okAt, len(img))
			}
			if c.version == "1.0.0" {
				if sent == len(img) {
					t.Errorf("the device took all %d bytes after closing", sent)
				}
				st := simtest.WaitUploads(t, d, 1)
				if st.Uploads[0].Outcome == "ok" || st.Version != "1.0.0" {
					t.Errorf("after: %+v", st.Uploads[0])
				}
				return
			}
			rest, _ := readSome(conn, 5*time.Second)
			if strings.Contains(after.String()+rest, "OK") {
				t.Errorf("a second OK: %q", after.String()+rest)
			}
			if _, err := d.WaitVersion(simtest.Ctx(t, 10*time.Second), "1.0.1"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestChatter: the device stops taking data and keeps sending its last
// count, never OK; the update is aborted when the host gives up.
func TestChatter(t *testing.T) {
	img := simtest.Image(t, "1.0.1")
	for _, spec := range []string{"chatter@50%:20ms", "chatter@100%:20ms"} {
		t.Run(spec, func(t *testing.T) {
			cfg := simtest.Config(ArduinoSketch)
			cfg.Faults = []core.Fault{simtest.MustFault(t, spec)}
			d := simtest.Start(t, cfg)
			conn := espotaOpen(t, d.OTAAddr(), img)
			// The host sends in lockstep until its writes stall (the device
			// takes nothing more) or the image is out.
			for sent := 0; sent < len(img); {
				end := min(sent+1024, len(img))
				conn.SetWriteDeadline(time.Now().Add(time.Second))
				n, err := conn.Write(img[sent:end])
				sent += n
				if err != nil {
					break
				}
				if _, err := readSome(conn, 5*time.Second); err != nil {
					t.Fatalf("no count after %d bytes: %v", sent, err)
				}
			}
			// Nothing more is taken, yet counts keep coming, and never OK.
			var got strings.Builder
			for range 5 {
				s, err := readSome(conn, 5*time.Second)
				if err != nil {
					t.Fatalf("chatter stopped: %v (had %q)", err, got.String())
				}
				got.WriteString(s)
			}
			if strings.Contains(got.String(), "OK") || strings.Trim(got.String(), "0123456789") != "" || got.Len() == 0 {
				t.Errorf("chatter: %q", got.String())
			}
			conn.Close()
			st := simtest.WaitUploads(t, d, 1)
			rec := st.Uploads[0]
			point := int64(len(img))
			if strings.HasPrefix(spec, "chatter@50%") {
				point = int64(len(img)) / 2
			}
			if rec.Outcome != "aborted" || rec.Bytes < point || rec.Bytes > point+1460 || st.Version != "1.0.0" {
				t.Errorf("record: %+v (point %d), running %s", rec, point, st.Version)
			}
		})
	}
}

// TestTrickleEspota: counts come small and steadily, never the core's 1460.
func TestTrickleEspota(t *testing.T) {
	cfg := simtest.Config(ArduinoSketch)
	cfg.Faults = []core.Fault{simtest.MustFault(t, "trickle:2KB/s")}
	d := simtest.Start(t, cfg)
	img := simtest.Image(t, "1.0.1")
	conn := espotaOpen(t, d.OTAAddr(), img)
	go func() {
		conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		conn.Write(img) // blocks while the device trickles; ends with the test
	}()
	start := time.Now()
	var counts []string
	var buf strings.Builder
	for len(counts) < 6 {
		s, err := readSome(conn, 5*time.Second)
		if err != nil {
			t.Fatalf("count %d: %v", len(counts)+1, err)
		}
		buf.WriteString(s)
		// Counts are run together: each is "500" here, so split them so.
		for strings.HasPrefix(buf.String(), "500") {
			counts = append(counts, "500")
			rest := strings.TrimPrefix(buf.String(), "500")
			buf.Reset()
			buf.WriteString(rest)
		}
		if buf.Len() > 0 && !strings.HasPrefix("500", buf.String()) {
			t.Fatalf("a count other than 500: %q", buf.String())
		}
	}
	// Six reads of 500 bytes at 2000 B/s: at least 1.25 s between the first and the last.
	if took := time.Since(start); took < time.Second {
		t.Errorf("6 counts in %v", took)
	}
	if slices.Contains(counts, "1460") {
		t.Errorf("counts %v", counts)
	}
}
