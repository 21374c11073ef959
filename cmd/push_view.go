package cmd

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-runewidth"
	"golang.org/x/term"

	"github.com/ots-ota/ots-ota/auth"
	"github.com/ots-ota/ots-ota/upload"
)

// fleetView is push's progress on a terminal: one block of lines at the
// cursor, redrawn in place every redrawEvery. With room for every
// device, it is a line per device; otherwise the overall bar, then the
// devices at work. Devices are always in target order. Failed devices are
// printed above the block, one line each: they are all that enters the
// scrollback. The block is erased at the end; the summary table follows.
//
// The block never scrolls: it is at most the terminal's height less one
// line (the cursor's, below it) and no line of it reaches the last column,
// so no line wraps and moving the cursor up by the lines drawn lands on
// the block's first line. The size is read again at each redraw. After
// the terminal was made smaller, the cursor moves up at most to the top
// row (a shorter terminal has pushed the block's top away, or cut it), by
// the rows the old lines take once rewrapped to a narrower width (as most
// terminals do), and nothing below the block is written with a newline.
type fleetView struct {
	f        *os.File // the terminal, for its size
	size     int64    // the image's
	maxTries int      // --retries + 1: a retry's when its event tells none

	mu    sync.Mutex
	devs  []*viewDev     // in target order
	index map[string]int // redacted address → position in devs
	above []string       // failure lines not printed yet
	drawn []int          // the widths of the block's lines on the screen
	// updating: some device is past its check. The runner checks every
	// device before it sends to any, so a device still at "checking" then
	// waits for its turn (queued).
	updating    bool
	maxInFlight int           // most devices seen uploading or verifying at once
	took        time.Duration // summed times of the devices that ended after starting
	tookN       int

	stop, stopped chan struct{}
}

type viewDev struct {
	label   string
	phase   upload.Phase
	try     int       // the try the last event belongs to
	why     string    // the last failed try's message
	max     int       // the most tries its last failure's class allows; 0 = not told
	taken   int64     // bytes the device took in this try (the last, once ended)
	first   time.Time // the try's first byte
	rate    float64
	start   time.Time // the first step past the check
	ended   bool
	bad     bool
	kind    upload.Outcome
	outcome string
	message string
}

const redrawEvery = 100 * time.Millisecond

// newFleetView starts drawing on f a run over targets (merged, in the
// runner's order) of an image of size bytes.
func newFleetView(f *os.File, size int64, targets []upload.Target, maxTries int, red *auth.Redactor) *fleetView {
	v := makeFleetView(size, targets, maxTries, red)
	v.f = f
	go v.loop()
	return v
}

func makeFleetView(size int64, targets []upload.Target, maxTries int, red *auth.Redactor) *fleetView {
	v := &fleetView{size: max(size, 1), maxTries: maxTries, index: map[string]int{},
		stop: make(chan struct{}), stopped: make(chan struct{})}
	for i, t := range targets {
		// The runner's label for a target, but for the suffix it gives a
		// repeated name: its first event tells the exact one. Events
		// arrive redacted, so the addresses are keyed redacted too.
		label := t.Name
		if label == "" {
			label = t.Addr()
		}
		v.devs = append(v.devs, &viewDev{label: oneLine(red.Redact(label))})
		v.index[red.Redact(t.Addr())] = i
	}
	return v
}

func (v *fleetView) loop() {
	defer close(v.stopped)
	t := time.NewTicker(redrawEvery)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
			v.draw(false)
		}
	}
}

// close erases the block and prints the failure lines not printed yet.
func (v *fleetView) close() {
	close(v.stop)
	<-v.stopped
	v.draw(true)
}

// failedBefore prints line above the view at the next redraw: a device
// that ended before the run.
func (v *fleetView) failedBefore(line string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.above = append(v.above, line)
}

