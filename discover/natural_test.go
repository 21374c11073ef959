package discover

import (
	"slices"
	"testing"
)

func TestCompareNames(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"Main-2", "Main-10", -1},
		{"Main-10", "Main-2", 1},
		{"OTS Firmware Main", "OTS Firmware Main-2", -1},
		{"ots-sim-09", "ots-sim-10", -1},
		{"kitchen", "Kitchen", 1}, // equal but for case: a plain comparison decides
		{"kitchen", "Workshop", -1},
		{"a02", "a2", -1}, // equal values: the plain comparison decides
		{"a2b", "a2a", 1},
		{"a", "a1", -1},
		{"1", "a", -1},
		{"", "a", -1},
		{"x", "x", 0},
		{"dev99999999999999999999", "dev100000000000000000000", -1}, // beyond int64
	} {
		if got := compareNames(tc.a, tc.b); got != tc.want {
			t.Errorf("compareNames(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	names := []string{"Main-10", "Main-2", "Main", "Main-1", "main-3"}
	slices.SortFunc(names, compareNames)
	if want := []string{"Main", "Main-1", "Main-2", "main-3", "Main-10"}; !slices.Equal(names, want) {
		t.Errorf("sorted %q, want %q", names, want)
	}
}
