package auth

import (
	"strings"
	"testing"
)

// RFC 2617 §3.5's worked example, and the two forms Arduino's servers
// meet: qop=auth (ESPAsyncWebServer's challenge) and RFC 2069 (no qop).
func TestDigestAuthorization(t *testing.T) {
	c, ok := ParseDigestChallenge(`Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"`)
	if !ok || c.Realm != "testrealm@host.com" || !c.QOPAuth || c.Opaque != "5ccc069c403ebaf9f0171e9517f40e41" {
		t.Fatalf("parsed %+v, %v", c, ok)
	}
	got, ok := DigestAuthorization(c, "Mufasa", NewSecret("Circle Of Life"), "GET", "/dir/index.html", 1, "0a4f113b")
	want := `Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"`
	if !ok || got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// RFC 2069: response = MD5(HA1:nonce:HA2).
	c.QOPAuth = false
	got, _ = DigestAuthorization(c, "Mufasa", NewSecret("Circle Of Life"), "GET", "/dir/index.html", 1, "0a4f113b")
	ha1 := md5hex("Mufasa:testrealm@host.com:Circle Of Life")
	if want := md5hex(ha1 + ":dcd98b7102dd2f0e8b11d0f600bfb0c093:" + md5hex("GET:/dir/index.html")); !strings.Contains(got, `response="`+want+`"`) || strings.Contains(got, "qop") {
		t.Fatalf("RFC 2069 form: %s", got)
	}
	if _, ok := DigestAuthorization(c, `a"b`, NewSecret("x"), "GET", "/", 1, "00"); ok {
		t.Error("a user name with a quote was put in the header")
	}
}

func TestParseDigestChallenge(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`Digest realm="Login Required", qop="auth", nonce="0123456789abcdef0123456789abcdef", opaque="fedcba9876543210fedcba9876543210"`, true},
		{`digest realm="r", nonce="n"`, true},
		{`Digest realm="r", nonce="n", algorithm=MD5`, true},
		{`Basic realm="Login Required"`, false},
		{`Digest realm="r"`, false},                               // no nonce
		{`Digest realm="r", nonce="n", algorithm=SHA-256`, false}, // not MD5
		{`Digest realm="r", nonce="n", qop="auth-int"`, false},    // no qop=auth
		{``, false},
	} {
		if _, ok := ParseDigestChallenge(tc.in); ok != tc.ok {
			t.Errorf("ParseDigestChallenge(%q) ok = %v, want %v", tc.in, ok, tc.ok)
		}
	}
}
