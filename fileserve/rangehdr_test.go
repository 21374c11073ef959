package fileserve

import (
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		h             string
		size          int64
		kind          rangeKind
		start, length int64
	}{
		{"", 10, rangeNone, 0, 0},
		{"bytes=0-0", 10, rangeOne, 0, 1},
		{"bytes=0-9", 10, rangeOne, 0, 10},
		{"bytes=0-100", 10, rangeOne, 0, 10},
		{"bytes=3-", 10, rangeOne, 3, 7},
		{"bytes=9-", 10, rangeOne, 9, 1},
		{"bytes=10-", 10, rangeUnsatisfiable, 0, 0},
		{"bytes=10-20", 10, rangeUnsatisfiable, 0, 0},
		{"bytes=-1", 10, rangeOne, 9, 1},
		{"bytes=-10", 10, rangeOne, 0, 10},
		{"bytes=-11", 10, rangeOne, 0, 10},
		{"bytes=-0", 10, rangeUnsatisfiable, 0, 0},
		{"bytes=-5", 0, rangeUnsatisfiable, 0, 0},
		{"bytes=0-", 0, rangeUnsatisfiable, 0, 0},
		{"Bytes=1-2", 10, rangeOne, 1, 2},
		{" bytes = 1-2 ", 10, rangeOne, 1, 2},
		{"bytes=1-2,4-5", 10, rangeNone, 0, 0},
		{"bytes=1-2,", 10, rangeNone, 0, 0},
		{"bytes=", 10, rangeNone, 0, 0},
		{"bytes=-", 10, rangeNone, 0, 0},
		{"bytes=2-1", 10, rangeNone, 0, 0},
		{"bytes=a-1", 10, rangeNone, 0, 0},
		{"bytes=1-a", 10, rangeNone, 0, 0},
		{"bytes=-a", 10, rangeNone, 0, 0},
		{"bytes=+1-2", 10, rangeNone, 0, 0},
		{"bytes=1--2", 10, rangeNone, 0, 0},
		{"bytes=1 -2", 10, rangeNone, 0, 0},
		{"bytes=0x1-2", 10, rangeNone, 0, 0},
		{"bytes=99999999999999999999-", 10, rangeNone, 0, 0},
		{"bytes=-99999999999999999999", 10, rangeNone, 0, 0},
		{"bytes=9223372036854775807-", 10, rangeUnsatisfiable, 0, 0},
		{"bytes=-9223372036854775807", 10, rangeOne, 0, 10},
		{"bytes 0-1", 10, rangeNone, 0, 0},
		{"items=0-1", 10, rangeNone, 0, 0},
		{"bytes=0-1=2", 10, rangeNone, 0, 0},
	}
	for _, tc := range tests {
		k, a, n := parseRange(tc.h, tc.size)
		if k != tc.kind || a != tc.start || n != tc.length {
			t.Errorf("parseRange(%q, %d) = %v %d %d, want %v %d %d", tc.h, tc.size, k, a, n, tc.kind, tc.start, tc.length)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=-5", "bytes=5-", "bytes=1-2,3-4", "bytes=10-", "bytes=-0", "x"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		k, a, n := parseRange(h, size)
		switch k {
		case rangeOne:
			// A 206 never reads outside the file and always sends a byte.
			if a < 0 || n < 1 || a > size-n {
				t.Fatalf("parseRange(%q, %d) = %d+%d: outside the file", h, size, a, n)
			}
		case rangeNone, rangeUnsatisfiable:
			if a != 0 || n != 0 {
				t.Fatalf("parseRange(%q, %d) = %v with %d+%d", h, size, k, a, n)
			}
			if k == rangeUnsatisfiable && strings.Contains(h, ",") {
				t.Fatalf("parseRange(%q): multi-range must be served whole, not refused", h)
			}
		default:
			t.Fatalf("parseRange(%q, %d): kind %v", h, size, k)
		}
	})
}