// event records e (redacted) for the next redraw.
func (v *fleetView) event(e upload.FleetEvent) {
	v.mu.Lock()
	defer v.mu.Unlock()
	key := e.Addr
	if e.Key != "" {
		// The address the device began with: detection may move Addr to
		// a web uploader's web port.
		key = e.Key
	}
	i, ok := v.index[key]
	if !ok {
		i = len(v.devs)
		v.index[key] = i
		v.devs = append(v.devs, &viewDev{})
	}
	d := v.devs[i]
	d.label = oneLine(e.Target)
	if e.Try > 0 {
		d.try = e.Try
	}
	switch e.Phase {
	case "":
	case upload.PhaseDone:
		if e.Result == nil || d.ended {
			break
		}
		d.ended, d.bad, d.kind = true, e.Result.Outcome.Bad(), e.Result.Outcome
		d.outcome, d.message = e.Result.OutcomeText(), oneLine(e.Result.Message)
		// The result's count of the last try, where the progress events
		// may have stopped short of the last byte.
		if b := e.Result.Bytes; b != nil {
			d.taken = max(d.taken, *b)
		}
		if !d.start.IsZero() {
			v.took += e.Time.Sub(d.start)
			v.tookN++
		}
		if d.bad {
			v.above = append(v.above, endedLine(d.label, *e.Result))
		}
	default:
		if e.Phase != upload.PhaseChecking && d.start.IsZero() {
			d.start, v.updating = e.Time, true
			n := 0
			for _, o := range v.devs {
				if !o.start.IsZero() && !o.ended {
					n++
				}
			}
			v.maxInFlight = max(v.maxInFlight, n)
		}
		if e.Phase == upload.PhaseConnecting || e.Phase == upload.PhaseRetrying {
			d.taken, d.first, d.rate = 0, time.Time{}, 0
		}
		if e.Phase == upload.PhaseRetrying {
			d.why, d.max = oneLine(strings.TrimPrefix(e.Message, "retrying: ")), e.MaxTries
		}
		d.phase = e.Phase
	}
	if e.Done > 0 && e.Phase != upload.PhaseDone {
		if d.first.IsZero() {
			d.first = e.Time
		} else if el := e.Time.Sub(d.first).Seconds(); el > 0 {
			d.rate = float64(e.Done) / el
		}
		d.taken = e.Done
	}
}

// redrawHold is held by tests while they resize the terminal, so that no
// frame made for the old size reaches the terminal after it changed.
var redrawHold sync.RWMutex

// draw writes one frame: up to the block's first line, the failure lines
// due, the block (none when last), then blanks over the rows the last
// frame used and this one does not. Only lines are erased, never the
// screen: some terminals (tmux) push a screen erased from its top into
// the scrollback.
func (v *fleetView) draw(last bool) {
	redrawHold.RLock()
	defer redrawHold.RUnlock()
	cols, rows := terminalSize(v.f)
	v.mu.Lock()
	var b bytes.Buffer
	up := min(rowsOf(v.drawn, cols), rows-1) // rows from the block's first line to the cursor
	if up > 0 {
		fmt.Fprintf(&b, "\r\x1b[%dA", up)
	}
	used := 0 // rows written
	for _, l := range v.above {
		// A failure line is printed whole and may wrap.
		n := rowsOf([]int{runewidth.StringWidth(l)}, cols)
		eraseRows(&b, n)
		b.WriteString(l + "\n")
		used += n
	}
	v.above = nil
	var lines []string
	if !last {
		lines = v.block(time.Now(), cols-1, rows-1)
	}
	for _, l := range lines {
		eraseRows(&b, 1)
		b.WriteString(l + "\n")
	}
	used += len(lines)
	if left := up - used; left > 0 {
		eraseRows(&b, left)
	}
	v.drawn = v.drawn[:0]
	for _, l := range lines {
		v.drawn = append(v.drawn, runewidth.StringWidth(l))
	}
	v.mu.Unlock()
	_, _ = b.WriteTo(v.f)
}

