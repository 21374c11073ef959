// Package fileserve serves one image and its companions to devices that
// fetch it themselves (Tasmota's OtaUrl, and later pulled rollouts).
//
// An image embeds the network's Wi-Fi credentials, and the URL is the only
// thing guarding it: each Server serves only /<token>/<name> for the names
// it was given, under one random token, with no listing and no hint for any
// other path; it binds only the address it is told (never a wildcard unless
// asked), and it stops with the push. The token never appears in full in
// its logs or errors. What devices need from the answer, and what they send
// (their MAC among it), is in docs/fileserve.md.
//
// Besides, it may serve "open" files at /<name> without the token
// (Config.Open, SetOpen): announcements a device polls at a URL fixed
// when it was built (an ESPHome manifest). They hold no image; they do
// hold the image's URL, token included, as the devices must read it.
package fileserve

import (
	"cmp"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ots-ota/ots-ota/internal/oneline"
)

// MaxURLLen is the longest URL a device takes: Tasmota's OtaUrl holds 100
// characters.
const MaxURLLen = 100

// tokenBytes is the token's entropy: 128 bits (≥ 96 asked), 22 characters.
const tokenBytes = 16

// stallTimeout ends a transfer whose client has taken nothing for this
// long, so a vanished device does not hold a file open until Close.
const stallTimeout = 2 * time.Minute

// Config says what to serve and where.
type Config struct {
	// Addr is the "IP:PORT" to bind (PORT 0 = any free port). An IP is
	// required; a wildcard (0.0.0.0, ::) only when the caller means it, and
	// then Advertise must say which address goes into URLs.
	Addr string
	// Files maps a served name (e.g. "fw.bin", "fw-minimal.bin",
	// "fw.bin.gz") to a local file path; nothing else is served. Names are
	// letters, digits, '.', '_' and '-', not starting with '.'.
	Files map[string]string
	// OnFetch, if set, is called once per request after it is answered,
	// refused ones too, from the request's goroutine (so concurrently for
	// concurrent requests; it should return quickly, and must not call
	// Close, which waits for it). It is never called after Close has
	// returned.
	OnFetch func(Fetch)
	// OnStart, if set, is called when a GET is answered with a body (200
	// or 206), after the headers and before the body goes: the Fetch as
	// far as it is known (Bytes 0, no Duration). A caller shows the
	// fetch's start with it; OnFetch follows for the same request, from the
	// same goroutine. The rules of OnFetch apply. (Addition.)
	OnStart func(Fetch)
	// Logger receives one Info line per request (never the token) and
	// Debug detail; nil logs nothing.
	Logger *slog.Logger
	// Advertise, if valid, is the IP put in URLs instead of the bound one;
	// required when Addr is a wildcard. (Addition to the session's API.)
	Advertise netip.Addr
	// Token, if not "", is the URL token to serve under instead of a new
	// random one: a resumed rollout serves the URLs its devices were told.
	// At least 22 characters of the URL-safe base64 alphabet. (Addition to
	// the session's API.)
	Token string
	// Open maps a served name (the rules of Files) to a body served at
	// /<name> WITHOUT the token: announcements that devices poll at a URL
	// fixed when they were built (a manifest). Each answer carries
	// Cache-Control no-store and is never a 304; Range is honoured as for
	// Files. SetOpen changes them while the server runs. (Addition.)
	Open map[string][]byte

	stall time.Duration // tests shorten stallTimeout
}

