package cmd

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/upload"
)

type rolloutStatusOptions struct {
	ID       string
	StateDir string
}

func newRolloutStatusCmd(a *app) *cobra.Command {
	o := &rolloutStatusOptions{}
	c := &cobra.Command{
		Use:   "status [ID]",
		Short: "Tell where rollouts stand: waves passed, outcomes, devices in flight",
		Long: `Status reads the rollouts' state files (never the broker) and tells, for each rollout
(newest first) or the one named: its id, firmware, family and expected version, the waves
passed, the devices per outcome and those still in flight (commanded, no verdict yet), and
whether it is running (another ots-ota holds it), finished, stopped by a gate, or
interrupted (go on with 'ots-ota rollout --resume ID').`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("%s takes one rollout ID at most (got %d arguments)", cmd.CommandPath(), len(args))
			}
			return nil
		},
	}
	c.RunE = run(a, o, runRolloutStatus)
	c.Flags().StringVar(&o.StateDir, "state-dir", "", "where rollouts keep their state (default: $OTS_OTA_STATE_DIR, else the user's state directory)")
	_ = c.MarkFlagDirname("state-dir")
	return c
}

func (o *rolloutStatusOptions) validate(a *app, args []string) error {
	if len(args) == 1 {
		o.ID = args[0]
	}
	if o.StateDir == "" {
		d, err := rollout.DefaultDir()
		if err != nil {
			return usageErrorf("no state directory: %v; give --state-dir", err)
		}
		o.StateDir = d
	}
	return nil
}

// rolloutStand is one rollout as status tells it.
type rolloutStand struct {
	sum       rollout.Summary
	rec       rollout.Record
	state     string // running|finished|stopped|interrupted
	waves     int    // the plan's waves; 0 when unknown
	passed    int
	inFlight  []string
	pending   int  // not commanded, and no verdict (a gate's not-started is one)
	unchecked bool // the record could not be read: only the summary is known
}

func standOf(dir string, s rollout.Summary) rolloutStand {
	st := rolloutStand{sum: s, pending: s.Phases[rollout.PhasePending]}
	switch {
	case s.Running:
		st.state = "running"
	case s.Finished && s.Stopped != "":
		st.state = "stopped"
	case s.Finished:
		st.state = "finished"
	default:
		st.state = "interrupted"
	}
	rec, err := rollout.Read(dir, s.ID)
	if err != nil {
		st.unchecked = true
		return st
	}
	st.rec = rec
	if m, err := rec.Meta(); err == nil {
		st.waves = len(m.Plan.Split(len(rec.Devices)))
	}
	for _, w := range rec.Waves {
		if w.State == "passed" {
			st.passed++
		}
	}
	st.pending = 0
	for _, d := range rec.Devices {
		switch {
		case d.Phase == rollout.PhaseCommanded:
			st.inFlight = append(st.inFlight, d.Name)
		case d.Phase == rollout.PhasePending && d.Result == nil:
			st.pending++
		}
	}
	return st
}

func runRolloutStatus(_ context.Context, a *app, o *rolloutStatusOptions) error {
	all, err := rollout.List(o.StateDir)
	if err != nil {
		return withCode("state", err)
	}
	if o.ID != "" {
		i := slices.IndexFunc(all, func(s rollout.Summary) bool { return s.ID == o.ID })
		if i < 0 {
			return withCode("not_found", fmt.Errorf("no rollout %s under %s (ots-ota rollout status lists them)", o.ID, filepath.Join(o.StateDir, "rollouts")))
		}
		all = all[i : i+1]
	}
	if a.opts.JSON {
		for _, s := range all {
			a.writeLine(rolloutStatusLineOf(standOf(o.StateDir, s)))
		}
		n := len(all)
		summaryAs[*rolloutStatusSummary](a).Count = &n
		return nil
	}
	if len(all) == 0 {
		fmt.Fprintf(a.io.Out, "no rollouts under %s\n", filepath.Join(o.StateDir, "rollouts"))
		return nil
	}
	for i, s := range all {
		if i > 0 {
			fmt.Fprintln(a.io.Out)
		}
		writeStand(a.io.Out, a, standOf(o.StateDir, s))
	}
	return nil
}

