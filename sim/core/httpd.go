package core

// A small HTTP/1.1 server that behaves like ESP-IDF's esp_http_server
// (components/esp_http_server: httpd_parse.c, httpd_txrx.c, httpd_uri.c),
// not like net/http. What is mirrored, and why it matters to a client:
//
//   - One request at a time per server: the httpd is a single task, so a
//     second client's request waits (its connection is accepted, nothing is
//     read) until the first handler returns.
//   - Responses are exactly "HTTP/1.1 <status>\r\nContent-Type: <type>\r\n
//     Content-Length: <n>\r\n[extra headers]\r\n<body>": no Date, no Server,
//     no Connection header; httpd_resp_send_err uses text/html.
//   - No "100 Continue": an Expect header is ignored (curl waits its 1 s).
//   - Content-Length absent or Transfer-Encoding chunked → the handler sees
//     content_len 0 (http_parser sets -1, httpd maps it to 0); the chunked
//     body stays in the socket and is parsed as the next request.
//   - Unknown URI → 404 "Nothing matches the given URI"; known URI, other
//     method → 405 "Specified method is invalid for this resource"; the
//     header section over CONFIG_HTTPD_MAX_REQ_HDR_LEN (512) → 431; URI over
//     512 → 414; a stalled header → 408 after the recv timeout. Every error
//     response closes the connection (the error path returns ESP_FAIL).
//   - A handler that fails closes the socket at once, without reading the
//     rest of the body: like lwIP, the kernel then answers the client's
//     further data with RST. A handler that succeeds has the rest of the body
//     purged and the connection kept alive.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const maxURILen = 512 // CONFIG_HTTPD_MAX_URI_LEN

// arduinoHeaderLimit bounds the request line and header section of an
// Arduino web server (Server.NotFound), which reads them into Strings until
// the heap gives out.
const arduinoHeaderLimit = 16 << 10

// scratchSize is the httpd's header scratch buffer (the larger of the URI
// and header limits).
const scratchSize = 512

// maxOpenSockets is HTTPD_DEFAULT_CONFIG's max_open_sockets: with all
// sessions taken the httpd stops accepting (new connections wait in the
// backlog) until one closes.
const maxOpenSockets = 7

var statusLines = map[int]string{
	200: "200 OK",
	302: "302 Found",
	400: "400 Bad Request",
	401: "401 Unauthorized",
	403: "403 Forbidden",
	404: "404 Not Found",
	405: "405 Method Not Allowed",
	408: "408 Request Timeout",
	411: "411 Length Required",
	414: "414 URI Too Long",
	431: "431 Request Header Fields Too Large",
	500: "500 Internal Server Error",
	501: "501 Method Not Implemented",
	503: "503 Service Unavailable",
	505: "505 Version Not Supported",
}

// defaultErrText is httpd_resp_send_err's message when the handler gives none.
var defaultErrText = map[int]string{
	400: "Bad request syntax",
	401: "No permission -- see authorization schemes",
	403: "Request forbidden -- authorization will not help",
	404: "Nothing matches the given URI",
	405: "Specified method is invalid for this resource",
	408: "Server closed this connection",
	411: "Client must specify Content-Length",
	414: "URI is too long",
	431: "Header fields are too long",
	500: "Server has encountered an unexpected error",
	501: "Server does not support this method",
	505: "HTTP version not supported by server",
}

// http_parser's method table (the ones a client may plausibly send).
var knownMethods = map[string]bool{
	"DELETE": true, "GET": true, "HEAD": true, "POST": true, "PUT": true, "CONNECT": true,
	"OPTIONS": true, "TRACE": true, "PATCH": true, "PURGE": true, "COPY": true, "LOCK": true,
	"MKCOL": true, "MOVE": true, "PROPFIND": true, "PROPPATCH": true, "SEARCH": true,
	"UNLOCK": true, "REPORT": true, "MKACTIVITY": true, "CHECKOUT": true, "MERGE": true,
	"M-SEARCH": true, "NOTIFY": true, "SUBSCRIBE": true, "UNSUBSCRIBE": true,
}

// Content types.
const (
	TypeHTML = "text/html" // HTTPD_TYPE_TEXT: the default and what errors use
	TypeJSON = "application/json"
)

