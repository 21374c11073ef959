package partition

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes ParseSize accepts, all powers of 1024: flash
// sizes are binary, and ESP-IDF/esptool spell 4 MiB as "4M" or "4MB".
var sizeUnits = []struct {
	names []string
	mult  int64
}{
	{[]string{"gib", "gb", "g"}, 1 << 30},
	{[]string{"mib", "mb", "m"}, 1 << 20},
	{[]string{"kib", "kb", "k"}, 1 << 10},
	{[]string{"b"}, 1},
}

// ParseSize reads a byte count such as a slot size given on the command line.
//
// Accepted forms:
//   - a decimal integer: "2097152";
//   - a hex, octal or binary integer: "0x200000", "0o10000000", "0b1…";
//   - any of these followed by a unit, case-insensitive: K, M, G, optionally
//     followed by B or iB ("2M", "2m", "2MB", "2MiB", "1536K", "0x800K").
//     All units are binary (K = 1024, M = 1048576): flash is sized in powers
//     of two and esptool's "--flash_size 4MB" means 4 MiB, so "MB" does too.
//     A bare "B" suffix means bytes;
//   - a decimal fraction with a unit when the result is a whole number of
//     bytes: "1.5M" = 1572864, "0.5K" = 512; "1.1K" is an error.
//
// Rejected: empty input, negative numbers, decimal integers with a leading
// zero ("0100" would be octal in C and decimal elsewhere, so it is ambiguous),
// values above math.MaxInt64, and anything else.
func ParseSize(s string) (int64, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty size")
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("size %q is negative", orig)
	}
	num, mult := s, int64(1)
	lower := strings.ToLower(s)
	for _, u := range sizeUnits {
		found := false
		for _, n := range u.names {
			// A hex number may end in "b" ("0x1b"): only a non-hex-digit
			// suffix, or one after a decimal number, is a unit.
			if strings.HasSuffix(lower, n) && !isHexNumber(lower) {
				num, mult, found = strings.TrimSpace(s[:len(s)-len(n)]), u.mult, true
				break
			}
		}
		if found {
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("size %q has a unit but no number", orig)
	}
	n, err := parseSizeNumber(num, mult)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", orig, err)
	}
	return n, nil
}

// isHexNumber reports whether s is entirely a 0x… literal, so a trailing
// "b" is a digit rather than a unit.
func isHexNumber(s string) bool {
	if !strings.HasPrefix(s, "0x") || len(s) == 2 {
		return false
	}
	for _, c := range s[2:] {
		if !strings.ContainsRune("0123456789abcdef_", c) {
			return false
		}
	}
	return true
}

// parseSizeNumber parses the number part of ParseSize and multiplies it.
func parseSizeNumber(num string, mult int64) (int64, error) {
	if len(num) > 1 && num[0] == '0' && strings.ContainsRune("xXoObB", rune(num[1])) {
		v, err := strconv.ParseUint(num, 0, 64)
		if err != nil {
			return 0, numError(err)
		}
		return mulSize(v, mult)
	}
	intPart, frac, hasDot := strings.Cut(num, ".")
	if intPart == "" || !allDigits(intPart) || (hasDot && (frac == "" || !allDigits(frac))) {
		return 0, errors.New("not a number (want e.g. 2M, 1536K, 0x200000 or 2097152)")
	}
	if len(intPart) > 1 && intPart[0] == '0' {
		return 0, errors.New("leading zero is ambiguous (write 0o… for octal, or drop the zero)")
	}
	if !hasDot {
		v, err := strconv.ParseUint(intPart, 10, 64)
		if err != nil {
			return 0, numError(err)
		}
		return mulSize(v, mult)
	}
	if mult == 1 {
		return 0, errors.New("a fraction needs a unit (K, M or G)")
	}
	if len(num) > 32 {
		return 0, errors.New("too many digits")
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, errors.New("not a number")
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, errors.New("not a whole number of bytes")
	}
	if !r.Num().IsInt64() {
		return 0, errors.New("too large")
	}
	return r.Num().Int64(), nil
}

func numError(err error) error {
	if errors.Is(err, strconv.ErrRange) {
		return errors.New("too large")
	}
	return errors.New("not a number (want e.g. 2M, 1536K, 0x200000 or 2097152)")
}

func mulSize(v uint64, mult int64) (int64, error) {
	if v > uint64(math.MaxInt64)/uint64(mult) {
		return 0, errors.New("too large")
	}
	return int64(v) * mult, nil
}

func allDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// FormatSize renders n the way partitions.csv does: "2M" for whole MiB,
// "24K" for whole KiB, else the plain number. ParseSize reads it back.
// Negative numbers are printed as is.
func FormatSize(n int64) string {
	switch {
	case n > 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "M"
	case n > 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "K"
	default:
		return strconv.FormatInt(n, 10)
	}
}
