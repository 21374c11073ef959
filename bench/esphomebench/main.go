// Command esphomebench measures what bench/esphome-bench.sh prints: how
// long `ots-ota push` takes to update N ESPHome sim devices, against a
// sequential loop of a stop-and-wait client over as many devices. The
// baseline client is written here from the protocol facts
// (docs/protocols/esphome.md): it sends each 8 KiB block and waits for
// the device's 0x47 before the next one, as ESPHome's espota2.py does, and
// treats one device after the other, as `esphome upload` and the
// dashboard's "update all" do. Both runs face the same simulated devices:
// fresh sims of the same build for each, with the same faults and flash
// speed. The ratio is the baseline's wall time over ots-ota's.
//
//	esphomebench -ots ./ots-ota [-devices 1,20] [-size 1M] [-latency 5ms]
//	             [-erase-rate 512KiB/s] [-write-rate 200KiB/s]
//
// Every device listens on 127.22.x.y with mDNS off, and ots-ota is given
// HOST:PORT with --protocol esphome and --no-verify (espota2.py does not
// verify either): nothing leaves loopback. Run it inside `unshare -n`.
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ots := flag.String("ots", "", "the ots-ota binary")
	devices := flag.String("devices", "1,20", "fleet sizes, comma separated")
	size := flag.String("size", "1M", "image size (ots-ota sim image --size)")
	latency := flag.String("latency", "5ms", "the sims' latency fault (every answer of the device comes this late)")
	erase := flag.String("erase-rate", "512KiB/s", "the sims' erase speed")
	write := flag.String("write-rate", "200KiB/s", "the sims' flash write speed")
	flag.Parse()
	if *ots == "" {
		fmt.Fprintln(os.Stderr, "usage: esphomebench -ots OTS-OTA-BINARY [flags]")
		os.Exit(2)
	}
	if err := run(*ots, *devices, *size, *latency, *erase, *write); err != nil {
		fmt.Fprintln(os.Stderr, "esphomebench:", err)
		os.Exit(1)
	}
}

