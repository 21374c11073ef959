package auth

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strings"
)

// DigestChallenge is an HTTP Digest challenge (RFC 2617, MD5), as Arduino's
// web servers send it: WWW-Authenticate: Digest realm="…", qop="auth",
// nonce="…", opaque="…".
type DigestChallenge struct {
	Realm, Nonce, Opaque string
	// QOPAuth: the challenge offers qop=auth (else RFC 2069's form).
	QOPAuth bool
}

// ParseDigestChallenge reads a WWW-Authenticate value. ok is false when it
// is no Digest challenge this client can answer: another scheme, no nonce,
// an algorithm other than MD5, or a qop that does not offer auth.
func ParseDigestChallenge(v string) (c DigestChallenge, ok bool) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	if !strings.EqualFold(scheme, "Digest") {
		return c, false
	}
	params := digestParams(rest)
	if a, set := params["algorithm"]; set && !strings.EqualFold(a, "MD5") {
		return c, false
	}
	c.Realm, c.Nonce, c.Opaque = params["realm"], params["nonce"], params["opaque"]
	if q, set := params["qop"]; set {
		for _, o := range strings.Split(q, ",") {
			if strings.EqualFold(strings.TrimSpace(o), "auth") {
				c.QOPAuth = true
			}
		}
		if !c.QOPAuth {
			return c, false
		}
	}
	return c, c.Nonce != ""
}

// digestParams splits `k=v, k="v, w"` into its pairs (keys lower-cased).
func digestParams(s string) map[string]string {
	m := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		k, rest, found := strings.Cut(s, "=")
		if !found {
			break
		}
		k = strings.ToLower(strings.TrimSpace(strings.TrimLeft(k, ", ")))
		rest = strings.TrimLeft(rest, " ")
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				v, rest = rest[1:], ""
			} else {
				v, rest = rest[1:1+end], rest[2+end:]
			}
		} else {
			v, rest, _ = strings.Cut(rest, ",")
			v = strings.TrimSpace(v)
		}
		m[k] = v
		s = strings.TrimLeft(rest, ", ")
	}
	return m
}

// DigestAuthorization is the Authorization value that answers c for a
// request of method to uri (the request target as sent, with its query)
// by user and password: qop=auth when c offers it, with nc (the count of
// requests made with c's nonce, from 1) and cnonce (a client nonce of hex
// digits), else RFC 2069's form. It reveals the password to nothing but
// the hash. ok is false when user, uri or cnonce cannot be quoted in a
// header (a quote, a backslash or a control character).
func DigestAuthorization(c DigestChallenge, user string, password Secret, method, uri string, nc int, cnonce string) (string, bool) {
	for _, s := range []string{user, uri, cnonce, c.Realm, c.Nonce, c.Opaque} {
		if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || r == '"' || r == '\\' }) {
			return "", false
		}
	}
	ha1 := md5hex(user + ":" + c.Realm + ":" + password.Reveal())
	ha2 := md5hex(method + ":" + uri)
	var b strings.Builder
	fmt.Fprintf(&b, `Digest username="%s", realm="%s", nonce="%s", uri="%s"`, user, c.Realm, c.Nonce, uri)
	if c.QOPAuth {
		ncs := fmt.Sprintf("%08x", nc)
		// nc stays unquoted and followed by a comma: Arduino's servers read
		// it up to the next ",".
		fmt.Fprintf(&b, `, qop=auth, nc=%s, cnonce="%s", response="%s"`, ncs, cnonce,
			md5hex(ha1+":"+c.Nonce+":"+ncs+":"+cnonce+":auth:"+ha2))
	} else {
		fmt.Fprintf(&b, `, response="%s"`, md5hex(ha1+":"+c.Nonce+":"+ha2))
	}
	if c.Opaque != "" {
		fmt.Fprintf(&b, `, opaque="%s"`, c.Opaque)
	}
	return b.String(), true
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
