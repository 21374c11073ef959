package partition

import (
	"math"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"2M", 2 << 20},
		{"2m", 2 << 20},
		{"2MB", 2 << 20},
		{"2mb", 2 << 20},
		{"2MiB", 2 << 20},
		{"2 MiB", 2 << 20},
		{" 2M ", 2 << 20},
		{"1536K", 1536 << 10},
		{"1536k", 1536 << 10},
		{"1536KB", 1536 << 10},
		{"1536KiB", 1536 << 10},
		{"1G", 1 << 30},
		{"1.5M", 1572864},
		{"0.5K", 512},
		{"1.25m", 1310720},
		{"0x200000", 2097152},
		{"0X200000", 2097152},
		{"0x1b", 0x1b},       // hex digit b, not a byte unit
		{"0x1B", 0x1b},       //
		{"0x800K", 2 << 20},  // hex with unit, as partitions.csv allows
		{"0x800kb", 2 << 20}, //
		{"0o10000000", 2097152},
		{"0b1000", 8},
		{"2097152", 2097152},
		{"2097152B", 2097152},
		{"0", 0},
		{"0B", 0},
		{"8589934592", 8 << 30},
		{"9223372036854775807", math.MaxInt64},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSizeErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty"},
		{"   ", "empty"},
		{"-1", "negative"},
		{"-2M", "negative"},
		{"+2M", "not a number"},
		{"M", "no number"},
		{"KiB", "no number"},
		{"two megs", "not a number"},
		{"2X", "not a number"},
		{"2MM", "not a number"},
		{"1.1K", "not a whole number of bytes"},
		{"1.5", "needs a unit"},
		{"1.", "not a number"},
		{".5M", "not a number"},
		{"1e6", "not a number"},
		{"0100", "leading zero"},
		{"0x", "not a number"},
		{"0xG", "not a number"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999999", "too large"},
		{"8589934592G", "too large"},
		{"0xFFFFFFFFFFFFFFFF", "too large"},
		{"0x10000000000000000", "too large"},
		{"9999999999999999999.5G", "too large"},
		{"1.00000000000000000000000000000000000001M", "too many digits"},
		{"NaN", "not a number"},
		{"inf", "not a number"},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", tc.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSize(%q) error %q lacks %q", tc.in, err, tc.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{2 << 20, "2M"}, {1536 << 10, "1536K"}, {0x1F0000, "1984K"}, {100, "100"}, {0, "0"}, {-5, "-5"}, {3 << 30, "3072M"},
	}
	for _, tc := range tests {
		if got := FormatSize(tc.in); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.in, got, tc.want)
		}
		if tc.in >= 0 {
			if back, err := ParseSize(FormatSize(tc.in)); err != nil || back != tc.in {
				t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", tc.in, back, err)
			}
		}
	}
}