// ErrClose from a handler means ESP_FAIL: close the socket now.
var ErrClose = errors.New("close connection")

// ErrRecvTimeout is HTTPD_SOCK_ERR_TIMEOUT from Request.Recv.
var ErrRecvTimeout = errors.New("recv timeout")

// Route is one URI handler (httpd_uri_t): Method and Path (no query)
// select it. Handle returning an error is ESP_FAIL: the socket is closed
// at once; nil keeps the connection for the next request.
type Route struct {
	Method, Path string
	Handle       func(*Request) error
	// Prefix also takes Path + "/…" (ESPAsyncWebServer matches a route's
	// path exactly or as a prefix followed by "/").
	Prefix bool
}

// matches reports whether the route's path takes path.
func (rt *Route) matches(path string) bool {
	if rt.Path == path {
		return true
	}
	return rt.Prefix && strings.HasPrefix(path, rt.Path+"/")
}

// Header is one request or extra response header.
type Header struct{ Name, Value string }

// httpd is one server instance (the OTA port, or the web app).
type httpd struct {
	d        *Device
	name     string
	addr     string // where it listens, across refuse faults too
	routes   []Route
	notFound func(*Request) error // an Arduino web server (Server.NotFound)
	par      bool                 // Server.Concurrent
	cont     bool                 // Server.Continue
	hdrLimit int
	timing   Timing
	log      *slog.Logger
	lock     chan struct{} // held while a request is processed
	sessions chan struct{} // one token per open connection
	ln       *net.TCPListener
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	silent   bool       // stopping for a reset: connections are left open, not closed
	left     []net.Conn // the connections a reset left behind
}

func newHTTPD(d *Device, def Server, ln *net.TCPListener) *httpd {
	ctx, cancel := context.WithCancel(d.ctx)
	return &httpd{
		d: d, name: def.Name, addr: ln.Addr().String(), routes: def.Routes,
		notFound: def.NotFound, par: def.Concurrent, cont: def.Continue,
		hdrLimit: d.s.HeaderLimit, timing: d.s.timing,
		log:      d.log.With("server", def.Name),
		lock:     make(chan struct{}, 1),
		sessions: make(chan struct{}, maxOpenSockets),
		ln:       ln, ctx: ctx, cancel: cancel,
		conns: make(map[net.Conn]struct{}),
	}
}

func (h *httpd) start() {
	h.wg.Add(1)
	go h.acceptLoop(h.ln)
}

