//go:build linux

package cmd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/ots-ota/ots-ota/sim"
	"github.com/ots-ota/ots-ota/upload"
)

// TestPushOnTerminal runs push with stderr on a real pseudo-terminal: bars
// (one per device, or one overall bar when the devices outnumber the
// terminal's lines), never the line-per-phase output, and the summary on
// stdout.
func TestPushOnTerminal(t *testing.T) {
	for _, c := range []struct {
		name     string
		devices  int
		rows     uint16
		subnet   byte
		overview bool
		cols     uint16 // 0 = 120
		lines    bool   // lines, not bars: a terminal of width 0, or dumb
		dumb     bool   // TERM=dumb
	}{
		{"bar per device", 2, 40, 70, false, 0, false, false},
		{"overall bar", 6, 6, 71, true, 0, false, false},
		{"unsized terminal", 2, 0, 13, false, 0, true, false},
		{"dumb terminal", 2, 40, 14, false, 0, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tm := sim.FastTiming()
			tm.WriteRate = 2 << 20
			fl, err := sim.StartFleet(context.Background(), sim.FleetConfig{N: c.devices, BaseIP: netip.AddrFrom4([4]byte{127, 0, c.subnet, 2}),
				WebPort: 18080, Template: sim.Config{Timing: &tm, Extensions: true, Project: "ots-fw-main"}})
			if err != nil {
				t.Fatal(err)
			}
			defer fl.Close()
			fw := writeTestFirmware(t, "1.0.1")

			ptm, tty, err := pty.Open()
			if err != nil {
				t.Skipf("no pty: %v", err)
			}
			defer ptm.Close()
			cols := c.cols
			if cols == 0 && (!c.lines || c.dumb) {
				cols = 120
			}
			if err := pty.Setsize(tty, &pty.Winsize{Rows: c.rows, Cols: cols}); err != nil {
				t.Fatal(err)
			}
			var screen syncBuffer
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(&screen, ptm)
			}()
			var out bytes.Buffer
			streams := &IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: tty, ErrTTY: term.IsTerminal(int(tty.Fd())), DumbTerm: c.dumb}
			if !streams.ErrTTY {
				t.Fatal("the pty is not a terminal")
			}
			args := []string{"push", "--stability-window", "200ms", fw}
			for _, d := range fl.Devices() {
				args = append(args, d.IP().String())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			code := Execute(ctx, args, streams)
			// Closing the terminal may drop what the reader has not taken
			// yet: wait for a mark written after the run.
			const mark = "=== end of run ==="
			fmt.Fprintln(tty, mark)
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && !strings.Contains(screen.String(), mark); {
				time.Sleep(20 * time.Millisecond)
			}
			tty.Close()
			wg.Wait()
			if code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nterminal:\n%q", code, out.String(), screen.String())
			}
			s := screen.String()
			if c.lines {
				if !strings.Contains(s, ": checking ") || !strings.Contains(s, ": updated: ") || strings.Contains(s, "\x1b[") {
					t.Errorf("no line-per-phase output, or escapes, on an unsized or dumb terminal: %q", s)
				}
				return
			}
			if !strings.Contains(s, "\x1b[") {
				t.Errorf("no cursor control on the terminal: %q", s)
			}
			if strings.Contains(s, ": checking ") || strings.Contains(s, ": rebooting\n") {
				t.Errorf("line-per-phase output on a terminal: %q", s)
			}
			if c.overview {
				if !strings.Contains(s, "/6 devices") {
					t.Errorf("no overall bar: %q", s)
				}
			} else if !strings.Contains(s, fl.Devices()[0].IP().String()+" [") {
				t.Errorf("no per-device bar: %q", s)
			}
			if !strings.Contains(out.String(), "DEVICE") || strings.Count(out.String(), " updated ") != c.devices {
				t.Errorf("summary:\n%s", out.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFleetViewRedrawAfterShrink: once the terminal is made smaller (80×24
// to 60×15) the view moves up at most to the top row and writes no newline
// past its block's last line (a newline on the last row scrolls the view
// into the scrollback), nor any when it erases itself at the end.
func TestFleetViewRedrawAfterShrink(t *testing.T) {
	ptm, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptm.Close()
	defer tty.Close()
	if err := pty.Setsize(tty, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	var screen syncBuffer
	go func() { _, _ = io.Copy(&screen, ptm) }()
	var names []string
	for i := range 250 {
		names = append(names, fmt.Sprintf("greenhouse-%03d", i))
	}
	r := newViewRun(names...)
	r.v.f = tty
	for i, n := range names {
		r.ev(n, upload.PhaseChecking, 0, 0, "")
		if i%3 == 0 {
			r.ev(n, upload.PhaseUploading, 1, 400, "")
		}
	}
	// frame draws one frame and returns what reached the terminal.
	n := 0
	frame := func(last bool) string {
		n++
		r.v.draw(last)
		mark := fmt.Sprintf("\x1b]2;frame %d\x07", n)
		fmt.Fprint(tty, mark)
		for end := time.Now().Add(10 * time.Second); !strings.Contains(screen.String(), mark); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("frame %d did not arrive", n)
			}
		}
		s := screen.String()
		s = s[:strings.Index(s, mark)]
		if i := strings.LastIndex(s, "\x07"); i >= 0 {
			s = s[i+1:]
		}
		return s
	}
	first := frame(false)
	if got := strings.Count(first, "\n"); got != 23 {
		t.Fatalf("first frame: %d lines, want 23 on a terminal of 24 rows: %q", got, first)
	}
	if err := pty.Setsize(tty, &pty.Winsize{Rows: 15, Cols: 60}); err != nil {
		t.Fatal(err)
	}
	for _, last := range []bool{false, true} {
		f := frame(last)
		want := 14 // a block of 14 lines below the cursor's row
		if last {
			want = 0
		}
		if !strings.HasPrefix(f, "\r\x1b[14A") {
			t.Errorf("frame after the shrink (last %v) does not begin by moving up 14 rows: %q", last, f)
		}
		if got := strings.Count(f, "\n"); got != want {
			t.Errorf("frame after the shrink (last %v) writes %d newlines, want %d: %q", last, got, want, f)
		}
	}
}
