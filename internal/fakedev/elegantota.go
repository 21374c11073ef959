package fakedev

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"sync"
)

// elegantPage is ElegantOTA v3's GET /update: always gzip-encoded, whatever
// the client accepts; the page itself is a stand-in with its title.
var elegantPage = sync.OnceValue(func() []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = io.WriteString(zw, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"UTF-8\"><title>ElegantOTA Lite</title></head><body><div id=\"app\"></div></body></html>")
	_ = zw.Close()
	return b.Bytes()
})

// serveElegant is ElegantOTA v3's routes (research18.md §5): every one
// checks the credentials first.
func (d *WebDevice) serveElegant(w http.ResponseWriter, r *http.Request) {
	switch {
	case d.route(r, "/update") && r.Method == http.MethodGet:
		if d.creds() && !d.authOK(r) {
			d.challenge(w)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write(elegantPage())
	case d.route(r, "/ota/start") && r.Method == http.MethodGet:
		d.elegantStart(w, r)
	case d.route(r, "/ota/upload") && r.Method == http.MethodPost:
		d.elegantUpload(w, r)
	default:
		d.notFound(w, r)
	}
}

// elegantStart is GET /ota/start?mode=fr|fs&hash=MD5: it begins the update
// (never a probe). The hash is only checked for its length: begin() then
// forgets it.
func (d *WebDevice) elegantStart(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	d.starts++
	d.mu.Unlock()
	if d.creds() && !d.authOK(r) {
		d.challenge(w)
		return
	}
	q := r.URL.Query()
	text := func(status int, body string) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
	if q.Has("hash") && len(q.Get("hash")) != 32 {
		text(http.StatusBadRequest, "MD5 parameter invalid")
		return
	}
	fs := q.Get("mode") == "fs"
	size := d.cfg.SlotSize
	if fs {
		size = d.cfg.FSSize
	}
	d.mu.Lock()
	if !d.upd.begin(size, fs) {
		d.eoErr = d.upd.printError() + "\n"
	}
	hasErr, words := d.upd.hasError(), d.eoErr
	d.mu.Unlock()
	if hasErr {
		text(http.StatusBadRequest, words)
		return
	}
	text(http.StatusOK, "OK")
}

// elegantUpload is POST /ota/upload: field name and filename are ignored,
// the bytes go into whatever update /ota/start began (or nowhere, with no
// error), and the answer is 200 OK unless the Update has an error.
func (d *WebDevice) elegantUpload(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	d.uploads++
	d.record("upload")
	d.mu.Unlock()
	c, body := takeUpload(w, r)
	if c == nil {
		return
	}
	authed := !d.creds() || d.authOK(r)
	var img []byte
	took, fs := false, false
	lastFailed := false
	sink := formSink{
		start: func(string, string) {},
		write: func(b []byte) {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.cfg.Async && !authed {
				return // each chunk asks for credentials instead
			}
			// Sync: a failed write is only logged. Async: the chunk handler
			// answers 400 and returns before its final branch (an answer
			// the request handler replaces), also when no update runs.
			lastFailed = !d.upd.write(b) && len(b) > 0
		},
		end: func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.cfg.Async && (!authed || lastFailed) {
				return
			}
			data, isFS := d.upd.data, d.upd.fs
			if !d.upd.end() {
				d.eoErr = d.upd.printError() + "\n"
				return
			}
			took, img, fs = true, data, isFS
		},
		abort: func() {
			// The update stays begun: a retry writes into a stale stream.
		},
	}
	boundary, multipart := formBoundary(r.Header.Get("Content-Type"))
	switch {
	case !multipart && !d.cfg.Async && r.ContentLength > d.cfg.RawBodyLimit:
		// The sync server reads such a body whole into RAM.
		c.Close()
		return
	case !multipart:
		_, _ = io.Copy(io.Discard, body)
	default:
		// The sync parser is strict about part headers; the async one
		// skips those it does not know.
		if err := parseForm(body, boundary, !d.cfg.Async, d.chunk(), sink); err != nil {
			c.Close()
			return
		}
	}
	d.mu.Lock()
	hasErr, words := d.upd.hasError(), d.eoErr
	d.mu.Unlock()
	hdr := [][2]string{{"Connection", "close"}}
	if d.cfg.Async {
		hdr = append(hdr, [2]string{"Access-Control-Allow-Origin", "*"})
	}
	switch {
	case !authed:
		d.challengeReply().write(c)
	case hasErr:
		rawReply{http.StatusBadRequest, append(hdr, [2]string{"Content-Type", "text/plain"}), words}.write(c)
	default:
		rawReply{http.StatusOK, append(hdr, [2]string{"Content-Type", "text/plain"}), "OK"}.write(c)
		var next *Build
		d.mu.Lock()
		switch {
		case took && fs:
			d.fsImages++
			d.record("installed")
		case took:
			next, _ = d.installed(img)
			d.record("installed")
		}
		d.mu.Unlock()
		c.Close()
		// The reboot flag: loop() restarts the device 2 s later.
		d.restartAfter(nil, next, nil)
		return
	}
	c.Close()
}
