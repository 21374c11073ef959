// Package auth is the only place in ots-ota that touches a secret: it holds
// passwords in a type that never prints them, and computes the espota
// challenge/response values from them.
package auth

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// Redacted is what every printing path shows in place of a secret.
const Redacted = "[redacted]"

// Secret holds a password, token or password-equivalent hash. Every way of
// printing it (fmt verbs, slog, encoding via MarshalText) shows only
// [Redacted]; the value is reachable only through [Secret.Reveal].
//
// The value sits behind a pointer so that even when a Secret is an unexported
// field of another struct — where fmt cannot call its methods — a %+v of that
// struct shows an address, never the text. The zero Secret is empty.
type Secret struct {
	v *string
}

// NewSecret wraps s. An empty s gives the empty Secret.
func NewSecret(s string) Secret {
	if s == "" {
		return Secret{}
	}
	return Secret{v: &s}
}

// Reveal returns the secret value for computing with it. Never log or print
// the result.
func (s Secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == nil || *s.v == "" }

// Equal reports whether s and o hold the same value, in constant time with
// respect to the contents (the length may leak, as with any such compare).
func (s Secret) Equal(o Secret) bool { return ConstantTimeEqual(s.Reveal(), o.Reveal()) }

// String implements fmt.Stringer.
func (Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer (%#v).
func (Secret) GoString() string { return Redacted }

// Format implements fmt.Formatter so that every verb (%v %s %q %x %d …)
// prints the redaction marker instead of the value.
func (Secret) Format(f fmt.State, _ rune) { _, _ = fmt.Fprint(f, Redacted) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalText keeps encoders (JSON, YAML, …) from writing the value out.
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// ConstantTimeEqual reports whether a and b are equal without an early exit
// on the first differing byte, so a device-side check of a challenge response
// does not leak how much of it was right. Case-sensitive, like the firmware.
func ConstantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
