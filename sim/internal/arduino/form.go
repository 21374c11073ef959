package arduino

import (
	"bytes"
	"errors"
	"net/url"
	"strings"

	"github.com/ots-ota/ots-ota/sim/core"
)

// How the Arduino servers read a request's body, as their parsers do
// (esp8266/Arduino Parsing-impl.h, arduino-esp32 Parsing.cpp,
// ESPAsyncWebServer WebRequest.cpp).

// Part is the file part an upload callback sees (HTTPUpload).
type Part struct {
	// Name is the form field's name, Filename the part's filename=, Type
	// its Content-Type ("text/plain" when it has none, on the sync servers).
	Name, Filename, Type string
	// Total is how many bytes the callback was handed so far.
	Total int64
}

// Phase is HTTPUpload's status.
type Phase int

// The upload phases.
const (
	PhaseStart   Phase = iota // UPLOAD_FILE_START
	PhaseWrite                // UPLOAD_FILE_WRITE: one buffer of data
	PhaseEnd                  // UPLOAD_FILE_END
	PhaseAborted              // UPLOAD_FILE_ABORTED: the client went away
)

// UploadFunc is a route's upload callback. An error stops reading the
// request: the connection is dropped without an answer (a fault cut it).
type UploadFunc func(ph Phase, p *Part, data []byte) error

// ErrStop from an UploadFunc: stop here, answer nothing.
var ErrStop = errors.New("stop reading the request")

// uploadBufLen is HTTP_UPLOAD_BUFLEN: how much file data each write
// callback of a sync server carries.
func (w *Web) uploadBufLen() int {
	if w.Kind == ESP8266WebServer {
		return 2048
	}
	return 1436
}

// asyncBufLen is ESPAsyncWebServer's RESPONSE_STREAM_BUFFER_SIZE.
const asyncBufLen = 1460

// PlainMax is the largest non-multipart body the sim lets a sync server
// hold: the servers read such a body into one String, and one the heap
// cannot hold ends the request without an answer. The real bound is the
// free heap of the sketch (derived; the number is the sim's).
const PlainMax = 8 << 10

// ReadBody is a sync server's reading of a request's body before its
// handler runs (POST, PUT, PATCH, DELETE; other methods carry none): a
// multipart body part by part, file parts through up (nil: read and
// dropped); any other body into RAM. false: the server drops the client
// without an answer. A body too large for the heap, as a raw firmware is
// (issue 18), is read to its end and never answered: the connection closes
// after Timing.RecvTimeout (HTTP_MAX_POST_WAIT).
func (w *Web) ReadBody(r *core.Request, up UploadFunc) bool {
	switch r.Method() {
	case "POST", "PUT", "PATCH", "DELETE":
	default:
		return true
	}
	ct, _ := r.Header("Content-Type")
	ct = strings.TrimSpace(ct)
	if !strings.HasPrefix(ct, "multipart/") {
		if r.ContentLength() <= PlainMax {
			Drain(r)
			return r.Context().Err() == nil
		}
		Drain(r)
		core.Sleep(r.Context(), w.wait)
		return false
	}
	boundary := ct
	if i := strings.IndexByte(ct, '='); i >= 0 {
		boundary = ct[i+1:]
	}
	boundary = strings.ReplaceAll(boundary, `"`, "")
	b := &body{r: r}
	return w.parseForm(b, boundary, up)
}

// Drain reads and drops what is left of the body.
func Drain(r *core.Request) {
	buf := make([]byte, 4096)
	for r.Remaining() > 0 {
		n, err := r.Recv(buf)
		if errors.Is(err, core.ErrRecvTimeout) {
			if r.Context().Err() != nil {
				return
			}
			continue
		}
		if err != nil || n == 0 {
			return
		}
	}
}

// body reads a request's body (Content-Length bytes) through Recv.
type body struct {
	r    *core.Request
	buf  [4096]byte
	i, n int
	eof  bool
	gone bool // the client went away before the end of its body
}

