package cmd

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/ots-ota/ots-ota/upload"
)

// pushRenderer draws the runner's events: NDJSON with --json, bars on a
// terminal, one line per phase change otherwise; then the summary.
type pushRenderer struct {
	a     *app
	fw    *upload.Firmware
	n     int
	mu    sync.Mutex
	json  bool
	lines bool // one line per phase change on stderr
	bars  *barRenderer
	last  map[string]upload.Phase
}

func newPushRenderer(a *app, fw *upload.Firmware, devices int) *pushRenderer {
	r := &pushRenderer{a: a, fw: fw, n: devices, json: a.opts.JSON, last: map[string]upload.Phase{}}
	switch {
	case a.opts.Quiet:
	case a.io.ErrTTY && !a.opts.JSON && !zeroSizeTerminal(a.io.ErrOut):
		r.bars = newBarRenderer(a.io.ErrOut, fw.Size(), devices)
	default:
		r.lines = true
	}
	return r
}

// clean is res as it may be shown: every string a device or a user
// supplied, redacted. The facts the verdict compared stay untouched.
func (r *pushRenderer) clean(res upload.Result) upload.Result {
	red := &r.a.secrets
	res.Device, res.Addr = red.Redact(res.Device), red.Redact(res.Addr)
	res.From, res.To, res.Running = red.Redact(res.From), red.Redact(res.To), red.Redact(res.Running)
	res.State, res.VersionSource = red.Redact(res.State), red.Redact(res.VersionSource)
	res.Words, res.Message = red.Redact(res.Words), red.Redact(r.a.said(res.Message))
	res.Warnings = red.RedactAll(res.Warnings)
	for i, w := range res.Warnings {
		res.Warnings[i] = r.a.said(w)
	}
	return res
}

func (r *pushRenderer) event(e upload.FleetEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	red := &r.a.secrets
	e.Target, e.Message, e.Addr = red.Redact(e.Target), red.Redact(r.a.said(e.Message)), red.Redact(e.Addr)
	if e.Result != nil {
		res := r.clean(*e.Result)
		e.Result = &res
	}
	if r.json {
		r.jsonEvent(e)
		return
	}
	if r.bars != nil {
		r.bars.event(e)
		return
	}
	if !r.lines {
		return
	}
	w := r.a.io.ErrOut
	switch {
	case e.Phase == upload.PhaseDone && e.Result != nil:
		res := e.Result
		fmt.Fprintf(w, "%s: %s", e.Target, res.OutcomeText())
		if res.Message != "" {
			fmt.Fprintf(w, ": %s", res.Message)
		}
		fmt.Fprintln(w)
	case e.Phase == upload.PhaseRetrying, strings.HasPrefix(e.Message, "warning: "):
		fmt.Fprintf(w, "%s: %s\n", e.Target, e.Message)
	case e.Phase != r.last[e.Target]:
		line := e.Target + ": " + string(e.Phase)
		if e.Try > 1 {
			line += fmt.Sprintf(" (try %d)", e.Try)
		}
		if e.Phase == upload.PhaseChecking || e.Phase == upload.PhaseConnecting {
			line += " " + e.Addr
		}
		fmt.Fprintln(w, line)
	}
	r.last[e.Target] = e.Phase
}

func (r *pushRenderer) close() {
	if r.bars != nil {
		r.bars.close()
	}
}

// summary prints the table on stdout (with --json, fills in the summary line).
func (r *pushRenderer) summary(results []upload.Result, wall time.Duration, code int, dryRun bool) {
	if r.json {
		r.jsonSummary(results, wall, code, dryRun)
		return
	}
	counts := map[string]int{}
	for _, res := range results {
		counts[string(res.Outcome)]++
	}
	st := style{on: r.a.color()}
	w := r.a.io.Out
	if dryRun {
		fmt.Fprintln(w, "dry run: nothing was sent")
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tADDRESS\tPROTOCOL\tFROM → TO\tOUTCOME\tTRIES\tTIME\tKB/S\tMESSAGE")
	for _, res := range results {
		rate := "-"
		if res.Rate > 0 {
			rate = fmt.Sprintf("%.0f", res.Rate/1000)
		}
		took := "-"
		if res.Duration > 0 {
			took = res.Duration.Round(100 * time.Millisecond).String()
		}
		proto := string(res.Protocol)
		if proto == "" {
			proto = "-"
		}
		msg := r.a.said(res.Message)
		for _, wmsg := range res.Warnings {
			msg += " [warning: " + r.a.said(wmsg) + "]"
		}
		// fromTo compares the versions as told; only the line is redacted.
		fmt.Fprint(tw, r.a.secrets.Redact(fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", res.Device, res.Addr, proto, fromTo(res),
			outcomeStyled(st, res), res.Tries, took, rate, msg)))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, totalsLine(results, counts, wall))
}

