package arduino

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/sim/core"
)

// Kind is which Arduino web server a sketch runs.
type Kind int

// The web servers.
const (
	// ESP8266WebServer is esp8266/Arduino's sync server.
	ESP8266WebServer Kind = iota + 1
	// WebServer is arduino-esp32's sync server.
	WebServer
	// Async is ESPAsyncWebServer (the ESP32Async fork ElegantOTA 3.1.7
	// depends on).
	Async
)

// Sync reports whether the server is one of the cores' sync servers.
func (k Kind) Sync() bool { return k != Async }

// RealmLoginRequired is the realm every one of these servers challenges
// with unless told otherwise.
const RealmLoginRequired = "Login Required"

// Content types.
const (
	TypeHTML  = "text/html"
	TypePlain = "text/plain"
	TypeJSON  = "application/json"
)

// Web is one boot's web server: its kind, and the last Digest challenge it
// sent (what a sync server checks a Digest answer against).
type Web struct {
	Kind Kind
	// wait is HTTP_MAX_POST_WAIT's stand-in: the device's receive timeout.
	wait time.Duration

	mu                   sync.Mutex
	nonce, opaque, realm string
}

// NewWeb is a web server of kind k on e's device as it is after a boot.
func NewWeb(k Kind, e *core.Env) *Web { return &Web{Kind: k, wait: e.Timing().RecvTimeout} }

// Server is the core server definition for this web server on the device's
// upload port.
func (w *Web) Server(routes []core.Route) core.Server {
	return core.Server{Name: "web", Port: core.PortOTA, Routes: routes, NotFound: w.NotFound,
		Concurrent: w.Kind == Async, Continue: w.Kind == Async}
}

// keepAlive is whether a sync ESP8266WebServer keeps the connection: HTTP/1.1
// does, unless a request with a body said otherwise (the server reads
// Connection only while parsing such a request's headers).
func (w *Web) keepAlive(r *core.Request) bool {
	if w.Kind != ESP8266WebServer || r.Minor() < 1 {
		return false
	}
	switch r.Method() {
	case "POST", "PUT", "PATCH", "DELETE":
		if v, ok := r.Header("Connection"); ok {
			return strings.EqualFold(strings.TrimSpace(v), "keep-alive")
		}
	}
	return true
}

// Reply answers as the server frames an answer; what the handler returns
// next: nil keeps the connection (ESP8266WebServer's keep-alive),
// core.ErrClose closes it.
func (w *Web) Reply(r *core.Request, code int, ctype, body string, extra ...core.Header) error {
	var hs []core.Header
	keep := false
	switch w.Kind {
	case Async:
		hs = append(hs, core.Header{Name: "Connection", Value: "close"})
		for _, h := range extra {
			if strings.EqualFold(h.Name, "Connection") {
				continue // addHeader replaces: one Connection header
			}
			hs = append(hs, h)
		}
		if r.Minor() >= 1 {
			hs = append(hs, core.Header{Name: "Accept-Ranges", Value: "none"})
		}
		hs = append(hs, core.Header{Name: "Content-Length", Value: strconv.Itoa(len(body))})
		if ctype != "" {
			hs = append(hs, core.Header{Name: "Content-Type", Value: ctype})
		}
	default:
		if ctype == "" {
			ctype = TypeHTML
		}
		hs = append(hs, core.Header{Name: "Content-Type", Value: ctype})
		hs = append(hs, extra...)
		hs = append(hs, core.Header{Name: "Content-Length", Value: strconv.Itoa(len(body))})
		keep = w.keepAlive(r)
		if keep {
			hs = append(hs, core.Header{Name: "Connection", Value: "keep-alive"},
				core.Header{Name: "Keep-Alive", Value: "timeout=2000"})
		} else {
			hs = append(hs, core.Header{Name: "Connection", Value: "close"})
		}
	}
	if err := r.SendRaw(code, r.Minor(), hs, body); err != nil || !keep {
		return core.ErrClose
	}
	return nil
}

