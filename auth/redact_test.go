package auth

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

func TestRedactorVariants(t *testing.T) {
	const user, pw = "admin", "S3cret/Pass+w0rd"
	pair := user + ":" + pw
	var r Redactor
	r.AddBasic(user, NewSecret(pw))
	r.Add(NewSecret("tok-ABCDEF-123"))
	tests := []struct {
		name, in string
	}{
		{"exact", "bad password " + pw},
		{"lower-cased", "bad password " + strings.ToLower(pw)},
		{"upper-cased", "BAD PASSWORD " + strings.ToUpper(pw)},
		{"query-escaped", "p=" + url.QueryEscape(pw)},
		{"path-escaped", "/x/" + url.PathEscape(pw)},
		{"reversed", "drowssap " + reverse(pw)},
		{"base64 of the password", "got " + base64.StdEncoding.EncodeToString([]byte(pw))},
		{"base64 of the Basic pair", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(pair))},
		{"base64 of the pair, lower-cased", "basic " + strings.ToLower(base64.StdEncoding.EncodeToString([]byte(pair)))},
		{"base64url of the pair, unpadded", base64.RawURLEncoding.EncodeToString([]byte(pair))},
		{"reversed base64 of the pair", reverse(base64.StdEncoding.EncodeToString([]byte(pair)))},
		{"the pair URL-encoded", "u=" + url.QueryEscape(pair)},
		{"the pair reversed", reverse(pair)},
		{"token in a version", "1.2.0-tok-abcdef-123"},
		{"token reversed", reverse("tok-ABCDEF-123")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.Redact(tt.in)
			if !strings.Contains(got, Redacted) {
				t.Errorf("Redact(%q) = %q: nothing redacted", tt.in, got)
			}
			for _, leak := range []string{pw, strings.ToLower(pw), "S3cret", "tok-ABCDEF", "tok-abcdef", reverse(pw)} {
				if strings.Contains(strings.ToLower(got), strings.ToLower(leak)) {
					t.Errorf("Redact(%q) = %q: still holds %q", tt.in, got, leak)
				}
			}
		})
	}
	if r.HasShort() {
		t.Error("HasShort with secrets of 14 and 16 bytes")
	}
	if got := r.Redact("user admin, version 1.0"); got != "user admin, version 1.0" {
		t.Errorf("text without a secret changed: %q", got)
	}
}

func TestRedactorShortSecret(t *testing.T) {
	var r Redactor
	r.AddBasic("admin", NewSecret("Pw1"))
	if !r.HasShort() {
		t.Fatal("HasShort = false for a 3-byte secret")
	}
	for in, want := range map[string]string{
		"x Pw1 y": "x [redacted] y",
		"Pw1":     "[redacted]",
		"(Pw1)":   "([redacted])",
		// Wherever its exact text stands, inside other words too: a
		// secret echoed as xPw1 is still the secret (the warning says
		// short secrets may blank out more than themselves).
		"xPw1 Pw12 Pw1": "x[redacted] [redacted]2 [redacted]",
		// Only the exact text: other forms of a short secret would blank
		// out ordinary words.
		"x pw1 y": "x pw1 y",
		"Basic " + base64.StdEncoding.EncodeToString([]byte("admin:Pw1")): "Basic [redacted]",
	} {
		if got := r.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// The Basic pair's base64 holds + and / for many passwords: URL-encoded,
// they become %2B and %2F, and are hidden all the same.
func TestRedactorBase64URLEncoded(t *testing.T) {
	var r Redactor
	r.AddBasic("admin", NewSecret("pa55word?>>"))
	pair := base64.StdEncoding.EncodeToString([]byte("admin:pa55word?>>"))
	for _, in := range []string{url.QueryEscape("Basic " + pair), url.PathEscape(pair), url.QueryEscape(pair)} {
		if got := r.Redact("denied " + in); strings.Contains(got, "YWRtaW46cGE1NXdvcmQ") {
			t.Errorf("Redact(%q) = %q", in, got)
		}
	}
}

func TestRedactorZeroAndNil(t *testing.T) {
	var nilR *Redactor
	var zero Redactor
	zero.Add(Secret{})
	for _, r := range []*Redactor{nilR, &zero} {
		if got := r.Redact("abc"); got != "abc" {
			t.Errorf("Redact = %q, want abc", got)
		}
		if r.HasShort() {
			t.Error("HasShort without secrets")
		}
	}
}

// A secret holding JSON's special characters is found in text already
// encoded as JSON, too.
func TestRedactorJSONEncoded(t *testing.T) {
	var r Redactor
	r.Add(NewSecret(`pa"ss\word`))
	got := r.Redact(`{"version":"1.0+pa\"ss\\word"}`)
	if got != `{"version":"1.0+[redacted]"}` {
		t.Errorf("got %s", got)
	}
}