// close stops the server and waits for its handlers. For good (silent
// false) it closes the listener and every connection. For a reset (silent
// true) it closes nothing: the chip just stops, so the listener is left to
// the caller (to hold it silent) and the open connections are returned
// untouched, neither closed nor answered.
func (h *httpd) close(silent bool) []net.Conn {
	h.mu.Lock()
	h.silent = silent
	h.mu.Unlock()
	h.cancel()
	h.mu.Lock()
	if silent {
		_ = h.ln.SetDeadline(aLongTimeAgo) // wakes Accept
	} else {
		h.ln.Close()
	}
	for c := range h.conns {
		if silent {
			_ = c.SetDeadline(aLongTimeAgo) // wakes the handler, keeps the socket
		} else {
			c.Close()
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
	if silent {
		_ = h.ln.SetDeadline(time.Time{})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	left := h.left
	h.left = nil
	return left
}

// drop ends a connection: closed, or left behind during a reset. h.mu is held.
func (h *httpd) dropLocked(c net.Conn) {
	if h.silent {
		h.left = append(h.left, c)
		return
	}
	c.Close()
}

// closeListener stops accepting but leaves connections alone (refuse fault).
func (h *httpd) closeListener() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ln.Close()
}

// reopen accepts again on ln after closeListener.
func (h *httpd) reopen(ln *net.TCPListener) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctx.Err() != nil {
		ln.Close()
		return
	}
	h.ln = ln
	h.wg.Add(1)
	go h.acceptLoop(ln)
}

func (h *httpd) acceptLoop(ln *net.TCPListener) {
	defer h.wg.Done()
	for {
		select {
		case h.sessions <- struct{}{}:
		case <-h.ctx.Done():
			return
		}
		c, err := ln.Accept()
		if err != nil {
			<-h.sessions
			if h.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			h.log.Debug("accept", "err", err)
			if !Sleep(h.ctx, 10*time.Millisecond) {
				return
			}
			continue
		}
		h.mu.Lock()
		if h.ctx.Err() != nil {
			h.dropLocked(c)
			h.mu.Unlock()
			<-h.sessions
			return
		}
		h.conns[c] = struct{}{}
		h.mu.Unlock()
		h.wg.Add(1)
		go h.serveConn(c)
	}
}

func (h *httpd) serveConn(c net.Conn) {
	defer h.wg.Done()
	defer func() {
		h.mu.Lock()
		delete(h.conns, c)
		h.dropLocked(c)
		h.mu.Unlock()
		<-h.sessions
	}()
	// readLine enforces the header limits. The buffer is the size of
	// esp_http_server's scratch buffer, so the device holds no more of the
	// body than its TCP window plus what parsing the headers read ahead;
	// the handler's 1024-byte reads bypass it once it is empty.
	br := bufio.NewReaderSize(c, scratchSize)
	for {
		// select(): wait for data without holding the server.
		c.SetReadDeadline(time.Time{})
		if h.ctx.Err() != nil { // close may have set its deadline just before
			return
		}
		if _, err := br.Peek(1); err != nil {
			return
		}
		if h.par {
			if !h.serveOne(c, br) {
				return
			}
			continue
		}
		select {
		case h.lock <- struct{}{}:
		case <-h.ctx.Done():
			return
		}
		keep := h.serveOne(c, br)
		<-h.lock
		if !keep {
			return
		}
	}
}

// Request is one parsed request (httpd_req_t), as a handler sees it.
type Request struct {
	h          *httpd
	ctx        context.Context
	conn       net.Conn
	br         *bufio.Reader
	method     string
	uri, path  string
	headers    []Header
	contentLen int64
	remaining  int64
	remote     string
	responded  bool
	minor      int // the request's HTTP/1.x
}

// serveOne reads, routes and answers one request; false = close the socket.
func (h *httpd) serveOne(c net.Conn, br *bufio.Reader) bool {
	r := &Request{h: h, ctx: h.ctx, conn: c, br: br, remote: c.RemoteAddr().String()}
	code := r.parse()
	if r.method != "" {
		h.d.logRequest(h, r)
	}
	if code != 0 {
		if code > 0 {
			r.SendErr(code, "")
		}
		return false
	}
	if h.cont {
		if v, ok := r.Header("Expect"); ok && strings.EqualFold(strings.TrimSpace(v), "100-continue") {
			c.SetWriteDeadline(time.Now().Add(h.timing.RecvTimeout))
			if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return false
			}
		}
	}
	var matched *Route
	code = 404
	for i := range h.routes {
		rt := &h.routes[i]
		if !rt.matches(r.path) {
			continue
		}
		if rt.Method == r.method {
			matched = rt
			break
		}
		code = 405
	}
	if matched == nil && h.notFound != nil {
		matched = &Route{Handle: h.notFound}
	}
	if matched == nil {
		h.log.Debug("no handler", "method", r.method, "uri", r.uri, "status", code)
		r.SendErr(code, "")
		return false
	}
	if err := matched.Handle(r); err != nil {
		if r.responded && r.remaining > 0 {
			Sleep(r.ctx, h.timing.ErrorCloseDelay)
		}
		return false
	}
	// httpd_req_delete: purge what the handler did not read.
	buf := make([]byte, 256)
	for r.remaining > 0 {
		n, err := r.Recv(buf)
		if errors.Is(err, ErrRecvTimeout) {
			continue
		}
		if err != nil || n == 0 {
			return false
		}
	}
	return true
}