// NotFound is the server's answer to what no route takes: the sync
// servers read the body first as they read any request's (a multipart
// body part by part, another into RAM), then 404 text/html
// "Not found: <path>"; the async server 404 text/plain "Not found".
func (w *Web) NotFound(r *core.Request) error {
	if w.Kind == Async {
		Drain(r)
		return w.Reply(r, 404, TypePlain, "Not found")
	}
	if !w.ReadBody(r, nil) {
		return core.ErrClose
	}
	return w.Reply(r, 404, TypeHTML, "Not found: "+r.Path())
}

// --- authentication ----------------------------------------------------------

// Authenticate is the server's authenticate(user, pass): Basic, or Digest
// (sync servers: against their last Digest challenge; async: any nonce).
func (w *Web) Authenticate(r *core.Request, user, pass string) bool {
	v, ok := r.Header("Authorization")
	if !ok {
		return false
	}
	v = strings.TrimSpace(v)
	switch {
	case strings.HasPrefix(v, "Basic"):
		got := strings.TrimSpace(strings.TrimPrefix(v, "Basic"))
		want := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
	case strings.HasPrefix(v, "Digest"):
		return w.digestOK(r, v, user, pass)
	}
	return false
}

// digestOK checks a Digest answer as the server does.
func (w *Web) digestOK(r *core.Request, v, user, pass string) bool {
	p := digestParams(strings.TrimPrefix(v, "Digest"))
	if p["username"] != user {
		return false
	}
	realm, nonce, uri, resp, opaque := p["realm"], p["nonce"], p["uri"], p["response"], p["opaque"]
	qop := p["qop"] != ""
	if w.Kind.Sync() {
		if realm == "" || nonce == "" || uri == "" || resp == "" || opaque == "" {
			return false
		}
		w.mu.Lock()
		sn, so, sr := w.nonce, w.opaque, w.realm
		w.mu.Unlock()
		if sn == "" || nonce != sn || opaque != so || realm != sr {
			return false
		}
		if path, _, _ := strings.Cut(uri, "?"); w.Kind == WebServer && path != r.Path() {
			return false
		}
	} else {
		qop = true // the async server always computes the qop=auth form
	}
	method := r.Method()
	if w.Kind.Sync() {
		switch method {
		case "GET", "POST", "PUT", "DELETE":
		default:
			method = "GET"
		}
	}
	h1 := md5hex(user + ":" + realm + ":" + pass)
	h2 := md5hex(method + ":" + uri)
	want := md5hex(h1 + ":" + nonce + ":" + h2)
	if qop {
		want = md5hex(h1 + ":" + nonce + ":" + p["nc"] + ":" + p["cnonce"] + ":auth:" + h2)
	}
	return subtle.ConstantTimeCompare([]byte(resp), []byte(want)) == 1
}

// digestParams reads `k="v", k=v` pairs.
func digestParams(s string) map[string]string {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimLeft(s, " ,") {
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		k = strings.TrimSpace(k)
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				break
			}
			v, s = rest[1:1+end], rest[2+end:]
		} else {
			v, s, _ = strings.Cut(rest, ",")
			v = strings.TrimSpace(v)
		}
		out[k] = v
	}
	return out
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RequestAuth is requestAuthentication(): 401 with a Basic or Digest
// challenge (realm "" = "Login Required") and an empty body. extra are the
// headers the handler set before (the sync servers send them too).
func (w *Web) RequestAuth(r *core.Request, digest bool, realm string, extra ...core.Header) error {
	if realm == "" {
		realm = RealmLoginRequired
	}
	challenge := `Basic realm="` + realm + `"`
	if digest {
		nonce, opaque := randomHex(), randomHex()
		if w.Kind.Sync() {
			w.mu.Lock()
			w.nonce, w.opaque, w.realm = nonce, opaque, realm
			w.mu.Unlock()
		}
		challenge = `Digest realm="` + realm + `", qop="auth", nonce="` + nonce + `", opaque="` + opaque + `"`
	} else if w.Kind.Sync() {
		w.mu.Lock()
		w.realm = realm
		w.mu.Unlock()
	}
	hs := append(extra[:len(extra):len(extra)], core.Header{Name: "WWW-Authenticate", Value: challenge})
	ctype := TypeHTML
	if w.Kind == Async {
		ctype = "" // beginResponse(401): no body, no type
	}
	return w.Reply(r, 401, ctype, "", hs...)
}
