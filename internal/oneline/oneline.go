// Package oneline makes untrusted text (what a device says) safe to print
// on one line. It is the one cleaner of the client: upload (CleanText) and
// detect quote device text through it.
package oneline

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean makes untrusted device text safe to print on one line: valid
// UTF-8, no control, format (bidi override) or escape characters, runs of
// space collapsed, at most max runes ("…" marks a cut).
func Clean(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	n := 0
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError || !unicode.IsPrint(r) {
			space = b.Len() > 0
			continue
		}
		need := 1
		if space {
			need = 2
		}
		if n+need > max {
			b.WriteString("…")
			return b.String()
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		n += need
	}
	return b.String()
}