// parse reads the request line and headers. It returns 0 on success, an
// HTTP status to answer with, or -1 to close silently (client went away).
func (r *Request) parse() int {
	limit := r.h.hdrLimit
	arduino := r.h.notFound != nil
	if arduino {
		limit = arduinoHeaderLimit
	}
	r.conn.SetReadDeadline(time.Now().Add(r.h.timing.RecvTimeout))
	lineMax := maxURILen + 32
	if arduino {
		lineMax = arduinoHeaderLimit
	}
	line, code := r.readLine(lineMax)
	if code != 0 {
		if arduino {
			return -1 // the String grows until the heap gives out: no answer
		}
		if code == 431 {
			code = 414 // still in the request line
		}
		return code
	}
	parts := strings.Split(line, " ")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		if arduino {
			return -1 // "Invalid request": the client is stopped
		}
		return 400
	}
	r.method, r.uri = parts[0], parts[1]
	major, minor, ok := parseHTTPVersion(parts[2])
	if arduino {
		// Any method token and version: the Arduino servers map what they
		// do not know to GET, and answer HTTP/1.x as asked.
		r.minor = 1
		if ok && major == 1 {
			r.minor = minor
		}
	} else {
		if !knownMethods[r.method] {
			return 400 // http_parser rejects the method token
		}
		if len(r.uri) > maxURILen {
			return 414
		}
		if !ok {
			return 400
		}
		if major != 1 && minor != 1 { // verify_url's (odd) test, kept as is
			return 505
		}
		r.minor = minor
	}
	r.path = r.uri
	if strings.HasPrefix(r.path, "http://") || strings.HasPrefix(r.path, "https://") {
		// absolute-form: http_parser_parse_url gives the path part
		rest := r.path[strings.Index(r.path, "//")+2:]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			r.path = rest[i:]
		} else {
			r.path = "/"
		}
	}
	if i := strings.IndexAny(r.path, "?#"); i >= 0 {
		r.path = r.path[:i]
	}
	if r.path == "" || r.path[0] != '/' {
		if arduino {
			return -1
		}
		return 400
	}
	total := 0
	var cl string
	haveCL, chunked := false, false
	for {
		l, code := r.readLine(limit - total + 2)
		if code != 0 {
			if arduino {
				return -1
			}
			return code
		}
		total += len(l) + 2
		if l == "" {
			break
		}
		if total > limit {
			if arduino {
				return -1
			}
			return 431
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			if arduino {
				// A line without ":" ends the Arduino servers' header loop;
				// the sim refuses it rather than guess at what follows.
				return -1
			}
			return 400
		}
		// http_parser skips the whitespace before a value and
		// httpd_find_hdr_value skips spaces; nothing trims the end, so a
		// trailing space is part of the value ("Bearer secret " is a 403).
		value = strings.TrimLeft(value, " \t")
		r.headers = append(r.headers, Header{name, value})
		switch strings.ToLower(name) {
		case "content-length":
			if haveCL && value != cl {
				return 400
			}
			haveCL, cl = true, value
		case "transfer-encoding":
			if strings.Contains(strings.ToLower(value), "chunked") {
				chunked = true
			}
		}
	}
	if chunked && haveCL && !arduino {
		return 400
	}
	if haveCL {
		cl = strings.TrimRight(cl, " \t") // http_parser's h_content_length skips spaces
		n, err := strconv.ParseInt(cl, 10, 64)
		if arduino && (err != nil || n < 0) {
			n, err = 0, nil // String.toInt(): 0 for what is not a number
		}
		if err != nil || n < 0 || strings.HasPrefix(cl, "+") {
			return 400
		}
		r.contentLen = n
	}
	r.remaining = r.contentLen
	return 0
}

