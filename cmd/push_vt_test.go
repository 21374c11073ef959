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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/ots-ota/ots-ota/sim"
)

// TestFleetViewInTmux runs push with stdout and stderr on a tmux pane, a
// real terminal emulator with a scrollback, and reads back what a person
// would see: while it runs, frames of the view; at the end, the whole
// record, scrollback included. Only the lines printed before push, the
// failure lines printed above the view and the final table may be in it;
// never a line of the view. Some devices fail after a retry, so there are
// failure lines and "try 2/2"; one fails before the run (its inventory
// secret cannot be read). Some runs start mid-screen; some have the
// terminal made smaller mid-run (80×24 to 60×15): then what tmux itself
// pushes into the scrollback as it resizes is measured apart, and the
// redraws after must add no line of the view to it.
func TestFleetViewInTmux(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tmux is not installed: CI must run this test (.ci/run installs tmux)")
		}
		t.Skip("tmux is not installed")
	}
	const newCols, newRows = 60, 15
	for _, c := range []struct {
		cols, rows, devices int
		subnet              byte
		preamble            int  // lines printed before push: the view starts below them
		resize              bool // to newCols×newRows once devices upload
	}{
		{80, 24, 20, 90, 0, false},
		{80, 24, 250, 91, 0, false},
		{120, 15, 20, 92, 0, false},
		{120, 15, 250, 93, 0, false},
		{80, 24, 20, 94, 7, false},
		{120, 15, 250, 95, 5, false},
		{80, 24, 20, 96, 0, true},
		{80, 24, 250, 97, 3, true},
		// A block that still fits once its lines are rewrapped narrower.
		{80, 24, 6, 98, 4, true},
	} {
		name := fmt.Sprintf("%dx%d_%d", c.cols, c.rows, c.devices)
		if c.preamble > 0 {
			name += "_mid-screen"
		}
		if c.resize {
			name += fmt.Sprintf("_resized_to_%dx%d", newCols, newRows)
		}
		t.Run(name, func(t *testing.T) {
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
			// ghost fails before the run: its secret is in no variable.
			cfg := filepath.Join(t.TempDir(), "cfg.yaml")
			if err := os.WriteFile(cfg, []byte("inventory:\n  devices:\n    - {name: ghost, address: 127.0.0.1, port: 9, auth: {env: OTS_TEST_NEVER_SET}}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			// The targets in reverse: target order is then neither the
			// devices' string order nor the order they happen to start in.
			index := map[string]int{} // label → position in target order
			failing := map[string]bool{"ghost": true}
			args := []string{"--config", cfg, "push", "--parallel", fmt.Sprint(max(c.devices/2, 50)), "--stability-window", "200ms", "--inventory-only", fw, "ghost"}
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
			var preamble []string
			for i := range c.preamble {
				preamble = append(preamble, fmt.Sprintf("a line before push, %d of %d", i+1, c.preamble))
				fmt.Fprintln(tty, preamble[i])
			}
			streams := &IOStreams{In: strings.NewReader(""), Out: tty, ErrOut: tty, OutTTY: true, ErrTTY: true}

			var frames []frame
			var rs resizeSeen
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				settled := time.Time{} // frames before are made for the old size, or not redrawn yet
				for {
					select {
					case <-stop:
						return
					case <-time.After(60 * time.Millisecond):
					}
					out, err := p.run("display-message", "-p", "#{pane_width} #{pane_height}", ";", "capture-pane", "-p")
					if err != nil {
						continue
					}
					size, text, _ := strings.Cut(out, "\n")
					f := frame{text: text, settled: time.Now().After(settled)}
					if _, err := fmt.Sscan(size, &f.cols, &f.rows); err != nil {
						continue
					}
					frames = append(frames, f)
					if c.resize && !rs.done && pastCheck.MatchString(strings.Join(viewStatuses(text, index), "\n")) {
						rs = p.resize(t, tty, newCols, newRows)
						settled = time.Now().Add(4 * redrawEvery)
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
			var hEnd int
			for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				out, err := p.run("display-message", "-p", "#{history_size}", ";", "capture-pane", "-p")
				if err != nil {
					t.Fatal(err)
				}
				h, screen, _ := strings.Cut(out, "\n")
				if hEnd, err = strconv.Atoi(h); err != nil {
					t.Fatalf("history size %q", h)
				}
				if strings.Contains(screen, mark) || time.Now().After(end) {
					break
				}
			}
			if code != ExitFailed {
				t.Errorf("exit %d, want %d (some devices fail)", code, ExitFailed)
			}
			if c.resize && !rs.done {
				t.Fatalf("the run ended before it was seen uploading: the terminal was not resized (%d frames)", len(frames))
			}

			// The record, in three parts: the scrollback before the resize;
			// what tmux pushed into it as it resized; the rest (all of it
			// when no resize). History rows are numbered from -hEnd, the
			// oldest, to -1; the resize rewrapped those before it, so the
			// first part is known by its text.
			part := func(from, to int) []string { // history rows [from, to) counted from the oldest; to = -1: to the end
				if from >= to && to >= 0 {
					return nil
				}
				end := "-"
				if to >= 0 {
					end = strconv.Itoa(to - hEnd - 1)
				}
				s, err := p.run("capture-pane", "-p", "-J", "-S", strconv.Itoa(from-hEnd), "-E", end)
				if err != nil {
					t.Fatal(err)
				}
				return nonEmpty(s, mark)
			}
			before, after := rs.before, part(rs.h1, -1)
			pushed := part(0, rs.h1)
			for i, l := range before {
				if i >= len(pushed) || pushed[i] != l && (i < len(before)-1 || !strings.HasPrefix(pushed[i], l)) {
					t.Fatalf("the scrollback before the resize changed:\n%s\nnow begins:\n%s", strings.Join(before, "\n"), strings.Join(pushed, "\n"))
				}
			}
			pushed = pushed[len(before):]
			if c.resize {
				t.Logf("the resize pushed %d rows (of %d columns) into the scrollback: %d lines, rejoined; the cursor was on row %d of %d",
					rs.h1-rs.h0, newCols, len(pushed), rs.cursorY, c.rows)
			}
			seen := map[string]bool{}
			var pre []string
			// kind is what a line of the record is: a line printed before
			// push, a failure line, or neither ("").
			kind := func(l string) string {
				for _, p := range preamble {
					if l == p {
						pre = append(pre, l)
						return "preamble"
					}
				}
				label, _, _ := strings.Cut(l, ": ")
				if !failing[label] || !strings.HasPrefix(l, label+": failed: ") {
					return ""
				}
				if seen[label] {
					t.Errorf("failure line printed twice: %q", l)
				}
				seen[label] = true
				return "failure"
			}
			for _, l := range before {
				if kind(l) == "" {
					t.Errorf("the scrollback before the resize holds a line that is neither printed before push nor a failure line: %q", l)
				}
			}
			for _, l := range pushed {
				kind(l) // the view's lines on the screen as tmux resized are its own doing
			}
			header := -1
			for i, l := range after {
				if strings.HasPrefix(l, "DEVICE ") {
					header = i
					break
				}
				if kind(l) == "" {
					t.Errorf("the record holds a line that is neither printed before push nor a failure line: %q", l)
				}
			}
			if header < 0 {
				t.Fatalf("no table in the record:\n%s", strings.Join(after, "\n"))
			}
			if strings.Join(pre, "\n") != strings.Join(preamble, "\n") {
				t.Errorf("the lines printed before push are, in the record:\n%s\nwant:\n%s", strings.Join(pre, "\n"), strings.Join(preamble, "\n"))
			}
			for label, f := range failing {
				if f && !seen[label] {
					t.Errorf("no failure line for %s", label)
				}
			}
			cols := c.cols
			if c.resize {
				cols = newCols
			}
			rows := 0
			for _, l := range after[header:] {
				if n := utf8.RuneCountInString(l); n >= cols {
					t.Errorf("table line of %d columns on a terminal of %d: %q", n, cols, l)
				}
				if _, ok := index[strings.Fields(l)[0]]; ok {
					rows++
				}
			}
			if rows != c.devices {
				t.Errorf("table has %d device rows, want %d:\n%s", rows, c.devices, strings.Join(after[header:], "\n"))
			}

			checkFrames(t, frames, index)
			if t.Failed() {
				t.Logf("record:\n%s\n--- pushed by the resize:\n%s\n--- after:\n%s", strings.Join(before, "\n"), strings.Join(pushed, "\n"), strings.Join(after, "\n"))
			}
		})
	}
}

// nonEmpty is the lines of a capture but empty ones and the end mark.
func nonEmpty(s, mark string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, " "); l != "" && l != mark {
			lines = append(lines, l)
		}
	}
	return lines
}

