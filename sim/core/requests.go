package core

import (
	"strings"
	"time"
)

// HTTPRequest is one HTTP request a device received, as it came
// (Config.OnRequest).
type HTTPRequest struct {
	Time   time.Time `json:"time"`
	Device string    `json:"device"`
	// Server is the firmware's server that got it ("ota", "web"), Addr
	// its address (host:port).
	Server string `json:"server"`
	Addr   string `json:"addr"`
	Remote string `json:"remote"`
	Method string `json:"method"`
	// URI is the request target as sent; Path is what routes match ("" when
	// the request was refused before its path was read), Query what follows
	// "?" (up to a "#").
	URI   string `json:"uri"`
	Path  string `json:"path,omitempty"`
	Query string `json:"query,omitempty"`
	// Headers are the headers as sent, in order (those read before the
	// device refused a malformed request).
	Headers []Header `json:"headers,omitempty"`
}

// logRequest hands r to Config.OnRequest, one call at a time.
func (d *Device) logRequest(h *httpd, r *Request) {
	fn := d.s.OnRequest
	if fn == nil {
		return
	}
	q := ""
	if _, after, ok := strings.Cut(r.uri, "?"); ok {
		q, _, _ = strings.Cut(after, "#")
	}
	e := HTTPRequest{Time: time.Now(), Device: d.s.Name, Server: h.name, Addr: h.addr,
		Remote: r.remote, Method: r.method, URI: r.uri, Path: r.path, Query: q, Headers: r.headers}
	d.reqMu.Lock()
	defer d.reqMu.Unlock()
	fn(e)
}