// readLine reads one CRLF- (or LF-) terminated line of at most max bytes.
func (r *Request) readLine(max int) (string, int) {
	var line []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max+2 {
			return "", 431
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if isTimeout(err) {
			return "", 408
		}
		return "", -1
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	return string(line), 0
}

func parseHTTPVersion(s string) (int, int, bool) {
	v, ok := strings.CutPrefix(s, "HTTP/")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(v, ".")
	if !ok || len(a) != 1 || len(b) != 1 || a[0] < '0' || a[0] > '9' || b[0] < '0' || b[0] > '9' {
		return 0, 0, false
	}
	return int(a[0] - '0'), int(b[0] - '0'), true
}

// Header returns the first header named name (case-insensitive), like
// httpd_req_get_hdr_value_str.
func (r *Request) Header(name string) (string, bool) {
	for _, h := range r.headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

// Method is the request's method token.
func (r *Request) Method() string { return r.method }

// URI is the request target as sent.
func (r *Request) URI() string { return r.uri }

// Query is what follows "?" in the URI (up to a "#"), "" when nothing does.
func (r *Request) Query() string {
	_, q, ok := strings.Cut(r.uri, "?")
	if !ok {
		return ""
	}
	q, _, _ = strings.Cut(q, "#")
	return q
}

// Minor is the request's HTTP/1.x minor version (0 or 1).
func (r *Request) Minor() int { return r.minor }

// Remaining is how many body bytes (per Content-Length) are still unread.
func (r *Request) Remaining() int64 { return r.remaining }

// Context ends when the server stops (a reset, the device closing).
func (r *Request) Context() context.Context { return r.ctx }

// Conn is the client's connection.
func (r *Request) Conn() net.Conn { return r.conn }

// Path is the URI's path, without query or fragment.
func (r *Request) Path() string { return r.path }

// Remote is the client's address, host:port.
func (r *Request) Remote() string { return r.remote }

// ContentLength is what the client announced: 0 without Content-Length,
// and for a chunked body (http_parser's -1, which httpd maps to 0).
func (r *Request) ContentLength() int64 { return r.contentLen }

// Recv is httpd_req_recv: at most len(buf) bytes of the remaining body, one
// read; ErrRecvTimeout after the recv timeout; io.EOF when the client closed.
func (r *Request) Recv(buf []byte) (int, error) {
	if r.remaining <= 0 {
		return 0, nil
	}
	if int64(len(buf)) > r.remaining {
		buf = buf[:r.remaining]
	}
	r.conn.SetReadDeadline(time.Now().Add(r.h.timing.RecvTimeout))
	if r.ctx.Err() != nil {
		return 0, r.ctx.Err()
	}
	n, err := r.br.Read(buf)
	r.remaining -= int64(n)
	if n > 0 {
		return n, nil
	}
	if isTimeout(err) {
		return 0, ErrRecvTimeout
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return 0, err
}

// SendJSON answers 200 with v as JSON; a value that cannot be encoded is a 500.
func (r *Request) SendJSON(v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		r.SendErr(500, "")
		return ErrClose
	}
	return r.Send(200, TypeJSON, string(body))
}

// Send is httpd_resp_send: the response, exactly as esp_http_server
// frames it (after any latency fault's delay).
func (r *Request) Send(code int, ctype, body string, extra ...Header) error {
	status, ok := statusLines[code]
	if !ok {
		status = strconv.Itoa(code) + " Unknown"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n", status, ctype, len(body))
	for _, h := range extra {
		fmt.Fprintf(&b, "%s: %s\r\n", h.Name, h.Value)
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return r.write(code, b.Bytes())
}

// SendRaw answers with exactly this status line ("HTTP/1.<minor> <code>
// <reason>"), these headers in this order and body: for servers that frame
// their answers otherwise than esp_http_server (the Arduino web servers).
// The latency fault delays it as Send.
func (r *Request) SendRaw(code, minor int, headers []Header, body string) error {
	status, ok := statusLines[code]
	if !ok {
		status = strconv.Itoa(code) + " Unknown"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.%d %s\r\n", minor, status)
	for _, h := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h.Name, h.Value)
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return r.write(code, b.Bytes())
}

// write sends a framed answer after any latency fault's delay.
func (r *Request) write(code int, msg []byte) error {
	if lat := r.h.d.latency(); lat > 0 {
		Sleep(r.ctx, lat)
	}
	r.conn.SetWriteDeadline(time.Now().Add(r.h.timing.RecvTimeout)) // send_wait_timeout
	if r.ctx.Err() != nil {
		return r.ctx.Err()
	}
	r.responded = true
	_, err := r.conn.Write(msg)
	if err != nil {
		r.h.log.Debug("send", "status", code, "err", err)
	}
	return err
}

// SendErr is httpd_resp_send_err: text/html, the given or the default text.
func (r *Request) SendErr(code int, msg string) error {
	if msg == "" {
		msg = defaultErrText[code]
	}
	return r.Send(code, TypeHTML, msg)
}

// ErrText is httpd_resp_send_err's text for code when the handler gives none.
func ErrText(code int) string { return defaultErrText[code] }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// aLongTimeAgo is a deadline in the past: it wakes blocked calls at once.
var aLongTimeAgo = time.Unix(1, 0)

// Sleep sleeps for d; false when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
