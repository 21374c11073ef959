package rollout

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ots-ota/ots-ota/upload"
)

// Plan is how the devices are split into waves and when a wave may follow
// the one before it.
type Plan struct {
	// Canary devices go first, as wave 0; the rest start only when none
	// of them failed and at least one ended updated (the others skipped).
	Canary int
	// Waves are cumulative steps over the devices after the canary
	// (ParseWaves("10%,50%,100%")); the last step must be 100%. Empty
	// means one step of 100%.
	Waves []Step
	// MaxFailures applies to each wave (against the wave's size) and to the
	// whole rollout (against all devices). A failure is any outcome but
	// updated or skipped. Unset means none is allowed.
	MaxFailures upload.FailureBudget
	// WavePause is waited between two waves.
	WavePause time.Duration
}

// Step is one cumulative step of the waves: a share of the devices after
// the canary, or a count of them. One of the two is set.
type Step struct {
	Percent float64
	Count   int
}

func (s Step) String() string {
	if s.Count > 0 {
		return strconv.Itoa(s.Count)
	}
	return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
}

// ParseWaves reads --waves: comma-separated steps, each "P%" (0 < P ≤ 100)
// or a device count N ≥ 1, cumulative over the devices after the canary,
// growing, the last one "100%". "" is refused: an empty $WAVES in a
// script would otherwise run the whole fleet as one wave.
func ParseWaves(s string) ([]Step, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("no waves given: give the cumulative steps (10%,50%,100%), or 100% for one wave")
	}
	var steps []Step
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if p, ok := strings.CutSuffix(f, "%"); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || math.IsNaN(v) || v <= 0 || v > 100 {
				return nil, fmt.Errorf("wave %q is not a percentage above 0%% and at most 100%%", f)
			}
			steps = append(steps, Step{Percent: v})
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("wave %q is neither a device count (N ≥ 1) nor a percentage (P%%)", f)
		}
		steps = append(steps, Step{Count: n})
	}
	for i := 1; i < len(steps); i++ {
		a, b := steps[i-1], steps[i]
		if a.Count > 0 && b.Count > 0 && b.Count <= a.Count || a.Count == 0 && b.Count == 0 && b.Percent <= a.Percent {
			return nil, fmt.Errorf("waves %q must grow: they count cumulatively (10%%,50%%,100%%)", s)
		}
	}
	if last := steps[len(steps)-1]; last.Count > 0 || last.Percent != 100 {
		return nil, errors.New("the last wave must be 100%, so that every device gets a wave")
	}
	return steps, nil
}

// Split gives the device indexes 0…n-1 per wave, in order: wave 0 is the
// canary when Canary > 0, then one wave per step. Every index is in
// exactly one wave, no wave is empty, and a step that would add no device
// (fewer devices than steps) is dropped: steps round up, so each adds at
// least one device.
func (p Plan) Split(n int) [][]int {
	var waves [][]int
	next := 0
	take := func(k int) {
		if k <= 0 {
			return
		}
		w := make([]int, k)
		for i := range w {
			w[i] = next + i
		}
		next += k
		waves = append(waves, w)
	}
	take(min(max(p.Canary, 0), n))
	rest := n - next
	steps := p.Waves
	if len(steps) == 0 {
		steps = []Step{{Percent: 100}}
	}
	done := 0 // devices of the rest given a wave so far
	for i, s := range steps {
		want := s.Count
		if s.Count == 0 {
			want = int(math.Ceil(s.Percent * float64(rest) / 100))
		}
		if i == len(steps)-1 {
			want = rest // the last step is 100%, whatever it says
		}
		want = min(max(want, done+1), rest)
		take(want - done)
		done = max(done, want)
	}
	return waves
}

// failed reports whether the outcome counts against the failure budget:
// anything but updated or skipped.
func failed(o upload.Outcome) bool {
	return o != upload.OutcomeUpdated && o != upload.OutcomeSkipped
}

// exceeded reports whether failures out of total exceed the budget; an
// unset budget allows none.
func exceeded(b upload.FailureBudget, failures, total int) bool {
	switch {
	case failures == 0:
		return false
	case !b.Set:
		return true
	case b.Percent > 0:
		return float64(failures)*100 > b.Percent*float64(total)
	}
	return failures > b.N
}

// Gate decides whether the rollout may go on after a wave: "" when it
// passed, else the reason, one line naming the gate. wave holds the
// wave's results; all the results of every device decided so far (this
// wave's included); total is the number of devices in the rollout.
//
// The canary passes only when none of its devices failed and at least one
// ended updated: a canary of devices that already run the target (skipped)
// took no image and shows nothing of it (unless no wave follows it).
func (p Plan) Gate(canary bool, index, of int, wave, all []upload.Result, total int) string {
	if canary {
		updated := 0
		for _, r := range wave {
			if failed(r.Outcome) {
				return fmt.Sprintf("the canary %s ended %s", r.Device, r.OutcomeText())
			}
			if r.Outcome == upload.OutcomeUpdated {
				updated++
			}
		}
		// It guards the waves after it: a canary that is the whole
		// rollout (index+1 == of) has none to stop, and its skipped
		// devices already run the target.
		if updated == 0 && index+1 < of {
			return "the canary took no image: its devices already run the target (skipped); at least one must end updated (choose canaries that run another version)"
		}
	}
	return p.over(index, of, counted(wave), len(wave), counted(all), total)
}

// counted is how many results count against the failure budget; a device
// a gate left not-started is no failure of its own.
func counted(rs []upload.Result) int {
	n := 0
	for _, r := range rs {
		if failed(r.Outcome) && r.Outcome != upload.OutcomeNotStarted {
			n++
		}
	}
	return n
}

// over is the reason the failures so far exceed a budget, "" while they
// do not: waveFailed of the waveSize devices of wave index (of of), and
// allFailed of the total. The sizes are fixed when the rollout starts, so
// a budget once exceeded stays exceeded, and the engine may stop as soon
// as it is, in the middle of a wave.
func (p Plan) over(index, of, waveFailed, waveSize, allFailed, total int) string {
	budget := "none is allowed (--max-failures)"
	if p.MaxFailures.Set {
		budget = "more than --max-failures " + p.MaxFailures.String() + " allows"
	}
	if exceeded(p.MaxFailures, waveFailed, waveSize) {
		return fmt.Sprintf("wave %d of %d: %d of its %d devices failed, %s", index+1, of, waveFailed, waveSize, budget)
	}
	if exceeded(p.MaxFailures, allFailed, total) {
		return fmt.Sprintf("the rollout: %d of its %d devices failed so far, %s", allFailed, total, budget)
	}
	return ""
}
