package cmd

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// pushRenderer draws the runner's events: NDJSON with --json, the fleet
// view on a terminal, one line per phase change otherwise; then the
// summary.
type pushRenderer struct {
	a     *app
	fw    *upload.Firmware
	mu    sync.Mutex
	json  bool
	lines bool // one line per phase change on stderr
	view  *fleetView
	last  map[string]upload.Phase
	// restoreVT undoes enableVT once the view is erased.
	restoreVT func()
}

// newPushRenderer draws a run over targets (merged, in the runner's
// order), whose devices each have retries+1 tries.
func newPushRenderer(a *app, fw *upload.Firmware, targets []upload.Target, retries int) *pushRenderer {
	r := &pushRenderer{a: a, fw: fw, json: a.opts.JSON, last: map[string]upload.Phase{}}
	errf, _ := a.io.ErrOut.(*os.File)
	switch {
	case a.opts.Quiet:
	// -v's logs on stderr would break into the view, and a dumb terminal
	// moves no cursor: lines then.
	case a.io.ErrTTY && !a.opts.JSON && a.opts.Verbose == 0 && !a.io.DumbTerm && errf != nil && !zeroSizeTerminal(errf):
		restore, ok := enableVT(errf)
		if !ok {
			r.lines = true
			break
		}
		r.restoreVT = restore
		r.view = newFleetView(errf, fw.Size(), targets, retries+1, &a.secrets)
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
	e.Key = red.Redact(e.Key)
	if e.Result != nil {
		res := r.clean(*e.Result)
		e.Result = &res
	}
	if r.json {
		r.jsonEvent(e)
		return
	}
	if r.view != nil {
		r.view.event(e)
		return
	}
	if !r.lines {
		return
	}
	// What a device or a user supplied is shown on one line, as in the view.
	w, target := r.a.io.ErrOut, oneLine(e.Target)
	switch {
	case e.Phase == upload.PhaseDone && e.Result != nil:
		fmt.Fprintln(w, endedLine(target, *e.Result))
	case e.Phase == upload.PhaseRetrying, strings.HasPrefix(e.Message, "warning: "):
		fmt.Fprintf(w, "%s: %s\n", target, oneLine(e.Message))
	case e.Phase != r.last[e.Target]:
		line := target + ": " + string(e.Phase)
		if e.Try > 1 {
			line += fmt.Sprintf(" (try %d)", e.Try)
		}
		if e.Phase == upload.PhaseChecking || e.Phase == upload.PhaseConnecting {
			line += " " + oneLine(e.Addr)
		}
		fmt.Fprintln(w, line)
	}
	r.last[e.Target] = e.Phase
}

// endedLine is "device: outcome: message", one line.
func endedLine(label string, res upload.Result) string {
	line := label + ": " + res.OutcomeText()
	if m := oneLine(res.Message); m != "" {
		line += ": " + m
	}
	return line
}

// failedBefore shows the devices that ended before the run (a name that
// did not resolve, an inventory secret that could not be read) as a device
// that fails in the run is shown: a line above the view, or a line. The
// --json lines carry them in the summary only.
func (r *pushRenderer) failedBefore(results []upload.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range results {
		res = r.clean(res)
		label := res.Device
		if label == "" {
			label = res.Addr
		}
		switch {
		case r.view != nil:
			r.view.failedBefore(endedLine(oneLine(label), res))
		case r.lines:
			fmt.Fprintln(r.a.io.ErrOut, endedLine(oneLine(label), res))
		}
	}
}

func (r *pushRenderer) close() {
	if r.view != nil {
		r.view.close()
		r.restoreVT()
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
	w := r.a.io.Out
	if dryRun {
		fmt.Fprintln(w, "dry run: nothing was sent")
	}
	writePushTable(w, outputWidth(w, r.a.io.OutTTY), r.a, results, totalsLine(results, counts, wall))
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

// outcomeStyled colours an outcome's text t as the outcome r deserves.
func outcomeStyled(st style, r upload.Result, t string) string {
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
