package auth

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// MinHiddenLen is the shortest secret whose echoes in other forms (another
// case, URL-encoded, reversed, base64) are hidden too. A shorter one is
// removed only where it appears exactly as it is, as a word of its own:
// hiding its variants, or its text inside other words, would blank out
// ordinary output, so it cannot be hidden reliably.
const MinHiddenLen = 6

// Redactor removes secrets from text a person or a program will read: a
// device's words, versions and status fields, log lines, errors. Devices
// echo what they were sent in many forms (a 403 page quoting the
// Authorization header, a version string holding a token), so for secrets
// of at least MinHiddenLen bytes it also removes, in any letter case: the
// URL-encoded forms (query and path escaping), the reversed text, base64
// (standard and URL alphabets, padded or not) of the secret and of the
// HTTP Basic pair user:secret, and the reverse of each of those.
//
// It is applied when output is rendered, never to the facts a verdict
// compares. The zero Redactor hides nothing; a nil *Redactor is valid too.
// It is safe for concurrent use.
type Redactor struct {
	mu    sync.RWMutex
	pats  map[string]bool // pattern → case-insensitive
	short bool
	re    *regexp.Regexp // built from pats; nil when none
	exact []string       // patterns a regexp cannot hold
	// shorts are secrets below MinHiddenLen: only their exact text is
	// hidden (wherever it stands), and the user is warned.
	shorts []string
	dirty  bool
}

// Add makes r hide s (and, when s is long enough, its variants).
func (r *Redactor) Add(s Secret) { r.add("", s) }

// AddBasic makes r hide password and, in base64, the HTTP Basic pair
// user:password that carries it. The user name alone is no secret.
func (r *Redactor) AddBasic(user string, password Secret) { r.add(user, password) }

func (r *Redactor) add(user string, s Secret) {
	v := s.Reveal()
	if v == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pats == nil {
		r.pats = map[string]bool{}
	}
	r.dirty = true
	if len(v) < MinHiddenLen {
		r.short = true
		if !slices.Contains(r.shorts, v) {
			r.shorts = append(r.shorts, v)
		}
		if user != "" {
			// The pair is long even when the password is not.
			for _, b := range base64s(user + ":" + v) {
				r.pats[b] = r.pats[b] || false
			}
		}
		return
	}
	var forms []string
	encoded := base64s(v)
	if user != "" {
		encoded = append(encoded, base64s(user+":"+v)...)
	}
	// Each form also URL-escaped: a device may echo a header value, a
	// base64 with + and / included, inside a URL.
	for _, f := range append([]string{v}, encoded...) {
		forms = append(forms, f, url.QueryEscape(f), url.PathEscape(f))
	}
	for _, f := range forms {
		for _, g := range []string{f, reverse(f)} {
			r.pats[g] = true
			// As a JSON string holds it, for text already encoded.
			if j := jsonEscaped(g); j != g {
				r.pats[j] = true
			}
		}
	}
}

// jsonEscaped is s as it stands inside a JSON string written without HTML
// escaping (cmd's encoder).
func jsonEscaped(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return s
	}
	out := strings.TrimSuffix(b.String(), "\n")
	return strings.TrimSuffix(strings.TrimPrefix(out, `"`), `"`)
}

// base64s are the standard and URL-alphabet encodings of s without their
// padding, so that the padded and unpadded forms both contain them.
func base64s(s string) []string {
	return []string{
		strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(s)), "="),
		strings.TrimRight(base64.URLEncoding.EncodeToString([]byte(s)), "="),
	}
}

func reverse(s string) string {
	if utf8.ValidString(s) {
		rs := []rune(s)
		slices.Reverse(rs)
		return string(rs)
	}
	b := []byte(s)
	slices.Reverse(b)
	return string(b)
}

// HasShort reports whether a secret shorter than MinHiddenLen was added:
// only its exact text is hidden, and the user should be told.
func (r *Redactor) HasShort() bool {
	if r == nil {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.short
}

// Redact returns s with every secret, and every variant of it, replaced
// by [Redacted].
func (r *Redactor) Redact(s string) string {
	if r == nil || s == "" {
		return s
	}
	re, exact := r.compiled()
	if re != nil {
		s = re.ReplaceAllLiteralString(s, Redacted)
	}
	for _, e := range exact {
		s = strings.ReplaceAll(s, e, Redacted)
	}
	r.mu.RLock()
	shorts := r.shorts
	r.mu.RUnlock()
	for _, w := range shorts {
		s = strings.ReplaceAll(s, w, Redacted)
	}
	return s
}

// RedactAll redacts each string of ss into a new slice (nil stays nil).
func (r *Redactor) RedactAll(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = r.Redact(s)
	}
	return out
}

// compiled is the pattern set as one regexp, longest first so that a long
// form (base64 of the Basic pair) wins over a short one inside it, and
// the patterns no regexp can hold (invalid UTF-8: a password file in
// another encoding), matched exactly.
func (r *Redactor) compiled() (*regexp.Regexp, []string) {
	r.mu.RLock()
	if !r.dirty {
		defer r.mu.RUnlock()
		return r.re, r.exact
	}
	r.mu.RUnlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.dirty {
		return r.re, r.exact
	}
	var alts []string
	r.exact = nil
	for p := range r.pats {
		if utf8.ValidString(p) {
			alts = append(alts, p)
		} else {
			r.exact = append(r.exact, p)
		}
	}
	longestFirst := func(a, b string) int { return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b)) }
	slices.SortFunc(alts, longestFirst)
	slices.SortFunc(r.exact, longestFirst)
	for i, p := range alts {
		alts[i] = regexp.QuoteMeta(p)
		if r.pats[p] {
			alts[i] = "(?i:" + alts[i] + ")"
		}
	}
	r.re = nil
	if len(alts) > 0 {
		r.re = regexp.MustCompile(strings.Join(alts, "|"))
	}
	r.dirty = false
	return r.re, r.exact
}

// StripUserinfo returns s without the user:password@ part of a URL (or of
// a HOST:PORT typed with one), for showing what the user typed. It does
// not need s to parse: everything up to the last "@" after "://" goes, so
// a password holding "/" or "?" is never shown in part. Host names hold
// no "@".
func StripUserinfo(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		i = -3
	}
	rest := s[i+3:]
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		return s[:i+3] + rest[at+1:]
	}
	return s
}