// eraseRows erases n rows from the cursor's down, and leaves the cursor
// where it was. A row is erased whole before it is written: a terminal
// that rewrapped it (tmux) keeps it marked as continued on the next row
// until then, and would join it to the next line when it rewraps again.
// Never a newline, which scrolls on the last row: the cursor moves down,
// which stops there (rows past it come in blank as the text scrolls).
func eraseRows(b *bytes.Buffer, n int) {
	if n == 1 {
		b.WriteString("\x1b[2K")
		return
	}
	b.WriteString("\x1b7\x1b[2K" + strings.Repeat("\x1b[B\x1b[2K", n-1) + "\x1b8")
}

// rowsOf is the rows lines of these widths take on a terminal cols wide:
// one each as drawn, more once a terminal made narrower rewrapped them.
func rowsOf(widths []int, cols int) int {
	n := 0
	for _, w := range widths {
		n += max((w+cols-1)/max(cols, 1), 1)
	}
	return n
}

// block is the view's lines, each at most width wide, at most height of
// them.
func (v *fleetView) block(now time.Time, width, height int) []string {
	if height < 1 || width < 1 {
		return nil
	}
	// A line per device when they fit with room to spare (failure lines
	// above stay in sight a while).
	if len(v.devs) <= height-3 {
		lw := labelWidth(v.devs)
		bw := min(max(width-lw-2-40, 10), 40)
		var lines []string
		for _, d := range v.devs {
			lines = append(lines, fit(fitPad(d.label, lw)+" "+bar(d.taken, v.size, bw)+" "+v.status(d), width))
		}
		return lines
	}
	var active []*viewDev
	for _, d := range v.devs {
		if v.active(d) {
			active = append(active, d)
		}
	}
	lines := []string{v.overall(now, width)}
	shown := active
	if room := height - 1; len(active) > room {
		shown = active[:max(room-1, 0)]
	}
	lw := labelWidth(v.devs) // of all, so the column stays put
	for _, d := range shown {
		lines = append(lines, fit(fitPad(d.label, lw)+"  "+v.status(d), width))
	}
	if k := len(active) - len(shown); k > 0 && height > 1 {
		lines = append(lines, fmt.Sprintf("+%d more", k))
	}
	return lines
}

// active: checking, sending or verifying; not waiting for its turn.
func (v *fleetView) active(d *viewDev) bool {
	return !d.ended && d.phase != "" && (d.phase != upload.PhaseChecking || !v.updating)
}

// overall is "done/total devices [bar] bytes ETA, failed, queued". The
// bytes are those the devices took (in their last try), of the image's
// size for each device that is to be sent it: not those that ended without
// a send (skipped, refused, not started, planned).
func (v *fleetView) overall(now time.Time, width int) string {
	done, failed, queued, senders := 0, 0, 0, 0
	var sent int64
	for _, d := range v.devs {
		sent += d.taken
		if !d.ended || !sendsNothing(d.kind) {
			senders++
		}
		switch {
		case d.ended:
			done++
			if d.bad {
				failed++
			}
		case !v.active(d):
			queued++
		}
	}
	total := v.size * int64(senders)
	left := fmt.Sprintf("%d/%d devices", done, len(v.devs))
	tail := humanBytes(sent) + " / " + humanBytes(total)
	if eta, ok := v.eta(now); ok {
		tail += "  ETA " + eta.String()
	}
	var counts []string
	if failed > 0 {
		counts = append(counts, fmt.Sprintf("%d failed", failed))
	}
	if queued > 0 {
		counts = append(counts, fmt.Sprintf("%d queued", queued))
	}
	if len(counts) > 0 {
		tail += "  " + strings.Join(counts, ", ")
	}
	if bw := width - runewidth.StringWidth(left) - runewidth.StringWidth(tail) - 2; bw >= 10 {
		return left + " " + bar(sent, total, min(bw, 60)) + " " + tail
	}
	return fit(left+"  "+tail, width)
}

