package cmd

import (
	"slices"
	"testing"
)

func TestSelectorTargets(t *testing.T) {
	for _, c := range []struct {
		in    []string
		rest  []string
		all   bool
		group string
		bad   bool
	}{
		{in: []string{"10.0.0.5", "kitchen"}, rest: []string{"10.0.0.5", "kitchen"}},
		{in: []string{"all"}, all: true},
		{in: []string{"group:lab"}, group: "lab"},
		{in: []string{"group:lab", "group:lab", "extra.local"}, group: "lab", rest: []string{"extra.local"}},
		{in: []string{"group:"}, bad: true},
		{in: []string{"group:lab", "group:roof"}, bad: true},
		{in: []string{"groups:lab", "allx"}, rest: []string{"groups:lab", "allx"}},
	} {
		var sel selectOptions
		rest, err := selectorTargets(&sel, c.in)
		if c.bad {
			if exitCode(err) != ExitUsage {
				t.Errorf("%q: %v, want a usage error", c.in, err)
			}
			continue
		}
		if err != nil || !slices.Equal(rest, c.rest) || sel.All != c.all || sel.Group != c.group {
			t.Errorf("%q: rest %q all %v group %q err %v; want %q %v %q", c.in, rest, sel.All, sel.Group, err, c.rest, c.all, c.group)
		}
	}
}