// Fetch is what one request asked and got.
type Fetch struct {
	Name   string // the served name asked for; "" when the path was refused
	Remote string // the fetcher's ip:port
	MAC    string // from x-ESP8266-STA-MAC or x-ESP32-STA-MAC, as AA:BB:CC:DD:EE:FF; "" when the device did not tell (or sent no MAC)
	Status int    // HTTP status sent
	Bytes  int64  // body bytes written
	Range  string // the request's Range header, "" if none

	// Additions to the session's API:
	Method  string // the request's method
	Version string // the device's x-ESP8266-version / x-ESP32-version (Tasmota: version and image); "" when not told
	Length  int64  // the body length announced (Content-Length; 0 for HEAD); Bytes < Length means the transfer was cut
	// Start is when the request came in; Duration how long it took from
	// then to the end of its answer (0 in OnStart). Bytes / Duration is
	// the fetch's rate.
	Start    time.Time
	Duration time.Duration
	// Asked is the name asked for under the right token when no file of
	// that name is served (Status 404, Name ""), cleaned to one line; ""
	// otherwise. A device that derives a name (Tasmota's ".gz" fallback)
	// can so be told what it really asked for. (Addition.)
	Asked string
	// Open: Name is one of the open files (Config.Open), served without
	// the token; a poll, not a fetch of the image. (Addition.)
	Open bool
}

// openFile is one open file's body, as last set.
type openFile struct {
	body []byte
	md5  string
}

// file is one served name, as it was when the server started.
type file struct {
	path    string
	size    int64
	modTime time.Time
	md5     string // lower-case hex: older ESP32 cores compare it case-sensitively
}

// Server is a running file server. Its methods are safe for concurrent use.
type Server struct {
	token   string
	addr    netip.AddrPort // what the listener is bound to
	urlHost netip.AddrPort // what goes into URLs
	files   map[string]file
	onFetch func(Fetch)
	onStart func(Fetch)
	log     *slog.Logger
	stall   time.Duration

	hs     *http.Server
	served chan struct{} // closed when Serve has returned

	mu       sync.Mutex
	closed   bool
	open     map[string]openFile // under mu: SetOpen replaces entries
	inflight sync.WaitGroup
	once     sync.Once
	closeErr error
}

// Start checks the files, hashes them once, and listens now.
func Start(cfg Config) (*Server, error) {
	ap, err := netip.ParseAddrPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("serve address %q is not IP:PORT (an IP address is required, not a host name)", cfg.Addr)
	}
	urlIP := ap.Addr().Unmap()
	if cfg.Advertise.IsValid() {
		urlIP = cfg.Advertise.Unmap()
	} else if urlIP.IsUnspecified() {
		return nil, fmt.Errorf("serve address %s binds every interface: devices need one address to fetch from; bind that address", cfg.Addr)
	}
	if len(cfg.Files) == 0 && len(cfg.Open) == 0 {
		return nil, errors.New("file server: no files to serve")
	}
	s := &Server{
		files:   make(map[string]file, len(cfg.Files)),
		onFetch: cfg.OnFetch,
		onStart: cfg.OnStart,
		log:     cfg.Logger,
		stall:   cmp.Or(cfg.stall, stallTimeout),
		served:  make(chan struct{}),
		open:    map[string]openFile{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Token != "" {
		if !ValidToken(cfg.Token) {
			return nil, errors.New("file server: the URL token to reuse is not one this server makes")
		}
		s.token = cfg.Token
	} else if s.token, err = NewToken(); err != nil {
		return nil, err
	}

	names := slices.Sorted(maps.Keys(cfg.Files)) // the same error first, every run
	for _, name := range names {
		if !validName(name) {
			return nil, fmt.Errorf("cannot serve a file under the name %q: use letters, digits, '.', '_' and '-' (not first)", name)
		}
		// Check every URL against the device limit before reading files;
		// the port may be unknown yet, so count the longest one.
		port := ap.Port()
		if port == 0 {
			port = 65535
		}
		if n := len(s.buildURL(netip.AddrPortFrom(urlIP, port), name)); n > MaxURLLen {
			return nil, fmt.Errorf("the URL for %s would be %d characters, devices take at most %d: serve it under a shorter name", name, n, MaxURLLen)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Open)) {
		if !validName(name) {
			return nil, fmt.Errorf("cannot serve a file under the name %q: use letters, digits, '.', '_' and '-' (not first)", name)
		}
		if body := cfg.Open[name]; body != nil {
			s.open[name] = newOpenFile(body)
		}
	}
	for _, name := range names {
		f, err := hashFile(cfg.Files[name])
		if err != nil {
			return nil, err
		}
		s.files[name] = f
	}

	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("file server cannot listen on %s: %v", ap, unwrapOp(err))
	}
	bound := ln.Addr().(*net.TCPAddr).AddrPort()
	s.addr = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	s.urlHost = netip.AddrPortFrom(urlIP, bound.Port())
	s.hs = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: 15 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		// Let "OPTIONS *" reach the handler (and its 404) like any path.
		DisableGeneralOptionsHandler: true,
		// net/http's own complaints go to Debug; they carry no path.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		_ = s.hs.Serve(smallSendBuffer{ln})
	}()
	s.log.Info("file server listening", "addr", s.addr.String(), "files", names)
	return s, nil
}