// sendsNothing: outcomes of a device the image was never to be sent to.
func sendsNothing(o upload.Outcome) bool {
	switch o {
	case upload.OutcomeSkipped, upload.OutcomeRefused, upload.OutcomeNotStarted, upload.OutcomePlanned:
		return true
	}
	return false
}

// eta is the time the remaining devices need: none until a device has
// ended after starting (there is no rate before). Each device still queued
// needs the mean time of those that ended, each running one what is left
// of it, and as many run at once as were ever seen running.
func (v *fleetView) eta(now time.Time) (time.Duration, bool) {
	if v.tookN == 0 || v.maxInFlight == 0 {
		return 0, false
	}
	mean := v.took / time.Duration(v.tookN)
	var work time.Duration
	for _, d := range v.devs {
		switch {
		case d.ended:
		case d.start.IsZero():
			work += mean
		default:
			work += max(mean-now.Sub(d.start), 0)
		}
	}
	return (work / time.Duration(v.maxInFlight)).Round(time.Second), true
}

// status is a device's phase as shown, with its try, of the most its last
// failure allows, and that failure's reason once it has retried.
func (v *fleetView) status(d *viewDev) string {
	var s string
	switch {
	case d.ended && d.bad && d.message != "":
		return d.outcome + ": " + d.message
	case d.ended:
		return d.outcome
	case !v.active(d):
		s = "queued"
	case d.phase == upload.PhaseUploading || d.phase == upload.PhaseErasing && d.taken > 0:
		s = fmt.Sprintf("uploading %3d %%", d.taken*100/v.size)
		if d.rate > 0 {
			s += fmt.Sprintf(" %4.0f KB/s", d.rate/1000)
		}
	case d.phase == upload.PhaseErasing:
		s = "erasing   0 %"
	default:
		s = string(d.phase)
	}
	try := d.try
	if d.phase == upload.PhaseRetrying {
		try++ // the event counts the try that failed
	}
	if d.why != "" && try > 1 {
		most := d.max
		if most == 0 {
			most = v.maxTries
		}
		s += fmt.Sprintf("  try %d/%d: %s", try, max(most, try), d.why)
	}
	return s
}

func labelWidth(devs []*viewDev) int {
	w := 0
	for _, d := range devs {
		w = max(w, runewidth.StringWidth(d.label))
	}
	return min(w, 24)
}

// bar is "[====>    ]", w wide.
func bar(done, total int64, w int) string {
	in := max(w-2, 0)
	n := int(int64(in) * min(max(done, 0), total) / max(total, 1))
	s := strings.Repeat("=", n)
	if n > 0 && n < in {
		s = s[:n-1] + ">"
	}
	return "[" + s + strings.Repeat(" ", in-n) + "]"
}

// fit cuts s to w columns, ending it with "…" when cut.
func fit(s string, w int) string {
	if runewidth.StringWidth(s) <= w {
		return s
	}
	return runewidth.Truncate(s, max(w, 0), "…")
}

func fitPad(s string, w int) string { return runewidth.FillRight(fit(s, w), w) }

// oneLine makes text a device or a user supplied safe on one terminal
// line: control characters (newlines, escapes) become spaces, runs of
// spaces one.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(strings.ToValidUTF8(s, "?"), func(r rune) bool {
		return r == ' ' || r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0
	}), " ")
}

// terminalSize is f's columns and rows; 80×24 when it tells none.
func terminalSize(f *os.File) (cols, rows int) {
	if f != nil {
		if c, r, err := term.GetSize(int(f.Fd())); err == nil && c > 0 && r > 0 {
			return c, r
		}
	}
	return 80, 24
}

// zeroSizeTerminal reports a terminal that tells a width of 0 (a pty
// nobody sized: script(1) without a terminal, some CI runners). Nothing
// drawn to fit it would be shown, so such a terminal gets the lines.
func zeroSizeTerminal(w io.Writer) bool {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols <= 0 {
			return true
		}
	}
	return false
}
