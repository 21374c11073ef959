package cmd

import (
	"fmt"
	"time"

	"github.com/ots-ota/ots-ota/rollout"
	"github.com/ots-ota/ots-ota/upload"
)

// rollout --json: push's progress and result lines (protocol
// "tasmota-mqtt" or "esphome-mqtt"), a wave line when a wave starts and ends, then the error
// lines of a run that does not exit 0 and the summary (docs/json.md,
// docs/schema/rollout.json).

// waveLine is a wave's start or end.
type waveLine struct {
	lineHead
	Time    time.Time `json:"time"`
	Index   int       `json:"index"` // 1-based
	Of      int       `json:"of"`
	Canary  bool      `json:"canary"`
	Devices []string  `json:"devices"`
	State   string    `json:"state"` // started|passed|stopped
	Reason  *string   `json:"reason"`
}

// rolloutSummary is rollout's last line.
type rolloutSummary struct {
	summaryHead
	ID          *string        `json:"id"`
	Resumed     *bool          `json:"resumed"`
	Interrupted *bool          `json:"interrupted"`
	Firmware    *string        `json:"firmware"`
	Size        *int64         `json:"size"`
	Counts      map[string]int `json:"counts"`
	Devices     []resultLine   `json:"devices"`
	Store       *string        `json:"store"`     // s3://bucket/prefix; null: the built-in file server
	Manifests   []manifestLine `json:"manifests"` // null before the rollout started
}

// manifestLine is an announcement (ESPHome manifest) the rollout wrote:
// where devices poll it, and what it holds now.
type manifestLine struct {
	Name  string `json:"name"`
	URL   string `json:"url"`
	State string `json:"state"` // written|put_back|removed|not_reverted
}

// manifestsOf are the state's announcements, as the JSON tells them.
func manifestsOf(rec rollout.Record) []manifestLine {
	out := []manifestLine{}
	for _, m := range rec.Announcements {
		out = append(out, manifestLine{Name: m.Name, URL: m.URL, State: m.State})
	}
	return out
}

// jsonRolloutRan fills in what the state file tells once the engine ran:
// the store and the manifests.
func jsonRolloutRan(a *app, st *rollout.State) {
	s := rolloutSummaryOf(a)
	if s == nil {
		return
	}
	rec := st.Record()
	s.Manifests = manifestsOf(rec)
	if rec.Store != nil {
		s.Store = &rec.Store.Name
	}
}

// rolloutSummaryOf is the run's summary with --json, nil without.
func rolloutSummaryOf(a *app) *rolloutSummary {
	if !a.opts.JSON {
		return nil
	}
	return summaryAs[*rolloutSummary](a)
}

// jsonRolloutImage says in the summary what is known once the image was
// read, and no devices yet.
func jsonRolloutImage(a *app, fw *upload.Firmware) {
	s := rolloutSummaryOf(a)
	if s == nil {
		return
	}
	size := fw.Size()
	s.Firmware, s.Size, s.Counts, s.Devices = &fw.Name, &size, map[string]int{}, []resultLine{}
	no := false
	s.Interrupted = &no
}

func waveOf(e rollout.WaveEvent, at time.Time) waveLine {
	return waveLine{lineHead: head("wave"), Time: at, Index: e.Index + 1, Of: e.Of, Canary: e.Canary, Devices: listOf(e.Devices),
		State: e.State, Reason: nullString(e.Reason)}
}

// rolloutRenderer is push's renderer, with the waves: a line each on
// stderr (above the fleet view on a terminal), a wave line with --json.
type rolloutRenderer struct {
	*pushRenderer
}

func newRolloutRenderer(a *app, fw *upload.Firmware, targets []upload.Target, retries int) *rolloutRenderer {
	return &rolloutRenderer{newPushRenderer(a, fw, targets, retries)}
}

func (r *rolloutRenderer) event(e upload.FleetEvent) {
	// The engine keys a device's events by its topic; the view keys its
	// targets by their address (rolloutTarget).
	key := e.Key
	if key == "" {
		key = e.Addr
	}
	e.Key = upload.Target{Host: key}.Addr()
	r.pushRenderer.event(e)
}

func (r *rolloutRenderer) wave(e rollout.WaveEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	red := &r.a.secrets
	for i, d := range e.Devices {
		e.Devices[i] = red.Redact(d)
	}
	e.Reason = red.Redact(r.a.said(e.Reason))
	if r.json {
		r.a.writeLine(waveOf(e, time.Now()))
		return
	}
	name := fmt.Sprintf("wave %d of %d", e.Index+1, e.Of)
	if e.Canary {
		name += " (canary)"
	}
	line := fmt.Sprintf("%s: %s", name, e.State)
	switch {
	case e.State == "started":
		line = fmt.Sprintf("%s: started, %d device(s)", name, len(e.Devices))
	case e.Reason != "":
		line += ": " + oneLine(e.Reason)
	}
	switch {
	case r.view != nil:
		r.view.failedBefore(line)
	case r.lines:
		fmt.Fprintln(r.a.io.ErrOut, line)
	}
}

// summary prints push's table on stdout, or fills in the summary line.
func (r *rolloutRenderer) summary(results []upload.Result, wall time.Duration, code int) {
	if !r.json {
		r.pushRenderer.summary(results, wall, code, false)
		return
	}
	s := summaryAs[*rolloutSummary](r.a)
	interrupted := code == ExitCancelled
	s.Interrupted, s.Counts, s.Devices = &interrupted, map[string]int{}, []resultLine{}
	s.DurationMS, s.timed = wall.Milliseconds(), true
	for _, res := range results {
		s.Counts[string(res.Outcome)]++
		s.Devices = append(s.Devices, resultOf(r.clean(res)))
	}
}