// fill reads more; false at the end of the body (or when the client went
// away, or the device is going down).
func (b *body) fill() bool {
	if b.eof {
		return false
	}
	for {
		n, err := b.r.Recv(b.buf[:])
		if errors.Is(err, core.ErrRecvTimeout) {
			// The sync servers wait for a connected client's data.
			if b.r.Context().Err() != nil {
				b.eof = true
				return false
			}
			continue
		}
		if err != nil || n == 0 {
			b.eof = true
			b.gone = err != nil || b.r.Remaining() > 0
			return false
		}
		b.i, b.n = 0, n
		return true
	}
}

// readByte reads one byte; false at the end.
func (b *body) readByte() (byte, bool) {
	if b.i >= b.n && !b.fill() {
		return 0, false
	}
	c := b.buf[b.i]
	b.i++
	return c, true
}

// until is Stream::readStringUntil(delim): the bytes before delim, delim
// dropped; at the end of the body what was read, and false.
func (b *body) until(delim byte) (string, bool) {
	var out []byte
	for {
		if b.i >= b.n && !b.fill() {
			return string(out), false
		}
		if k := bytes.IndexByte(b.buf[b.i:b.n], delim); k >= 0 {
			out = append(out, b.buf[b.i:b.i+k]...)
			b.i += k + 1
			return string(out), true
		}
		out = append(out, b.buf[b.i:b.n]...)
		b.i = b.n
		if len(out) > 64<<10 {
			// A String that large gives out in the heap; the sim keeps the
			// end only, which is what the parser compares.
			out = out[len(out)-4096:]
		}
	}
}

// line reads one CRLF line as the sync parsers do: up to '\r', then
// through '\n'.
func (b *body) line() (string, bool) {
	s, ok := b.until('\r')
	if !ok {
		return s, false
	}
	_, ok = b.until('\n')
	return s, ok
}

// parseForm is _parseForm of the sync servers.
func (w *Web) parseForm(b *body, boundary string, up UploadFunc) bool {
	var line string
	var ok bool
	for retry := 0; retry < 3; retry++ {
		if line, ok = b.until('\r'); !ok || line != "" {
			break
		}
	}
	if _, ok2 := b.until('\n'); !ok || !ok2 || line != "--"+boundary {
		return false
	}
	bufLen := w.uploadBufLen()
	for {
		line, ok = b.line()
		if !ok {
			// The device would read empty lines until its watchdog; the
			// client is gone or sent no more, so the request ends here.
			return false
		}
		if len(line) <= 19 || !strings.EqualFold(line[:19], "Content-Disposition") {
			continue
		}
		i := strings.IndexByte(line, '=')
		if i < 0 {
			continue
		}
		argName := substr(line, i+2)
		var part Part
		isFile := false
		if j := strings.IndexByte(argName, '='); j < 0 {
			argName = substrTo(argName, 0, len(argName)-1)
		} else {
			part.Filename = substrTo(argName, j+2, len(argName)-1)
			argName = substrTo(argName, 0, strings.IndexByte(argName, '"'))
			isFile = true
		}
		part.Name = argName
		part.Type = "text/plain"
		line, ok = b.line()
		if !ok {
			return false
		}
		if len(line) > 12 && strings.EqualFold(line[:12], "Content-Type") {
			part.Type = substr(line, strings.IndexByte(line, ':')+2)
			if _, ok = b.line(); !ok { // the blank line, or whatever stands there
				return false
			}
		}
		if !isFile {
			// A field without filename= is a String: its lines up to the
			// next boundary.
			for {
				line, ok = b.line()
				if !ok {
					return false
				}
				if strings.HasPrefix(line, "--"+boundary) {
					break
				}
			}
			if line == "--"+boundary+"--" {
				return true
			}
			continue
		}
		if !w.readFile(b, boundary, bufLen, &part, up) {
			return false
		}
		line, ok = b.line()
		if !ok {
			return false
		}
		if line == "--" {
			return true
		}
	}
}