// resizeSeen is what the test saw as it resized the pane.
type resizeSeen struct {
	done    bool
	h0, h1  int      // the scrollback's rows just before and just after
	before  []string // the scrollback just before, rejoined
	cursorY int      // the cursor's row just before
}

// resize makes the pane cols×rows between two frames of the view. With
// the view held (redrawHold) and once tmux has read all it was sent (a
// title set last has arrived), one tmux command reads the scrollback,
// resizes and reads its size again, so that nothing is drawn in between;
// the view draws again once the terminal tells its new size.
func (p *tmuxPane) resize(t *testing.T, tty *os.File, cols, rows int) resizeSeen {
	redrawHold.Lock()
	defer redrawHold.Unlock()
	fmt.Fprint(tty, "\x1b]2;resize\x07")
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if s, err := p.run("display-message", "-p", "#{pane_title}"); err == nil && strings.TrimSpace(s) == "resize" {
			break
		}
		if time.Now().After(end) {
			t.Error("tmux did not read what was written to it")
			return resizeSeen{}
		}
	}
	out, err := p.run("display-message", "-p", "#{history_size} #{cursor_y}", ";", "capture-pane", "-p", "-J", "-S", "-", "-E", "-1",
		";", "resize-window", "-x", strconv.Itoa(cols), "-y", strconv.Itoa(rows), ";", "display-message", "-p", "#{history_size}")
	if err != nil {
		t.Errorf("resizing: %v", err)
		return resizeSeen{}
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	rs := resizeSeen{done: true}
	if _, err := fmt.Sscan(lines[0], &rs.h0, &rs.cursorY); err != nil {
		t.Errorf("resizing: %q", out)
	}
	if rs.h1, err = strconv.Atoi(lines[len(lines)-1]); err != nil {
		t.Errorf("resizing: %q", out)
	}
	if rs.h0 > 0 { // else the capture is of the screen's first row
		rs.before = nonEmpty(strings.Join(lines[1:len(lines)-1], "\n"), "")
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if c, r, err := term.GetSize(int(tty.Fd())); err == nil && c == cols && r == rows {
			break
		}
		if time.Now().After(end) {
			t.Error("the terminal does not tell its new size")
			break
		}
	}
	return rs
}

