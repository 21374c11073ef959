package cmd

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ots-ota/ots-ota/sim"
)

// TestSimHelpFaultChance: sim's help names exactly the faults that take no
// "/P%", as the parser has them, and lists an example of every fault kind.
func TestSimHelpFaultChance(t *testing.T) {
	streams, _, _ := TestStreams()
	long := subcommand(newRootCmd(&app{io: streams, cfg: &config{}}), "sim").Long
	flat := strings.Join(strings.Fields(long), " ")
	list := regexp.MustCompile(`Faults \(--fault SPEC, every device\): (.*?)\. All but`).FindStringSubmatch(flat)
	none := regexp.MustCompile(`All but (.*?) take "/P%"`).FindStringSubmatch(flat)
	if list == nil || none == nil {
		t.Fatalf("help has no fault list or no word on /P%%:\n%s", long)
	}
	var said []string
	for _, k := range strings.FieldsFunc(none[1], func(r rune) bool { return r == ',' || r == ' ' }) {
		if k != "and" {
			said = append(said, k)
		}
	}
	var kinds, noChance []string
	for _, ex := range regexp.MustCompile(`[,;] `).Split(list[1], -1) {
		if i := strings.LastIndex(ex, ": "); i >= 0 {
			ex = ex[i+2:] // "HTTP: early-answer@30%"
		}
		ex = regexp.MustCompile(`\[.*\]`).ReplaceAllString(ex, "")
		f, err := sim.ParseFault(ex)
		if err != nil {
			t.Errorf("help example %q: %v", ex, err)
			continue
		}
		kinds = append(kinds, string(f.Kind))
		if _, err := sim.ParseFault(ex + "/50%"); err != nil {
			noChance = append(noChance, string(f.Kind))
		}
	}
	for _, k := range sim.FaultKinds() {
		if !slices.Contains(kinds, string(k)) {
			t.Errorf("help lists no example of %s", k)
		}
	}
	slices.Sort(said)
	slices.Sort(noChance)
	if !slices.Equal(said, noChance) {
		t.Errorf("help says %q take no /P%%; the parser refuses it for %q", said, noChance)
	}
}
