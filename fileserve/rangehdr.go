package fileserve

import (
	"strconv"
	"strings"
)

// rangeKind is what a request's Range header asks of a file of a given size.
type rangeKind int

const (
	rangeNone          rangeKind = iota // no usable Range: send the whole file (200)
	rangeOne                            // one satisfiable range: 206
	rangeUnsatisfiable                  // one well-formed range past the end: 416
)

// parseRange reads a Range header against a file of size bytes.
//
// Only a single byte range is honoured. Anything else a server may ignore
// (RFC 9110 §14.2) is ignored, and the whole file is sent: a missing or
// malformed header, another unit, and more than one range. Multi-range is
// served as 200 rather than multipart/byteranges because no ESP updater
// asks for it, a 200 with the whole file is correct for every client, and
// x-MD5 and Content-Length then keep their one plain meaning.
func parseRange(h string, size int64) (kind rangeKind, start, length int64) {
	if h == "" {
		return rangeNone, 0, 0
	}
	unit, spec, ok := strings.Cut(h, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return rangeNone, 0, 0
	}
	spec = strings.Trim(spec, " \t")
	if spec == "" || strings.Contains(spec, ",") {
		return rangeNone, 0, 0
	}
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return rangeNone, 0, 0
	}
	if first == "" {
		// Suffix range: the last n bytes.
		n, ok := digits(last)
		if !ok {
			return rangeNone, 0, 0
		}
		if n == 0 || size == 0 {
			return rangeUnsatisfiable, 0, 0
		}
		n = min(n, size)
		return rangeOne, size - n, n
	}
	a, ok := digits(first)
	if !ok {
		return rangeNone, 0, 0
	}
	b := int64(-1)
	if last != "" {
		if b, ok = digits(last); !ok || b < a {
			return rangeNone, 0, 0
		}
	}
	if a >= size {
		return rangeUnsatisfiable, 0, 0
	}
	if b < 0 || b >= size {
		b = size - 1
	}
	return rangeOne, a, b - a + 1
}

// digits parses a non-empty run of ASCII digits (no sign, no space) that
// fits an int64.
func digits(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