// readFile streams one file part to up in buffers of bufLen, up to the
// "\r\n--boundary" that ends it; false when the body ended first (the
// callback saw PhaseAborted) or up stopped it.
func (w *Web) readFile(b *body, boundary string, bufLen int, part *Part, up UploadFunc) bool {
	call := func(ph Phase, data []byte) error {
		if up == nil {
			return nil
		}
		return up(ph, part, data)
	}
	if call(PhaseStart, nil) != nil {
		return false
	}
	pat := []byte("\r\n--" + boundary)
	cur := make([]byte, 0, bufLen)
	var stop error
	emit := func(p []byte) {
		for len(p) > 0 && stop == nil {
			if len(cur) == bufLen {
				stop = call(PhaseWrite, cur)
				part.Total += int64(len(cur))
				cur = cur[:0]
				continue
			}
			k := min(bufLen-len(cur), len(p))
			cur = append(cur, p[:k]...)
			p = p[k:]
		}
	}
	matched := 0
	for stop == nil {
		if matched == 0 {
			// Fast path: everything before the next '\r' is data.
			if b.i >= b.n && !b.fill() {
				break
			}
			if k := bytes.IndexByte(b.buf[b.i:b.n], '\r'); k != 0 {
				if k < 0 {
					k = b.n - b.i
				}
				emit(b.buf[b.i : b.i+k])
				b.i += k
				continue
			}
		}
		c, ok := b.readByte()
		if !ok {
			break
		}
		if c == pat[matched] {
			matched++
			if matched == len(pat) {
				if stop = call(PhaseWrite, cur); stop != nil {
					return false
				}
				part.Total += int64(len(cur))
				return call(PhaseEnd, nil) == nil
			}
			continue
		}
		emit(pat[:matched])
		if c == pat[0] {
			matched = 1
		} else {
			emit([]byte{c})
			matched = 0
		}
	}
	if stop == nil {
		_ = call(PhaseAborted, nil)
	}
	return false
}

// substr is String::substring(from): "" past the end.
func substr(s string, from int) string {
	if from < 0 {
		from = 0
	}
	if from >= len(s) {
		return ""
	}
	return s[from:]
}

// substrTo is String::substring(from, to), which swaps a reversed range.
func substrTo(s string, from, to int) string {
	if from > to {
		from, to = to, from
	}
	from, to = max(from, 0), min(to, len(s))
	if from >= to {
		return ""
	}
	return s[from:to]
}

// AsyncFunc is an ESPAsyncWebServer upload callback: one buffer of a file
// part, final on its last (which may be empty).
type AsyncFunc func(p *Part, data []byte, final bool) error

// ReadAsync is ESPAsyncWebServer's reading of a body: a multipart body
// byte by byte through its state machine (a part is a file when it has a
// filename= or a Content-Type; a malformed body is ignored from the first
// byte that does not fit), any other body read and dropped (the route has
// no body handler). false: up stopped it (a fault), answer nothing.
func ReadAsync(r *core.Request, up AsyncFunc) bool { return ReadAsyncForm(r, nil, up) }

// ReadAsyncForm is ReadAsync that also hands each field that is no file to
// field when its part ends (the server adds it to the request's params
// then, so an upload callback sees the fields sent before its file part,
// and only those).
func ReadAsyncForm(r *core.Request, field func(name, value string), up AsyncFunc) bool {
	ct, _ := r.Header("Content-Type")
	ct = strings.TrimSpace(ct)
	if !strings.HasPrefix(strings.ToLower(ct), "multipart/") {
		Drain(r)
		return r.Remaining() == 0 && r.Context().Err() == nil
	}
	boundary := ct
	if i := strings.Index(ct, "boundary="); i >= 0 {
		boundary = ct[i+len("boundary="):]
	}
	boundary = strings.Trim(boundary, `"`)
	b := &body{r: r}
	ok := parseAsync(b, boundary, field, up)
	Drain(r)
	// A client gone before the end of its body: the request is deleted
	// unanswered, its upload never got its final call.
	return ok && !b.gone && r.Remaining() == 0 && r.Context().Err() == nil
}