// frame is the pane's screen as captured while push ran.
type frame struct {
	cols, rows int
	text       string
	settled    bool // drawn for the pane's size: not just after a resize
}

// viewStatuses is the statuses of the device lines in a frame.
func viewStatuses(text string, index map[string]int) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if _, st, ok := viewDeviceLine(l, index); ok {
			out = append(out, st)
		}
	}
	return out
}

// viewDeviceLine is a line of the view's device: its position in target
// order and its status (what follows the label and the bar, if any).
func viewDeviceLine(l string, index map[string]int) (int, string, bool) {
	label, rest, _ := strings.Cut(l, " ")
	i, ok := index[label]
	rest = strings.TrimLeft(rest, " ")
	if strings.HasPrefix(rest, "[") {
		_, rest, _ = strings.Cut(rest, "] ")
	}
	return i, rest, ok
}

var (
	overallRE = regexp.MustCompile(`^\d+/\d+ devices`)
	moreRE    = regexp.MustCompile(`^\+\d+ more`)
	etaRE     = regexp.MustCompile(`ETA ([0-9hms.]+)`)
	tryRE     = regexp.MustCompile(`  try 2/2: `) // the sim's error fault is "Write failed": retried once
	pastCheck = regexp.MustCompile(`(?m)^(connecting|authenticating|erasing|uploading|finishing|rebooting|verifying|retrying)`)
)

// checkFrames checks the frames seen while push ran: devices in target
// order, "try 2/2: why" on a retrying device, no line of the view reaching
// the last column, no queued device shown as checking, and for the compact
// view (whenever a frame has its overall line) a block at most a line
// shorter than the terminal from the overall line to its last line,
// "+k more" and no absurd ETA.
func checkFrames(t *testing.T, frames []frame, index map[string]int) {
	t.Helper()
	var sawTry, sawMore, sawOverall bool
	for _, f := range frames {
		if !f.settled {
			continue
		}
		lines := strings.Split(strings.TrimRight(f.text, "\n "), "\n")
		top, last := -1, -1 // the overall line, the block's last line
		type devLine struct {
			i    int
			text string
		}
		var devs []devLine
		for n, l := range lines {
			l = strings.TrimRight(l, " ")
			view := false
			switch i, status, ok := viewDeviceLine(l, index); {
			case overallRE.MatchString(l):
				top, view, sawOverall = n, true, true
				if m := etaRE.FindStringSubmatch(l); m != nil {
					if d, err := time.ParseDuration(m[1]); err != nil || d > 5*time.Minute {
						t.Errorf("absurd ETA in %q", l)
					}
				}
			case moreRE.MatchString(l):
				view, sawMore = true, true
			case ok:
				view = true
				devs = append(devs, devLine{i, status})
				sawTry = sawTry || tryRE.MatchString(l)
			}
			if !view {
				continue
			}
			last = n
			if w := utf8.RuneCountInString(l); w >= f.cols {
				t.Errorf("a line of the view %d columns wide on a terminal of %d: %q", w, f.cols, l)
			}
		}
		compact := top >= 0
		if compact && last-top+1 > f.rows-1 {
			t.Errorf("the view has %d lines on a terminal of %d rows:\n%s", last-top+1, f.rows, f.text)
		}
		past := false
		for k, d := range devs {
			if k > 0 && d.i < devs[k-1].i {
				t.Errorf("devices not in target order:\n%s", f.text)
				break
			}
			past = past || pastCheck.MatchString(d.text)
		}
		for _, d := range devs {
			if past && strings.HasPrefix(d.text, "checking") {
				t.Errorf("a device shown as checking once uploads began (it is queued):\n%s", f.text)
				break
			}
		}
	}
	if !sawTry {
		t.Errorf("no frame shows a retrying device's \"try 2/2: why\" (%d frames)", len(frames))
	}
	if len(index) > 24 && (!sawMore || !sawOverall) {
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
		if os.Getenv("CI") != "" {
			t.Fatalf("tmux does not start: %v: %s", err, out)
		}
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
