package upload

import "github.com/ots-ota/ots-ota/internal/oneline"

// CleanText makes untrusted device text safe to print on one line: valid
// UTF-8, no control or escape characters, runs of space collapsed, at most
// max runes ("…" marks a cut). The transports quote device text through it.
func CleanText(s string, max int) string { return oneline.Clean(s, max) }
