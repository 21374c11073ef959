package discover

import (
	"cmp"
	"strings"
)

// compareNames orders device names as people count: "Main-2" before
// "Main-10". Runs of digits compare by value, the rest without case; names
// equal that way fall back to a plain comparison, so the order is total.
func compareNames(a, b string) int {
	x, y := a, b
	for x != "" && y != "" {
		dx, dy := digitRun(x), digitRun(y)
		if dx > 0 && dy > 0 {
			nx, ny := strings.TrimLeft(x[:dx], "0"), strings.TrimLeft(y[:dy], "0")
			if c := cmp.Or(cmp.Compare(len(nx), len(ny)), strings.Compare(nx, ny)); c != 0 {
				return c
			}
			x, y = x[dx:], y[dy:]
			continue
		}
		tx, ty := textRun(x), textRun(y)
		if c := strings.Compare(strings.ToLower(x[:tx]), strings.ToLower(y[:ty])); c != 0 {
			return c
		}
		x, y = x[tx:], y[ty:]
	}
	return cmp.Or(cmp.Compare(len(x), len(y)), strings.Compare(a, b))
}

func digitRun(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// textRun is the first character, or the run of characters up to a digit.
func textRun(s string) int {
	n := 1
	for n < len(s) && (s[n] < '0' || s[n] > '9') {
		n++
	}
	return n
}
