//go:build !windows

package cmd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ots-ota/ots-ota/image"
)

// started is a running ots-ota whose stdout is read line by line.
type started struct {
	cmd    *exec.Cmd
	lines  chan string // stdout, closed at EOF
	stderr *bytes.Buffer
	// json: the run asked for --json; wait checks all it printed (out)
	// against the contract, as the scripts' runs are.
	json bool
	out  []string
}

func startOts(t *testing.T, dir string, args ...string) *started {
	t.Helper()
	c := exec.Command(otsBinary(t), args...)
	c.Dir = dir
	c.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "NO_COLOR=1")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	s := &started{cmd: c, lines: make(chan string, 1024), stderr: &stderr, json: jsonWanted(args)}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		if c.ProcessState == nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	return s
}

// waitLines reads stdout until n lines containing want went by.
func (s *started) waitLines(t *testing.T, want string, n int) []string {
	t.Helper()
	var seen []string
	for line := range s.lines {
		seen = append(seen, line)
		s.out = append(s.out, line)
		if strings.Contains(line, want) {
			if n--; n == 0 {
				return seen
			}
		}
	}
	t.Fatalf("stdout ended before %d more lines with %q; stderr:\n%s", n, want, s.stderr)
	return nil
}

// wait reads the rest of stdout and returns it with the exit code. A
// --json run's whole output is checked against the contract.
func (s *started) wait(t *testing.T) ([]string, int) {
	t.Helper()
	var rest []string
	for line := range s.lines {
		rest = append(rest, line)
	}
	s.out = append(s.out, rest...)
	err := s.cmd.Wait()
	var ee *exec.ExitError
	code := -1
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		code = ee.ExitCode()
	default:
		t.Fatalf("ots-ota did not exit normally: %v; stderr:\n%s", err, s.stderr)
	}
	if s.json {
		requireJSONRun(t, []byte(strings.Join(s.out, "\n")+"\n"), code)
	}
	return rest, code
}

// TestSignalInspect: SIGINT or SIGTERM during a long multi-file inspect stops
// it between files with exit 130, not after all of them with 0.
func TestSignalInspect(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			data, err := image.Build(image.BuildOptions{Chip: image.ChipESP32S3, Project: "p", Version: "1", Size: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "f.bin"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			const files = 20000 // minutes of work: the signal must cut it short
			args := []string{"inspect", "--json"}
			for range files {
				args = append(args, "f.bin")
			}
			p := startOts(t, dir, args...)
			first := p.waitLines(t, `"file":"f.bin"`, 1)
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			rest, code := p.wait(t)
			if code != ExitCancelled {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitCancelled, p.stderr)
			}
			if n := len(first) + len(rest); n >= files {
				t.Errorf("all %d files inspected despite the signal", n)
			}
			if got := p.stderr.String(); got != "ots-ota: error: interrupted\n" {
				t.Errorf("stderr = %q, want one line saying interrupted", got)
			}
		})
	}
}

// TestSignalSim: Ctrl-C is sim's normal stop: every device reports stopped,
// the exit code is 0, no warnings, and the ports are free again.
func TestSignalSim(t *testing.T) {
	if !loopback127() {
		t.Skip("needs 127.0.0.x loopback addresses (Linux)")
	}
	for i, pers := range []string{"seed", "arduino"} {
		t.Run(pers, func(t *testing.T) {
			base := []string{"127.0.9.50", "127.0.9.60"}[i]
			args := []string{"sim", "-n", "3", "--personality", pers, "--base-ip", base, "--ota-port", "13250", "--no-mdns", "--json"}
			if pers == "seed" {
				args = append(args, "--web-port", "18250")
			}
			p := startOts(t, t.TempDir(), args...)
			p.waitLines(t, `"event":"ready"`, 3)
			if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			rest, code := p.wait(t)
			if code != 0 {
				t.Errorf("exit %d, want 0; stderr:\n%s", code, p.stderr)
			}
			if n := strings.Count(strings.Join(rest, "\n"), `"event":"stopped"`); n != 3 {
				t.Errorf("%d stopped events, want 3:\n%s", n, strings.Join(rest, "\n"))
			}
			if s := p.stderr.String(); s != "" {
				t.Errorf("stderr on a normal stop: %q", s)
			}
			// Nothing left running: the addresses can be bound again.
			network := "tcp"
			if pers == "arduino" {
				network = "udp"
			}
			ip := net.ParseIP(base).To4()
			for d := range 3 {
				addr := net.IPv4(ip[0], ip[1], ip[2], ip[3]+byte(d)).String() + ":13250"
				var err error
				if network == "tcp" {
					var ln net.Listener
					if ln, err = net.Listen("tcp", addr); err == nil {
						ln.Close()
					}
				} else {
					var pc net.PacketConn
					if pc, err = net.ListenPacket("udp", addr); err == nil {
						pc.Close()
					}
				}
				if err != nil {
					t.Errorf("after the stop, %s %s is still taken: %v", network, addr, err)
				}
			}
		})
	}
}

// TestOpenFileLimit: a fleet larger than the open-file limit allows is
// refused before any socket is opened; a fleet that fits starts.
func TestOpenFileLimit(t *testing.T) {
	if !loopback127() {
		t.Skip("needs 127.0.0.x loopback addresses (Linux)")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("needs sh")
	}
	bin := otsBinary(t)
	run := func(n string) (string, int) {
		c := exec.Command(sh, "-c", `ulimit -n 256 && exec "$0" "$@"`, bin, "sim", "-n", n, "--base-ip", "127.0.10.2",
			"--ota-port", "13260", "--web-port", "18260", "--no-mdns", "--duration", "100ms")
		c.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
		out, err := c.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := run("1000")
	if code != ExitUsage || !strings.Contains(out, "--devices 1000: needs about 2064 open files, but this process may open 256") ||
		!strings.Contains(out, "ulimit -n") {
		t.Errorf("1000 devices under ulimit -n 256: exit %d:\n%s", code, out)
	}
	if out, code := run("40"); code != 0 {
		t.Errorf("40 devices under ulimit -n 256: exit %d:\n%s", code, out)
	}
}
