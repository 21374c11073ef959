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
	n     int
	mu    sync.Mutex
	json  bool
	lines bool // one line per phase change on stderr
	view  *fleetView
	last  map[string]upload.Phase
}

// newPushRenderer draws a run over targets (merged, in the runner's
// order), whose devices each have retries+1 tries.
func newPushRenderer(a *app, fw *upload.Firmware, targets []upload.Target, retries int) *pushRenderer {
	r := &pushRenderer{a: a, fw: fw, n: len(targets), json: a.opts.JSON, last: map[string]upload.Phase{}}
	errf, _ := a.io.ErrOut.(*os.File)
	switch {
	case a.opts.Quiet:
	// -v's logs on stderr would break into the view: lines then.
	case a.io.ErrTTY && !a.opts.JSON && a.opts.Verbose == 0 && errf != nil && !zeroSizeTerminal(errf) && enableVT(errf):
		r.view = newFleetView(errf, fw.Size(), targets, retries+1, &a.secrets)
	default:
		r.lines = true
	}
	return r
}

// jsonEvent is one NDJSON line of progress (the schema is in the README).
type jsonEvent struct {
	Type     string          `json:"type"` // "progress"
	Time     time.Time       `json:"time"`
	Device   string          `json:"device"`
	Address  string          `json:"address,omitempty"`
	Protocol upload.Protocol `json:"protocol,omitempty"`
	Phase    upload.Phase    `json:"phase"`
	Done     int64           `json:"done,omitempty"`
	Total    int64           `json:"total,omitempty"`
	Try      int             `json:"try,omitempty"`
	Message  string          `json:"message,omitempty"`
}

// jsonResult is a device's result line, and each element of the summary's
// devices.
type jsonResult struct {
	Type string `json:"type,omitempty"` // "result" as an NDJSON line
	upload.Result
	OutcomeText string `json:"outcome_text"`
	DurationMS  int64  `json:"duration_ms"`
}

type jsonSummary struct {
	Type        string         `json:"type"` // "summary"
	ExitCode    int            `json:"exit_code"`
	Interrupted bool           `json:"interrupted,omitempty"`
	DryRun      bool           `json:"dry_run,omitempty"`
	Firmware    string         `json:"firmware"`
	Version     string         `json:"version,omitempty"`
	Size        int64          `json:"size"`
	DurationMS  int64          `json:"duration_ms"`
	Counts      map[string]int `json:"counts"`
	Devices     []jsonResult   `json:"devices"`
}

func resultJSON(r upload.Result, typ string) jsonResult {
	return jsonResult{Type: typ, Result: r, OutcomeText: r.OutcomeText(), DurationMS: r.Duration.Milliseconds()}
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
		if e.Phase == upload.PhaseDone && e.Result != nil {
			_ = writeJSON(r.a.io.Out, resultJSON(*e.Result, "result"))
			return
		}
		_ = writeJSON(r.a.io.Out, jsonEvent{Type: "progress", Time: e.Time, Device: e.Target, Address: e.Addr, Protocol: e.Protocol,
			Phase: e.Phase, Done: e.Done, Total: e.Total, Try: e.Try, Message: e.Message})
		return
	}
	if r.view != nil {
		r.view.event(e)
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
	if r.view != nil {
		r.view.close()
	}
}

// summary prints the table (or the JSON summary) on stdout.
func (r *pushRenderer) summary(results []upload.Result, wall time.Duration, code int, dryRun bool) {
	counts := map[string]int{}
	for _, res := range results {
		counts[string(res.Outcome)]++
	}
	if r.json {
		s := jsonSummary{Type: "summary", ExitCode: code, Interrupted: code == ExitCancelled, DryRun: dryRun,
			Firmware: r.fw.Name, Size: r.fw.Size(), DurationMS: wall.Milliseconds(), Counts: counts, Devices: []jsonResult{}}
		if r.fw.Image != nil && r.fw.Image.App != nil {
			s.Version = r.fw.Image.App.Version
		}
		for _, res := range results {
			s.Devices = append(s.Devices, resultJSON(r.clean(res), ""))
		}
		_ = writeJSON(r.a.io.Out, s)
		return
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