func run(ots, devices, size, latency, erase, write string) error {
	dir, err := os.MkdirTemp("", "esphomebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fw := filepath.Join(dir, "fw.bin")
	if out, err := exec.Command(ots, "sim", "image", "--chip", "esp32", "--version", "1.0.1", "--size", size, "-o", fw).CombinedOutput(); err != nil {
		return fmt.Errorf("sim image: %v: %s", err, out)
	}
	img, err := os.ReadFile(fw)
	if err != nil {
		return err
	}
	fmt.Printf("ESPHome native OTA, ESP32 sims (protocol 2, extended), image %d bytes, latency %s, erase %s, write %s\n",
		len(img), latency, erase, write)
	fmt.Printf("%8s  %22s  %14s  %s\n", "devices", "stop-and-wait loop (s)", "ots-ota (s)", "ratio")
	subnet := 1
	for _, f := range strings.Split(devices, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 253 {
			return fmt.Errorf("bad fleet size %q", f)
		}
		sim := func() (*exec.Cmd, []string, error) {
			base := fmt.Sprintf("127.22.%d.", subnet)
			subnet++
			c := exec.Command(ots, "sim", "-n", strconv.Itoa(n), "--personality", "esphome", "--chip", "esp32", "--no-mdns",
				"--base-ip", base+"2", "--version", "1.0.0", "--fault", "latency:"+latency, "--erase-rate", erase, "--write-rate", write,
				"--duration", "1h")
			c.Dir = dir
			if err := c.Start(); err != nil {
				return nil, nil, err
			}
			var addrs []string
			for i := range n {
				addrs = append(addrs, fmt.Sprintf("%s%d:3232", base, 2+i))
			}
			return c, addrs, waitPorts(addrs)
		}
		stop := func(c *exec.Cmd) {
			_ = c.Process.Signal(syscall.SIGINT)
			_ = c.Wait()
		}

		c, addrs, err := sim()
		if err != nil {
			return err
		}
		start := time.Now()
		for _, a := range addrs {
			if err := stopAndWait(a, img); err != nil {
				stop(c)
				return fmt.Errorf("stop-and-wait client, %s: %w", a, err)
			}
		}
		base := time.Since(start)
		stop(c)

		c, addrs, err = sim()
		if err != nil {
			return err
		}
		args := append([]string{"push", "--protocol", "esphome", "--no-verify", "--parallel", "0", "--json", fw}, addrs...)
		push := exec.Command(ots, args...)
		push.Dir = dir
		var out bytes.Buffer
		push.Stdout, push.Stderr = &out, &out
		start = time.Now()
		err = push.Run()
		took := time.Since(start)
		stop(c)
		if err != nil {
			return fmt.Errorf("ots-ota push: %v\n%s", err, lastLines(out.String(), 5))
		}
		if got := strings.Count(out.String(), "\n"+`{"type":"result"`); got != n || strings.Count(out.String(), `"outcome":"accepted"`) != 2*n {
			return fmt.Errorf("ots-ota push: %d results for %d devices, not all accepted:\n%s", got, n, lastLines(out.String(), 3))
		}
		fmt.Printf("%8d  %22.2f  %14.2f  %.2f\n", n, base.Seconds(), took.Seconds(), base.Seconds()/took.Seconds())
	}
	return nil
}

func waitPorts(addrs []string) error {
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s never listened: %v", a, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// stopAndWait is the baseline client: one device, the handshake ots-ota
// also does (features 07: compression, SHA-256, extended; OTA type 00),
// then the image in 8 KiB blocks, each sent after the 0x47 of the one
// before. The bench's devices have no password.
func stopAndWait(addr string, img []byte) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	r := bufio.NewReader(c)
	expect := func(want byte, step string) error {
		b, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		if b != want {
			return fmt.Errorf("%s: device answered %02X, want %02X", step, b, want)
		}
		return nil
	}
	send := func(b []byte) error { _, err := c.Write(b); return err }

	if err := send([]byte{0x6C, 0x26, 0xF7, 0x5C, 0x45}); err != nil {
		return err
	}
	if err := expect(0x00, "magic"); err != nil {
		return err
	}
	ver, err := r.ReadByte()
	if err != nil {
		return err
	}
	if err := send([]byte{0x07}); err != nil {
		return err
	}
	extended, compress := false, false
	switch b, _ := r.ReadByte(); b {
	case 0x40:
	case 0x46:
		compress = true
	case 0x48:
		flags, err := r.ReadByte()
		if err != nil {
			return err
		}
		extended, compress = true, flags&0x01 != 0
		if flags&0x04 != 0 {
			return errors.New("the device wants Noise")
		}
	default:
		return fmt.Errorf("features: device answered %02X", b)
	}
	if err := expect(0x41, "auth"); err != nil {
		return err
	}
	payload := img
	if compress {
		var b bytes.Buffer
		w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		w.Write(img)
		w.Close()
		payload = b.Bytes()
	}
	if extended {
		if err := send([]byte{0x00}); err != nil {
			return err
		}
	}
	if err := send(binary.BigEndian.AppendUint32(nil, uint32(len(payload)))); err != nil {
		return err
	}
	if err := expect(0x42, "size"); err != nil {
		return err
	}
	sum := md5.Sum(payload)
	if err := send([]byte(hex.EncodeToString(sum[:]))); err != nil {
		return err
	}
	if err := expect(0x43, "md5"); err != nil {
		return err
	}
	for off := 0; off < len(payload); off += 8192 {
		if err := send(payload[off:min(off+8192, len(payload))]); err != nil {
			return err
		}
		if ver == 2 {
			if err := expect(0x47, "data"); err != nil {
				return err
			}
		}
	}
	if err := expect(0x44, "received"); err != nil {
		return err
	}
	if err := expect(0x45, "end"); err != nil {
		return err
	}
	if err := send([]byte{0x00}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