// parseAsync walks the multipart body: "--boundary\r\n" first, then each
// part's headers, its data up to "\r\n--boundary", and "--" or "\r\n".
func parseAsync(b *body, boundary string, field func(name, value string), up AsyncFunc) bool {
	first := "--" + boundary + "\r\n"
	for i := 0; i < len(first); i++ {
		c, ok := b.readByte()
		if !ok || c != first[i] {
			return true // PARSE_ERROR: the rest is ignored
		}
	}
	pat := []byte("\r\n--" + boundary)
	for {
		var part Part
		isFile := false
		for {
			h, ok := b.until('\n')
			if !ok {
				return true
			}
			h = strings.TrimSuffix(h, "\r")
			if h == "" {
				break
			}
			switch {
			case len(h) > 12 && strings.EqualFold(h[:12], "Content-Type"):
				part.Type = substr(h, 14)
				isFile = true
			case len(h) > 19 && strings.EqualFold(h[:19], "Content-Disposition"):
				for _, kv := range strings.Split(h[strings.IndexByte(h, ';')+1:], ";") {
					k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
					v = strings.Trim(v, `"`)
					switch k {
					case "name":
						part.Name = v
					case "filename":
						part.Filename = v
						isFile = true
					}
				}
			}
		}
		cur := make([]byte, 0, asyncBufLen)
		var value []byte // a field's value (kept short, as the server's String)
		flush := func(final bool) error {
			if !isFile {
				if len(value) < 4096 {
					value = append(value, cur[:min(len(cur), 4096-len(value))]...)
				}
				if final && field != nil {
					field(part.Name, string(value))
				}
				cur = cur[:0]
				return nil
			}
			if up == nil {
				cur = cur[:0]
				return nil
			}
			err := up(&part, cur, final)
			part.Total += int64(len(cur))
			cur = cur[:0]
			return err
		}
		emit := func(p []byte) error {
			for len(p) > 0 {
				k := min(asyncBufLen-len(cur), len(p))
				cur = append(cur, p[:k]...)
				p = p[k:]
				if len(cur) == asyncBufLen {
					if err := flush(false); err != nil {
						return err
					}
				}
			}
			return nil
		}
		matched := 0
		for {
			c, ok := b.readByte()
			if !ok {
				return true // the body ended inside a part: no final call
			}
			if c == pat[matched] {
				matched++
				if matched == len(pat) {
					break
				}
				continue
			}
			if err := emit(pat[:matched]); err != nil {
				return false
			}
			matched = 0
			if c == pat[0] {
				matched = 1
				continue
			}
			if err := emit([]byte{c}); err != nil {
				return false
			}
		}
		if err := flush(true); err != nil {
			return false
		}
		c1, ok1 := b.readByte()
		c2, ok2 := b.readByte()
		if !ok1 || !ok2 || c1 == '-' && c2 == '-' {
			return true
		}
		if c1 != '\r' || c2 != '\n' {
			return true
		}
	}
}

// Args are the request's query arguments, URL-decoded, in order (the
// sync servers' arg(), the async server's getParam()).
func Args(r *core.Request) []Arg {
	var out []Arg
	for _, kv := range strings.Split(r.Query(), "&") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		out = append(out, Arg{k, v})
	}
	return out
}

// Arg is one query argument.
type Arg struct{ Name, Value string }

// ArgValue is the first argument named name.
func ArgValue(args []Arg, name string) (string, bool) {
	for _, a := range args {
		if a.Name == name {
			return a.Value, true
		}
	}
	return "", false
}