// writeStand is one rollout's block.
func writeStand(w io.Writer, a *app, st rolloutStand) {
	s, sty := st.sum, style{on: a.color()}
	head := st.state
	switch st.state {
	case "interrupted":
		head = sty.yellow(head) + " (go on: ots-ota rollout --resume " + s.ID + ")"
	case "stopped":
		head = sty.red(head)
	case "finished":
		head = sty.green(head)
	}
	fmt.Fprintf(w, "rollout %s: %s\n", s.ID, head)
	row := func(k, v string) { fmt.Fprintf(w, "  %-10s %s\n", k, oneLine(a.secrets.Redact(v))) }
	fw := s.Firmware
	if !st.unchecked {
		fw += fmt.Sprintf(" (%s, sha256 %s…)", humanBytes(st.rec.Firmware.Size), prefix(st.rec.Firmware.SHA256, 12))
	}
	row("firmware", fw)
	row("family", s.Family+", expecting "+s.Expect)
	if !st.unchecked {
		row("broker", st.rec.Broker)
	}
	row("created", s.Created.Local().Format("2006-01-02 15:04:05")+", updated "+s.Updated.Local().Format("2006-01-02 15:04:05"))
	if !st.unchecked {
		plan := "waves " + st.rec.Plan.Waves
		if st.rec.Plan.Canary > 0 {
			plan = fmt.Sprintf("canary %d, %s", st.rec.Plan.Canary, plan)
		}
		of := "?"
		if st.waves > 0 {
			of = fmt.Sprint(st.waves)
		}
		row("waves", fmt.Sprintf("%d of %s passed (%s)", st.passed, of, plan))
	}
	if !st.unchecked && st.rec.Store != nil {
		row("store", st.rec.Store.Name)
	}
	if !st.unchecked {
		for _, m := range st.rec.Announcements {
			row("manifest", m.URL+" ("+strings.ReplaceAll(m.State, "_", " ")+")")
		}
	}
	row("devices", fmt.Sprintf("%d: %s", s.Devices, standCounts(st)))
	if len(st.inFlight) > 0 {
		row("in flight", firstFew(st.inFlight))
	}
	if s.Stopped != "" {
		row("stopped", s.Stopped)
	}
}

// standCounts is "3 updated, 1 failed, 2 in flight, 14 pending".
func standCounts(st rolloutStand) string {
	s := st.sum
	var parts []string
	for _, o := range outcomeOrder() {
		if n := s.Outcomes[o]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, o))
		}
	}
	if n := s.Phases[rollout.PhaseCommanded]; n > 0 {
		parts = append(parts, fmt.Sprintf("%d in flight", n))
	}
	if st.pending > 0 {
		parts = append(parts, fmt.Sprintf("%d pending", st.pending))
	}
	if len(parts) == 0 {
		return "none started"
	}
	return strings.Join(parts, ", ")
}

func outcomeOrder() []upload.Outcome {
	return []upload.Outcome{upload.OutcomeUpdated, upload.OutcomeSkipped, upload.OutcomeUnverified, upload.OutcomeFailed,
		upload.OutcomeRefused, upload.OutcomeRolledBack, upload.OutcomeUnchanged, upload.OutcomeUnreachable,
		upload.OutcomeNotStarted, upload.OutcomeCancelled, upload.OutcomeAccepted, upload.OutcomePlanned}
}

func prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// rolloutStatusSummary is `rollout status --json`'s last line.
type rolloutStatusSummary struct {
	summaryHead
	Count *int `json:"count"` // rollouts told; null when the run ended before
}

// rolloutStatusLine is `rollout status --json`'s line per rollout.
type rolloutStatusLine struct {
	lineHead
	ID          string         `json:"id"`
	State       string         `json:"state"`
	Created     time.Time      `json:"created"`
	Updated     time.Time      `json:"updated"`
	Family      string         `json:"family"`
	Firmware    string         `json:"firmware"`
	SHA256      *string        `json:"sha256"`
	Size        *int64         `json:"size"`
	Expect      string         `json:"expect_version"`
	Broker      *string        `json:"broker"`
	Waves       *int           `json:"waves"`
	WavesPassed *int           `json:"waves_passed"`
	Devices     int            `json:"devices"`
	Counts      map[string]int `json:"counts"`
	Pending     int            `json:"pending"`
	InFlight    []string       `json:"in_flight"`
	Stopped     *string        `json:"stopped"`
	Path        string         `json:"path"`
	Store       *string        `json:"store"`
	Manifests   []manifestLine `json:"manifests"`
}

func rolloutStatusLineOf(st rolloutStand) rolloutStatusLine {
	s := st.sum
	l := rolloutStatusLine{lineHead: head("rollout"), ID: s.ID, State: st.state, Created: s.Created, Updated: s.Updated,
		Family: s.Family, Firmware: s.Firmware, Expect: s.Expect, Devices: s.Devices, Counts: map[string]int{},
		Pending: st.pending, InFlight: listOf(st.inFlight), Stopped: nullString(s.Stopped), Path: s.Path}
	for o, n := range s.Outcomes {
		if n > 0 {
			l.Counts[string(o)] = n
		}
	}
	if !st.unchecked {
		l.SHA256, l.Size, l.Broker = nullString(st.rec.Firmware.SHA256), nullPositive(st.rec.Firmware.Size), nullString(st.rec.Broker)
		l.WavesPassed = &st.passed
		l.Manifests = manifestsOf(st.rec)
		if st.rec.Store != nil {
			l.Store = &st.rec.Store.Name
		}
		if st.waves > 0 {
			l.Waves = &st.waves
		}
	}
	return l
}