func fromTo(r upload.Result) string {
	from, to := r.From, r.To
	if from == "" {
		from = "?"
	}
	if to == "" {
		to = "?"
	}
	if r.Running != "" && r.Running != r.To {
		to += " (runs " + r.Running + ")"
	}
	return from + " → " + to
}

// outcomeStyled colours every outcome with a code of the same length, so
// the table's columns stay aligned with colour on.
func outcomeStyled(st style, r upload.Result) string {
	t := r.OutcomeText()
	switch {
	case r.Outcome == upload.OutcomeUpdated, r.Outcome == upload.OutcomeSkipped, r.Outcome == upload.OutcomeAccepted:
		return st.green(t)
	case r.Outcome == upload.OutcomeUnverified, r.Outcome == upload.OutcomeNotStarted, r.Outcome == upload.OutcomeCancelled:
		return st.yellow(t)
	case r.Outcome.Bad():
		return st.red(t)
	}
	return st.wrap("39", t)
}

// totalsLine is the last line: counts per outcome, unverified apart.
func totalsLine(results []upload.Result, counts map[string]int, wall time.Duration) string {
	order := []upload.Outcome{upload.OutcomeUpdated, upload.OutcomeAccepted, upload.OutcomeSkipped, upload.OutcomePlanned, upload.OutcomeUnverified,
		upload.OutcomeFailed, upload.OutcomeRefused, upload.OutcomeRolledBack, upload.OutcomeUnchanged, upload.OutcomeUnreachable, upload.OutcomeNotStarted, upload.OutcomeCancelled}
	var parts []string
	for _, o := range order {
		n := counts[string(o)]
		if n == 0 {
			continue
		}
		p := fmt.Sprintf("%d %s", n, o)
		if o == upload.OutcomeUnverified {
			p += " (no version seen: not counted as updated)"
		}
		parts = append(parts, p)
	}
	return fmt.Sprintf("%d device(s): %s, in %s", len(results), strings.Join(parts, ", "), wall.Round(100*time.Millisecond))
}

// barRenderer draws one bar per device, or one overall bar plus the
// active and failed devices when they would not fit the terminal.
type barRenderer struct {
	p        *mpb.Progress
	size     int64
	total    int
	overview bool

	mu      sync.Mutex
	devs    map[string]*barDev
	order   []string
	done    int
	overall *mpb.Bar
	status  *mpb.Bar
}

type barDev struct {
	label   string
	phase   upload.Phase
	taken   int64
	first   time.Time
	rate    float64
	outcome string
	bar     *mpb.Bar
	ended   bool
	contrib int64 // bytes this device added to the overall bar
}

func terminalHeight(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if _, h, err := term.GetSize(int(f.Fd())); err == nil && h > 0 {
			return h
		}
	}
	return 24
}

// zeroSizeTerminal reports a terminal that tells a width of 0 (a pty
// nobody sized: script(1) without a terminal, some CI runners). Bars drawn
// there are not shown at all, so such a terminal gets the lines instead.
func zeroSizeTerminal(w io.Writer) bool {
	if f, ok := w.(*os.File); ok {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols <= 0 {
			return true
		}
	}
	return false
}

