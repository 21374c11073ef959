//go:build linux

package cmd

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ots-ota/ots-ota/sim"
)

// TestFleetViewInTmux runs push with stdout and stderr on a tmux pane, a
// real terminal emulator with a scrollback, and reads back what a person
// would see: while it runs, frames of the view; at the end, the whole
// record, scrollback included. Only the failure lines printed above the
// view and the final table may be in it; never a line of the view. Some
// devices fail after a retry, so there are failure lines and "try 2/2".
func TestFleetViewInTmux(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux is not installed")
	}
	for _, c := range []struct {
		cols, rows, devices int
		subnet              byte
	}{
		{80, 24, 20, 90},
		{80, 24, 250, 91},
		{120, 15, 20, 92},
		{120, 15, 250, 93},
	} {
		t.Run(fmt.Sprintf("%dx%d_%d", c.cols, c.rows, c.devices), func(t *testing.T) {
			t.Parallel()
			fails := func(i int) bool { return i%25 == 4 || i%25 == 13 }
			tm := sim.FastTiming()
			tm.WriteRate = 4 << 20
			fault, err := sim.ParseFault("error@30%")
			if err != nil {
				t.Fatal(err)
			}
			fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{N: c.devices, BaseIP: netip.AddrFrom4([4]byte{127, 0, c.subnet, 2}),
				WebPort: 18080, Parallel: 64, Template: sim.Config{Timing: &tm, Extensions: true, Project: "ots-fw-main"},
				Configure: func(i int, cfg *sim.Config) {
					if fails(i) {
						cfg.Faults = []sim.Fault{fault}
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			fw := writeTestFirmwareSize(t, "1.0.1", 100_000)
			// The targets in reverse: target order is then neither the
			// devices' string order nor the order they happen to start in.
			index := map[string]int{} // label → position in target order
			failing := map[string]bool{}
			args := []string{"push", "--parallel", fmt.Sprint(max(c.devices/2, 50)), "--stability-window", "200ms", fw}
			devs := fl.Devices()
			for i := len(devs) - 1; i >= 0; i-- {
				label := devs[i].IP().String()
				index[label] = len(index)
				failing[label] = fails(i)
				args = append(args, devs[i].IP().String())
			}

			p := startTmux(t, tmux, c.cols, c.rows)
			tty, err := os.OpenFile(p.tty, os.O_RDWR|syscall.O_NOCTTY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer tty.Close()
			streams := &IOStreams{In: strings.NewReader(""), Out: tty, ErrOut: tty, OutTTY: true, ErrTTY: true}

			var frames []string
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(60 * time.Millisecond):
					}
					if s, err := p.run("capture-pane", "-p"); err == nil {
						frames = append(frames, s)
					}
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			code := Execute(ctx, args, streams)
			close(stop)
			wg.Wait()
			const mark = "=== end of run ==="
			fmt.Fprintln(tty, mark)
			var record string
			for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				record, err = p.run("capture-pane", "-p", "-J", "-S", "-", "-E", "-")
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(record, mark) || time.Now().After(end) {
					break
				}
			}
			if code != ExitFailed {
				t.Errorf("exit %d, want %d (some devices fail)", code, ExitFailed)
			}

			// The record: the failure lines, then the table; nothing else.
			var lines []string
			for _, l := range strings.Split(record, "\n") {
				if l = strings.TrimRight(l, " "); l != "" && l != mark {
					lines = append(lines, l)
				}
			}
			header := -1
			for i, l := range lines {
				if strings.HasPrefix(l, "DEVICE ") {
					header = i
					break
				}
			}
			if header < 0 {
				t.Fatalf("no table in the record:\n%s", record)
			}
			seen := map[string]bool{}
			for _, l := range lines[:header] {
				label, _, _ := strings.Cut(l, ": ")
				switch {
				case !failing[label] || !strings.HasPrefix(l, label+": failed: "):
					t.Errorf("the record holds a line that is not a failure line: %q", l)
				case seen[label]:
					t.Errorf("failure line printed twice: %q", l)
				}
				seen[label] = true
			}
			for label, f := range failing {
				if f && !seen[label] {
					t.Errorf("no failure line for %s", label)
				}
			}
			rows := 0
			for _, l := range lines[header:] {
				if n := utf8.RuneCountInString(l); n > c.cols {
					t.Errorf("table line of %d columns on a terminal of %d: %q", n, c.cols, l)
				}
				if _, ok := index[strings.Fields(l)[0]]; ok {
					rows++
				}
			}
			if rows != c.devices {
				t.Errorf("table has %d device rows, want %d:\n%s", rows, c.devices, strings.Join(lines[header:], "\n"))
			}

			checkFrames(t, frames, index, c.rows, c.devices > c.rows-4)
			if t.Failed() {
				t.Logf("record:\n%s", record)
			}
		})
	}
}

var (
	overallRE = regexp.MustCompile(`^\d+/\d+ devices`)
	moreRE    = regexp.MustCompile(`^\+\d+ more`)
	etaRE     = regexp.MustCompile(`ETA ([0-9hms.]+)`)
	tryRE     = regexp.MustCompile(`  try 2/2: `) // the sim's error fault is "Write failed": retried once
	pastCheck = regexp.MustCompile(`^(connecting|authenticating|erasing|uploading|finishing|rebooting|verifying|retrying)`)
)

// checkFrames checks the frames seen while push ran: devices in target
// order, "try 2/2: why" on a retrying device, and for the compact view a
// block that fits the terminal, "+k more", no queued device shown as
// checking and no absurd ETA.
func checkFrames(t *testing.T, frames []string, index map[string]int, rows int, compact bool) {
	t.Helper()
	var sawTry, sawMore, sawOverall bool
	for _, f := range frames {
		lines := strings.Split(strings.TrimRight(f, "\n "), "\n")
		top := -1
		type devLine struct {
			i    int
			text string
		}
		var devs []devLine
		for n, l := range lines {
			l = strings.TrimRight(l, " ")
			if overallRE.MatchString(l) {
				top = n
				sawOverall = true
				if m := etaRE.FindStringSubmatch(l); m != nil {
					if d, err := time.ParseDuration(m[1]); err != nil || d > 5*time.Minute {
						t.Errorf("absurd ETA in %q", l)
					}
				}
				continue
			}
			if moreRE.MatchString(l) {
				sawMore = true
			}
			label, rest, _ := strings.Cut(l, " ")
			i, ok := index[label]
			if !ok || top < 0 && compact {
				continue // a failure line above the view, or no device
			}
			devs = append(devs, devLine{i, strings.TrimLeft(rest, " ")})
			sawTry = sawTry || tryRE.MatchString(l)
		}
		if compact && top >= 0 && len(lines)-top > rows-1 {
			t.Errorf("the view has %d lines on a terminal of %d rows:\n%s", len(lines)-top, rows, f)
		}
		past := false
		for k, d := range devs {
			if k > 0 && d.i < devs[k-1].i {
				t.Errorf("devices not in target order:\n%s", f)
				break
			}
			past = past || pastCheck.MatchString(d.text)
		}
		for _, d := range devs {
			if past && compact && strings.HasPrefix(d.text, "checking") {
				t.Errorf("a device shown as checking once uploads began (it is queued):\n%s", f)
				break
			}
		}
	}
	if !sawTry {
		t.Errorf("no frame shows a retrying device's \"try 2/2: why\" (%d frames)", len(frames))
	}
	if compact && (!sawMore || !sawOverall) {
		t.Errorf("no frame shows the overall bar and \"+k more\" (%d frames)", len(frames))
	}
}

// tmuxPane is a detached tmux session on a private socket.
type tmuxPane struct {
	bin, sock, tty string
}

func (p *tmuxPane) run(args ...string) (string, error) {
	out, err := exec.Command(p.bin, append([]string{"-S", p.sock}, args...)...).Output()
	return string(out), err
}

// startTmux starts a cols×rows pane running sleep, whose terminal the test
// writes to; the server ends with the test.
func startTmux(t *testing.T, bin string, cols, rows int) *tmuxPane {
	t.Helper()
	dir, err := os.MkdirTemp("", "vt") // short: a socket path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g history-limit 50000\nset -g status off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &tmuxPane{bin: bin, sock: filepath.Join(dir, "s")}
	cmd := exec.Command(bin, "-S", p.sock, "-f", conf, "new-session", "-d", "-x", fmt.Sprint(cols), "-y", fmt.Sprint(rows), "sleep 600")
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "TMUX=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("tmux does not start: %v: %s", err, out)
	}
	t.Cleanup(func() { _, _ = p.run("kill-server") })
	s, err := p.run("display-message", "-p", "#{pane_tty} #{pane_width}x#{pane_height}")
	if err != nil {
		t.Fatal(err)
	}
	var size string
	if _, err := fmt.Sscan(s, &p.tty, &size); err != nil || size != fmt.Sprintf("%dx%d", cols, rows) {
		t.Fatalf("tmux pane %q, want %dx%d", s, cols, rows)
	}
	return p
}
