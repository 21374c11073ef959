package rollout

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/upload"
)

func TestParseWaves(t *testing.T) {
	good := []struct {
		in   string
		want []Step
	}{
		{"100%", []Step{{Percent: 100}}},
		{"10%,50%,100%", []Step{{Percent: 10}, {Percent: 50}, {Percent: 100}}},
		{" 2 , 12.5% ,100% ", []Step{{Count: 2}, {Percent: 12.5}, {Percent: 100}}},
		{"1,5,100%", []Step{{Count: 1}, {Count: 5}, {Percent: 100}}},
	}
	for _, c := range good {
		got, err := ParseWaves(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseWaves(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	bad := []string{"", " ", "10%,50%", "50%,10%,100%", "0%,100%", "101%", "-1,100%", "0,100%", "x", "10%,,100%", "5,3,100%", "100", "NaN%,100%", "100%,100%"}
	for _, in := range bad {
		if got, err := ParseWaves(in); err == nil {
			t.Errorf("ParseWaves(%q) = %v, want an error", in, got)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseWaves(%q): error is not one line: %q", in, err)
		}
	}
}

// steps: "" is no steps (Plan's one wave of 100%).
func steps(s string) []Step {
	if s == "" {
		return nil
	}
	w, err := ParseWaves(s)
	if err != nil {
		panic(err)
	}
	return w
}

func TestSplit(t *testing.T) {
	cases := []struct {
		canary int
		waves  string
		n      int
		sizes  []int
	}{
		{0, "", 0, nil},
		{1, "", 0, nil},
		{0, "", 5, []int{5}},
		{1, "10%,50%,100%", 1, []int{1}},
		{1, "10%,50%,100%", 2, []int{1, 1}},
		{1, "10%,50%,100%", 3, []int{1, 1, 1}},     // rest 2: 10%→1, 50%→1 (would add none) bumped to 2, 100% adds none: dropped
		{1, "10%,50%,100%", 11, []int{1, 1, 4, 5}}, // rest 10: 1, 5, 10
		{2, "10%,50%,100%", 102, []int{2, 10, 40, 50}},
		{0, "10%,50%,100%", 7, []int{1, 3, 3}}, // 0.7→1, 3.5→4, 7
		{3, "10%,50%,100%", 2, []int{2}},       // canary bigger than the fleet
		{0, "1,5,100%", 3, []int{1, 2}},        // 5 is clamped to the 3 there are; 100% adds none
		{1, "2,100%", 10, []int{1, 2, 7}},
		{0, "33%,66%,100%", 100, []int{33, 33, 34}},
		{0, "1%,2%,100%", 10, []int{1, 1, 8}}, // 0.1→1, 0.2→1 bumped to 2
		{-1, "100%", 4, []int{4}},
	}
	for _, c := range cases {
		p := Plan{Canary: c.canary, Waves: steps(c.waves)}
		got := p.Split(c.n)
		var sizes []int
		seen := map[int]bool{}
		next := 0
		for _, w := range got {
			sizes = append(sizes, len(w))
			if len(w) == 0 {
				t.Errorf("%+v Split(%d): an empty wave", c, c.n)
			}
			for _, i := range w {
				if seen[i] || i != next {
					t.Errorf("%+v Split(%d): index %d out of order or twice", c, c.n, i)
				}
				seen[i] = true
				next++
			}
		}
		if next != c.n {
			t.Errorf("%+v Split(%d): %d indexes, want every one", c, c.n, next)
		}
		if !reflect.DeepEqual(sizes, c.sizes) {
			t.Errorf("canary %d waves %q Split(%d) sizes %v, want %v", c.canary, c.waves, c.n, sizes, c.sizes)
		}
	}
}

func res(outcomes ...upload.Outcome) []upload.Result {
	var r []upload.Result
	for i, o := range outcomes {
		r = append(r, upload.Result{Device: fmt.Sprintf("d%d", i), Outcome: o})
	}
	return r
}

func TestGate(t *testing.T) {
	const (
		U  = upload.OutcomeUpdated
		S  = upload.OutcomeSkipped
		F  = upload.OutcomeFailed
		UV = upload.OutcomeUnverified
		UR = upload.OutcomeUnreachable
		RF = upload.OutcomeRefused
		NS = upload.OutcomeNotStarted
	)
	n := func(k int) upload.FailureBudget { return upload.FailureBudget{Set: true, N: k} }
	pct := func(p float64) upload.FailureBudget { return upload.FailureBudget{Set: true, Percent: p} }
	cases := []struct {
		name   string
		budget upload.FailureBudget
		canary bool
		wave   []upload.Result
		all    []upload.Result // besides the wave
		total  int
		want   string // "" passes; else a word the reason holds
	}{
		{"canary all updated", n(5), true, res(U, U), nil, 10, ""},
		{"canary skipped beside an updated passes", n(5), true, res(U, S), nil, 10, ""},
		{"canary all skipped stops: it took no image", n(5), true, res(S, S), nil, 10, "the canary took no image"},
		{"canary one skipped stops", pct(100), true, res(S), nil, 10, "at least one must end updated"},
		{"not-started in the wave is no failure", n(0), false, res(U, NS, NS), nil, 10, ""},
		{"canary one unverified stops despite a budget", n(5), true, res(U, UV), nil, 10, "canary d1 ended unverified"},
		{"canary failed stops", pct(50), true, res(F), nil, 10, "canary d0 ended failed"},
		{"no budget: none allowed", upload.FailureBudget{}, false, res(U, U, UR), nil, 10, "none is allowed"},
		{"no budget: all updated passes", upload.FailureBudget{}, false, res(U, U, S), nil, 10, ""},
		{"count within wave and rollout", n(1), false, res(U, F, U), nil, 10, ""},
		{"count over in the wave", n(1), false, res(F, RF, U), nil, 10, "wave 2 of 3: 2 of its 3"},
		{"count over in the rollout only", n(1), false, res(U, U, F), res(F), 10, "the rollout: 2 of its 10"},
		{"percent within: 1 of 10 at 10%", pct(10), false, res(F, U, U, U, U, U, U, U, U, U), nil, 20, ""},
		{"percent over in the wave: 1 of 4 at 10%", pct(10), false, res(F, U, U, U), nil, 100, "wave 2 of 3: 1 of its 4"},
		{"percent over in the rollout: 3 of 20 at 10%", pct(10), false, res(F, U, U, U, U, U, U, U, U, U), res(F, F), 20, "the rollout: 3 of its 20"},
		{"not-started of earlier waves is no failure", n(0), false, res(U), res(NS, NS), 3, ""},
		{"zero budget set: one failure stops", n(0), false, res(U, UV), nil, 10, "more than --max-failures 0"},
	}
	for _, c := range cases {
		p := Plan{MaxFailures: c.budget}
		all := append(append([]upload.Result{}, c.all...), c.wave...)
		got := p.Gate(c.canary, 1, 3, c.wave, all, c.total)
		if c.canary {
			got = p.Gate(c.canary, 0, 3, c.wave, all, c.total)
		}
		switch {
		case c.want == "" && got != "":
			t.Errorf("%s: stopped: %s", c.name, got)
		case c.want != "" && !strings.Contains(got, c.want):
			t.Errorf("%s: gate %q, want it to say %q", c.name, got, c.want)
		}
	}
	// A canary that is the whole rollout (--canary N ≥ the fleet) has no
	// wave to guard: all skipped, it passes (the rollout finishes, exit 0,
	// rather than "stopped" with nothing left not-started).
	p := Plan{}
	if got := p.Gate(true, 0, 1, res(S, S), res(S, S), 2); got != "" {
		t.Errorf("whole-rollout canary, all skipped: stopped: %s", got)
	}
	if got := p.Gate(true, 0, 2, res(S, S), res(S, S), 3); !strings.Contains(got, "the canary took no image") {
		t.Errorf("canary before a wave, all skipped: gate %q, want it to stop", got)
	}
}