func newBarRenderer(w io.Writer, size int64, devices int) *barRenderer {
	b := &barRenderer{size: max(size, 1), total: devices, devs: map[string]*barDev{}}
	b.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(100), mpb.WithRefreshRate(150*time.Millisecond), mpb.WithAutoRefresh())
	b.overview = devices > terminalHeight(w)-4
	if b.overview {
		all := b.size * int64(devices)
		// Built with total 0, then given its total: reaching it does not
		// complete the bar (mpb stops drawing completed bars); close does.
		b.overall = b.p.AddBar(0,
			mpb.PrependDecorators(decor.Any(func(decor.Statistics) string {
				b.mu.Lock()
				defer b.mu.Unlock()
				return fmt.Sprintf("%d/%d devices", b.done, b.total)
			}, decor.WC{W: 18, C: decor.DindentRight})),
			mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f"), decor.Name("  ETA "), decor.AverageETA(decor.ET_STYLE_GO)))
		b.overall.SetTotal(all, false)
		b.status = b.p.New(0, mpb.NopStyle(), mpb.PrependDecorators(decor.Any(func(decor.Statistics) string {
			return b.activeLine()
		})))
	}
	return b
}

func (b *barRenderer) activeLine() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var active []string
	for _, l := range b.order {
		d := b.devs[l]
		if !d.ended {
			active = append(active, fmt.Sprintf("%s %s", d.label, phaseText(d, b.size)))
		}
	}
	sort.Strings(active)
	s := fmt.Sprintf("active %d", len(active))
	if len(active) > 0 {
		n := min(len(active), 4)
		s += ": " + strings.Join(active[:n], ", ")
		if len(active) > n {
			s += fmt.Sprintf(" (+%d)", len(active)-n)
		}
	}
	return s
}

func phaseText(d *barDev, size int64) string {
	switch {
	case d.outcome != "":
		return d.outcome
	case d.phase == upload.PhaseUploading || d.phase == upload.PhaseErasing && d.taken > 0:
		s := fmt.Sprintf("uploading %3d %%", d.taken*100/max(size, 1))
		if d.rate > 0 {
			s += fmt.Sprintf(" %4.0f KB/s", d.rate/1000)
		}
		return s
	case d.phase == upload.PhaseErasing:
		return "erasing   0 %"
	case d.phase == "":
		return "waiting"
	}
	return string(d.phase)
}

func (b *barRenderer) event(e upload.FleetEvent) {
	b.mu.Lock()
	d := b.devs[e.Target]
	if d == nil {
		d = &barDev{label: e.Target}
		b.devs[e.Target] = d
		b.order = append(b.order, e.Target)
		if !b.overview {
			dd := d
			// Total set after construction, as for the overall bar: a
			// device at 100 % still has its reboot and verification ahead.
			d.bar = b.p.AddBar(0,
				mpb.PrependDecorators(decor.Name(e.Target, decor.WC{W: min(len(e.Target)+1, 24), C: decor.DindentRight})),
				mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
					b.mu.Lock()
					defer b.mu.Unlock()
					return phaseText(dd, b.size)
				})))
			d.bar.SetTotal(b.size, false)
		}
	}
	if e.Phase != upload.PhaseDone && e.Phase != "" {
		if e.Phase == upload.PhaseConnecting || e.Phase == upload.PhaseRetrying {
			d.taken, d.first, d.rate = 0, time.Time{}, 0
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
	var failed string
	if e.Phase == upload.PhaseDone && e.Result != nil {
		d.outcome = e.Result.OutcomeText()
		d.ended = true
		b.done++
		if e.Result.Outcome.Bad() {
			failed = fmt.Sprintf("%s: %s: %s\n", d.label, d.outcome, e.Result.Message)
		}
	}
	bar, overall := d.bar, b.overall
	ended, ok := d.ended, e.Result != nil && !e.Result.Outcome.Bad()
	taken := d.taken
	want := taken
	if ended {
		want = b.size
	}
	delta := want - d.contrib
	d.contrib = want
	b.mu.Unlock()

	if overall != nil {
		overall.IncrInt64(delta)
		if failed != "" {
			_, _ = b.p.Write([]byte(failed))
		}
		return
	}
	if bar == nil {
		return
	}
	bar.SetCurrent(taken)
	if ended {
		if ok {
			bar.SetTotal(-1, true)
		} else {
			bar.Abort(false)
		}
	}
}

func (b *barRenderer) close() {
	b.mu.Lock()
	for _, d := range b.devs {
		if !d.ended && d.bar != nil {
			d.bar.Abort(false)
		}
	}
	if b.overall != nil {
		b.overall.SetTotal(-1, true)
		b.status.SetTotal(-1, true)
	}
	b.mu.Unlock()
	b.p.Wait()
}