// NewToken makes a random URL token (128 bits, 22 characters), for a
// caller that must know the URLs before the server starts. (Addition to
// the session's API.)
func NewToken() (string, error) {
	tok := make([]byte, tokenBytes)
	if _, err := rand.Read(tok); err != nil {
		return "", fmt.Errorf("file server: no randomness for the URL token: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(tok), nil
}

// ValidToken reports whether tok can serve as Config.Token: at least as
// long as NewToken's and URL-safe, so no path can be built around it.
func ValidToken(tok string) bool {
	if len(tok) < base64.RawURLEncoding.EncodedLen(tokenBytes) || len(tok) > 64 {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// URL is where a device fetches name: "http://IP:PORT/<token>/<name>", at
// most MaxURLLen characters. It is "" for a name not served. The URL is
// the secret: hand it to the device, never to a log (see LogURL).
func (s *Server) URL(name string) string {
	if _, ok := s.files[name]; !ok {
		return ""
	}
	return s.buildURL(s.urlHost, name)
}

// LogURL is URL with the token elided, for logs and messages. (Addition
// to the session's API.)
func (s *Server) LogURL(name string) string {
	if _, ok := s.files[name]; !ok {
		return ""
	}
	return "http://" + s.urlHost.String() + "/…/" + name
}

// OpenURL is where a device polls the open file name:
// "http://IP:PORT/<name>", whether it is served now or not; "" for a name
// that cannot be served. It holds no secret. (Addition.)
func (s *Server) OpenURL(name string) string {
	if !validName(name) {
		return ""
	}
	u := url.URL{Scheme: "http", Host: s.urlHost.String(), Path: "/" + name}
	return u.String()
}

// SetOpen serves body at /<name> without the token from now on, replacing
// what was there; a nil body stops serving it (404). A name that breaks
// the rules of Config.Files is not served (logged). Requests under way
// finish with the body they began with. (Addition.)
func (s *Server) SetOpen(name string, body []byte) {
	if !validName(name) {
		s.log.Warn("cannot serve an open file under this name", "name", cleanHeader(name))
		return
	}
	var f openFile
	if body != nil {
		f = newOpenFile(body)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if body == nil {
		delete(s.open, name)
		return
	}
	s.open[name] = f
}

func newOpenFile(body []byte) openFile {
	sum := md5.Sum(body)
	return openFile{body: slices.Clone(body), md5: hex.EncodeToString(sum[:])}
}

// Addr is the address the server is bound to.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Close stops listening, ends transfers in flight (their connections are
// closed) and waits for their handlers, so OnFetch is never called after
// it returns. It is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.closeErr = s.hs.Close()
		<-s.served
		s.inflight.Wait()
		s.log.Debug("file server closed", "addr", s.addr.String())
	})
	return s.closeErr
}

// RouteAddr is the local address this host would send from to reach dst:
// a UDP socket is "connected" to dst, which picks a route and sends no
// packet.
func RouteAddr(dst netip.Addr) (netip.Addr, error) {
	if !dst.IsValid() {
		return netip.Addr{}, errors.New("no device address to find a route to")
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route from this host to %s: %v", dst, unwrapOp(err))
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

func (s *Server) buildURL(host netip.AddrPort, name string) string {
	u := url.URL{Scheme: "http", Host: host.String(), Path: "/" + s.token + "/" + name}
	return u.String()
}

// ValidName reports whether name can be served (Config.Files, Config.Open,
// SetOpen): letters, digits, '.', '_' and '-', not starting with '.', at
// most 64 characters. (Addition.)
func ValidName(name string) bool { return validName(name) }

// validName keeps served names to characters that need no escaping in a
// URL, so a request path either equals /<token>/<name> byte for byte or is
// refused; and no name is "." or "..".
func validName(n string) bool {
	if n == "" || len(n) > 64 || n[0] == '.' {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// hashFile reads path once for its size and MD5 (streamed, not held).
func hashFile(path string) (file, error) {
	f, err := os.Open(path)
	if err != nil {
		return file{}, fmt.Errorf("cannot serve %s: %v", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return file{}, fmt.Errorf("cannot serve %s: %v", path, unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return file{}, fmt.Errorf("cannot serve %s: not a regular file", path)
	}
	h := md5.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return file{}, fmt.Errorf("cannot read %s: %v", path, unwrapPath(err))
	}
	if n != st.Size() {
		return file{}, fmt.Errorf("cannot serve %s: it changed while it was read", path)
	}
	return file{path: path, size: n, modTime: st.ModTime(), md5: hex.EncodeToString(h.Sum(nil))}, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err
		}
		return oe.Err
	}
	return err
}

// serve answers one request.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		// Close has begun: answer nothing (a plain return would send an
		// empty 200); net/http drops the connection without a word.
		panic(http.ErrAbortHandler)
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()

	cw := &countingWriter{w: w}
	fe := Fetch{
		Start:   time.Now(),
		Remote:  r.RemoteAddr,
		MAC:     deviceMAC(r.Header),
		Range:   r.Header.Get("Range"),
		Method:  r.Method,
		Version: deviceVersion(r.Header),
	}
	if name, of, ok := s.lookupOpen(r); ok {
		fe.Name, fe.Open = name, true
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			s.empty(cw, &fe, http.StatusMethodNotAllowed)
		} else {
			s.sendOpen(cw, r, of, &fe)
		}
		fe.Bytes = cw.n
		fe.Duration = time.Since(fe.Start)
		// Devices poll these, maybe thousands of them: Debug, not Info.
		s.log.Debug("device polled an open file", "remote", fe.Remote, "name", fe.Name, "status", fe.Status, "bytes", fe.Bytes)
		if s.onFetch != nil {
			s.onFetch(fe)
		}
		return
	}
	name, f, ok := s.lookup(r)
	switch {
	case !ok:
		fe.Asked = cleanHeader(name)
		s.empty(cw, &fe, http.StatusNotFound)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		fe.Name = name
		w.Header().Set("Allow", "GET, HEAD")
		s.empty(cw, &fe, http.StatusMethodNotAllowed)
	default:
		fe.Name = name
		s.send(cw, r, f, &fe)
	}
	fe.Bytes = cw.n
	fe.Duration = time.Since(fe.Start)

	msg := "device fetched a file"
	if fe.Status >= 400 || fe.Bytes < fe.Length {
		msg = "file request refused or cut"
	}
	attrs := []any{"remote", fe.Remote, "status", fe.Status, "bytes", fe.Bytes}
	if fe.Name != "" {
		attrs = append(attrs, "name", fe.Name)
	}
	if fe.MAC != "" {
		attrs = append(attrs, "mac", fe.MAC)
	}
	if fe.Range != "" {
		attrs = append(attrs, "range", cleanHeader(fe.Range))
	}
	if fe.Version != "" {
		attrs = append(attrs, "version", cleanHeader(fe.Version))
	}
	s.log.Info(msg, attrs...)
	if s.onFetch != nil {
		s.onFetch(fe)
	}
}

// lookup finds the served name a request's path asks for. The path must be
// /<token>/<name> exactly as sent: no percent-encoding, dot segments or
// doubled slashes are interpreted, so none of them can reach a file.
func (s *Server) lookup(r *http.Request) (string, file, bool) {
	p := r.URL.EscapedPath()
	pre := "/" + s.token + "/"
	if len(p) <= len(pre) || p[:len(pre)] != pre {
		s.log.Debug("refused a request: wrong path", "remote", r.RemoteAddr)
		return "", file{}, false
	}
	name := p[len(pre):]
	f, ok := s.files[name]
	if !ok {
		// The token was right; saying which name was asked helps find a
		// device that derives a companion's name (e.g. -minimal) we lack.
		s.log.Debug("refused a request: name not served", "remote", r.RemoteAddr, "name", cleanHeader(name))
		return name, file{}, false
	}
	return name, f, true
}

// lookupOpen finds the open file a request's path asks for: /<name>
// exactly as sent.
func (s *Server) lookupOpen(r *http.Request) (string, openFile, bool) {
	p := r.URL.EscapedPath()
	if len(p) < 2 || p[0] != '/' {
		return "", openFile{}, false
	}
	name := p[1:]
	s.mu.Lock()
	f, ok := s.open[name]
	s.mu.Unlock()
	return name, f, ok
}

// sendOpen answers GET or HEAD for an open file: 200, 206 or 416, never
// 304 (no conditional request is honoured but If-Range), and no-store:
// a device (or a cache between) must read the file again at each poll.
func (s *Server) sendOpen(w *countingWriter, r *http.Request, f openFile, fe *Fetch) {
	h := w.w.Header()
	h.Set("Cache-Control", "no-store")
	ctype := "application/octet-stream"
	if strings.HasSuffix(fe.Name, ".json") {
		ctype = "application/json"
	}
	h.Set("Content-Type", ctype)
	h.Set("Accept-Ranges", "bytes")
	etag := `"` + f.md5 + `"`
	h.Set("ETag", etag)
	size := int64(len(f.body))
	kind, start, length := rangeNone, int64(0), size
	if fe.Range != "" && ifRangeHolds(r.Header.Get("If-Range"), etag) {
		var a, n int64
		kind, a, n = parseRange(fe.Range, size)
		if kind == rangeOne {
			start, length = a, n
		}
	}
	switch kind {
	case rangeUnsatisfiable:
		h.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		h.Del("ETag")
		s.empty(w, fe, http.StatusRequestedRangeNotSatisfiable)
		return
	case rangeOne:
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
		fe.Status = http.StatusPartialContent
	default:
		fe.Status = http.StatusOK
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	fe.Length = length
	w.w.WriteHeader(fe.Status)
	if r.Method == http.MethodHead {
		fe.Length = 0
		return
	}
	_, _ = w.Write(f.body[start : start+length])
}

// send answers GET or HEAD for f: 200, 206 or 416.
func (s *Server) send(w *countingWriter, r *http.Request, f file, fe *Fetch) {
	fd, err := os.Open(f.path)
	if err != nil {
		s.log.Warn("cannot open a served file", "name", fe.Name, "err", unwrapPath(err))
		s.empty(w, fe, http.StatusInternalServerError)
		return
	}
	defer fd.Close()
	if st, err := fd.Stat(); err != nil || st.Size() != f.size || !st.ModTime().Equal(f.modTime) {
		// Its x-MD5 would no longer match: a device would flash it and then
		// reject it, or worse, flash a half-written file. Refuse instead.
		s.log.Warn("a served file changed on disk after the server started; not serving it", "name", fe.Name)
		s.empty(w, fe, http.StatusInternalServerError)
		return
	}

	h := w.w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("x-MD5", f.md5)
	etag := `"` + f.md5 + `"`
	h.Set("ETag", etag)

	kind, start, length := rangeNone, int64(0), f.size
	if fe.Range != "" && ifRangeHolds(r.Header.Get("If-Range"), etag) {
		var k rangeKind
		var a, n int64
		k, a, n = parseRange(fe.Range, f.size)
		kind = k
		if k == rangeOne {
			start, length = a, n
		}
	}
	switch kind {
	case rangeUnsatisfiable:
		h.Set("Content-Range", "bytes */"+strconv.FormatInt(f.size, 10))
		h.Del("x-MD5")
		h.Del("ETag")
		s.empty(w, fe, http.StatusRequestedRangeNotSatisfiable)
		return
	case rangeOne:
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, f.size))
		fe.Status = http.StatusPartialContent
	default:
		fe.Status = http.StatusOK
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	fe.Length = length
	w.w.WriteHeader(fe.Status)
	if r.Method == http.MethodHead {
		fe.Length = 0
		return
	}
	if s.onStart != nil {
		s.onStart(*fe)
	}
	rc := http.NewResponseController(w.w)
	defer rc.SetWriteDeadline(time.Time{}) // a kept-alive connection starts the next answer afresh
	body := io.NewSectionReader(fd, start, length)
	buf := make([]byte, 32<<10)
	for {
		// A deadline per chunk: a slow device is fine, a vanished one is
		// let go after stallTimeout of no progress.
		_ = rc.SetWriteDeadline(time.Now().Add(s.stall))
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				s.log.Debug("transfer ended early", "name", fe.Name, "remote", fe.Remote, "bytes", w.n)
				return
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			s.log.Warn("cannot read a served file", "name", fe.Name, "err", unwrapPath(rerr))
			return
		}
	}
}

// ifRangeHolds says whether a Range may be honoured given If-Range: only
// when there is none, or it names this file's ETag. A date never matches
// (no Last-Modified is sent), so the whole file goes out, as RFC 9110
// §13.1.5 asks.
func ifRangeHolds(ifRange, etag string) bool {
	return ifRange == "" || ifRange == etag
}

// empty answers status with no body.
func (s *Server) empty(w *countingWriter, fe *Fetch, status int) {
	w.w.Header().Set("Content-Length", "0")
	w.w.WriteHeader(status)
	fe.Status = status
}

// deviceMAC is the station MAC an ESP updater sends, normalised, or "".
func deviceMAC(h http.Header) string {
	for _, k := range []string{"x-ESP8266-STA-MAC", "x-ESP32-STA-MAC"} {
		v := h.Get(k)
		if v == "" {
			continue
		}
		hw, err := net.ParseMAC(v)
		if err != nil || len(hw) != 6 {
			return ""
		}
		return fmt.Sprintf("%02X:%02X:%02X:%02X:%02X:%02X", hw[0], hw[1], hw[2], hw[3], hw[4], hw[5])
	}
	return ""
}

// deviceVersion is the version an ESP updater sends when its sketch gave
// one, cleaned for one line, or "".
func deviceVersion(h http.Header) string {
	for _, k := range []string{"x-ESP8266-version", "x-ESP32-version"} {
		if v := h.Get(k); v != "" {
			return cleanHeader(v)
		}
	}
	return ""
}

// cleanHeader makes request text safe for one log line.
func cleanHeader(v string) string { return oneline.Clean(v, 80) }

type countingWriter struct {
	w http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// sendBuffer bounds what a connection's kernel buffer holds ahead of the
// device. A fetch reported complete then means the device has nearly all of
// it: with the kernel's default (megabytes on loopback and fast LANs) the
// whole image is "sent" while an ESP, whose TCP window is a few KiB, is
// still writing it to flash, and its restart looks late by that long. It
// costs nothing: the device's window, not this buffer, bounds the rate.
const sendBuffer = 32 << 10

// smallSendBuffer gives every accepted TCP connection sendBuffer.
type smallSendBuffer struct{ net.Listener }

func (l smallSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(sendBuffer)
	}
	return c, err
}
