package testkit

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// WebDevice is a loopback stand-in for an Arduino web server (WebServer,
// ESP8266WebServer) that reads a multipart upload the way their parser does
// (research: an upload part is a file only with a filename=, the one part
// header it skips is Content-Type, the file ends at "\r\n--boundary"), and
// answers what Reply says. It keeps no copy of the file: only its size and
// MD5, so a test can measure the client's allocations with it running.
type WebDevice struct {
	// Reply is the raw HTTP answer to a request read whole ("" closes
	// without an answer). nil answers 200 "OK".
	Reply func(r *WebRequest) string
	// StopAt, when > 0, makes the device stop reading a body after that
	// many bytes: CutAt then resets the connection, else it stalls until
	// the client goes away.
	StopAt int64
	Cut    bool
	// Control configures the listening socket (SmallWindow).
	Control func(network, address string, c syscall.RawConn) error

	// Addr is where it listens (127.0.0.1:port), once started.
	Addr string

	mu   sync.Mutex
	reqs []WebRequest
	wg   sync.WaitGroup
}

// WebRequest is one request as the device parsed it.
type WebRequest struct {
	Method, Target string
	Header         textproto.MIMEHeader
	// The file part, when the body was multipart: the name= and
	// filename= of its Content-Disposition, its Content-Type ("" when it
	// had none), its size and MD5.
	Field, Filename, PartType string
	FileSize                  int64
	FileMD5                   string
	// Parts counts the parts before the file that were not files.
	Parts int
	// BodyRead is how many body bytes the device read.
	BodyRead int64
	// ParseErr is what broke the parse ("" when nothing did).
	ParseErr string
}

// StartWebDevice starts d on 127.0.0.1 and stops it when the test ends.
func StartWebDevice(t testing.TB, d *WebDevice) *WebDevice {
	t.Helper()
	lc := net.ListenConfig{Control: d.Control}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.Addr = ln.Addr().String()
	done := make(chan struct{})
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				defer c.Close()
				d.serve(c, done)
			}()
		}
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
		d.wg.Wait()
	})
	return d
}

// Requests are the requests read so far, in order.
func (d *WebDevice) Requests() []WebRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]WebRequest(nil), d.reqs...)
}

// WaitRequests waits (up to 10 s) until n requests were read.
func (d *WebDevice) WaitRequests(t testing.TB, n int) []WebRequest {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if r := d.Requests(); len(r) >= n {
			return r
		}
	}
	t.Fatalf("the device read %d requests, want %d", len(d.Requests()), n)
	return nil
}

func (d *WebDevice) serve(c net.Conn, done <-chan struct{}) {
	br := bufio.NewReaderSize(c, 4<<10)
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return
	}
	var r WebRequest
	var proto string
	r.Method, r.Target, proto = split3(line)
	if !strings.HasPrefix(proto, "HTTP/1.") {
		return
	}
	if r.Header, err = tp.ReadMIMEHeader(); err != nil {
		return
	}
	n, _ := strconv.ParseInt(r.Header.Get("Content-Length"), 10, 64)
	body := &countReader{r: br, left: n}
	if d.StopAt > 0 && n > d.StopAt {
		body.left = d.StopAt
	}
	if ct := r.Header.Get("Content-Type"); n > 0 && strings.HasPrefix(ct, "multipart/") {
		parseUpload(&r, bufio.NewReaderSize(body, 4<<10), ct)
	}
	_, _ = io.Copy(io.Discard, body)
	r.BodyRead = body.read
	d.mu.Lock()
	d.reqs = append(d.reqs, r)
	d.mu.Unlock()
	if d.StopAt > 0 && n > d.StopAt {
		if d.Cut {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			return
		}
		<-done // stall: the client gives up, or the test ends
		return
	}
	reply := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"
	if d.Reply != nil {
		reply = d.Reply(&r)
	}
	if reply != "" {
		_, _ = io.WriteString(c, reply)
	}
}

func split3(s string) (a, b, c string) {
	a, rest, _ := strings.Cut(s, " ")
	b, c, _ = strings.Cut(rest, " ")
	return a, b, c
}

type countReader struct {
	r    io.Reader
	left int64
	read int64
}

func (c *countReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	c.read += int64(n)
	return n, err
}

// parseUpload reads a multipart body as Arduino's WebServer does
// (ESP8266WebServer Parsing-impl.h, arduino-esp32 Parsing.cpp): the
// boundary is everything after the Content-Type's first "=", quotes
// removed; the body starts with "--boundary"; a part is a file only when
// its Content-Disposition has a second "="; after it comes either a
// Content-Type line and a blank line, or the blank line; any other part
// header breaks the parse.
func parseUpload(r *WebRequest, br *bufio.Reader, ct string) {
	_, boundary, ok := strings.Cut(ct, "=")
	boundary = strings.Trim(boundary, `"`)
	if !ok || boundary == "" {
		r.ParseErr = "no boundary"
		return
	}
	line := func() string {
		l, err := br.ReadString('\n')
		if err != nil {
			return "\x00" + err.Error()
		}
		return strings.TrimRight(l, "\r\n")
	}
	first := line()
	if first != "--"+boundary {
		r.ParseErr = fmt.Sprintf("first line %q is not the boundary", first)
		return
	}
	for {
		disp := line()
		if !strings.HasPrefix(strings.ToLower(disp), "content-disposition") {
			r.ParseErr = fmt.Sprintf("part starts %q, not Content-Disposition", disp)
			return
		}
		nameAt := strings.Index(disp, `name="`)
		if nameAt < 0 {
			r.ParseErr = "no name= in " + disp
			return
		}
		name, _, _ := strings.Cut(disp[nameAt+6:], `"`)
		isFile := strings.Count(disp, "=") >= 2
		next := line()
		partType := ""
		if next != "" {
			k, v, _ := strings.Cut(next, ":")
			if !strings.EqualFold(k, "Content-Type") {
				r.ParseErr = fmt.Sprintf("part header %q is neither Content-Type nor the blank line", next)
				return
			}
			partType = strings.TrimSpace(v)
			if blank := line(); blank != "" {
				r.ParseErr = fmt.Sprintf("after the part's Content-Type came %q, not the blank line", blank)
				return
			}
		}
		if !isFile {
			// A text part: read line by line up to the next boundary.
			for {
				l := line()
				if strings.HasPrefix(l, "\x00") {
					r.ParseErr = "body ended inside a text part"
					return
				}
				if l == "--"+boundary {
					break
				}
				if l == "--"+boundary+"--" {
					r.ParseErr = "no file part"
					return
				}
			}
			r.Parts++
			continue
		}
		r.Field, r.PartType = name, partType
		if i := strings.Index(disp, `filename="`); i >= 0 {
			r.Filename, _, _ = strings.Cut(disp[i+10:], `"`)
		}
		h := md5.New()
		size, err := copyUntil(h, br, []byte("\r\n--"+boundary))
		r.FileSize, r.FileMD5 = size, hex.EncodeToString(h.Sum(nil))
		if err != nil {
			r.ParseErr = "file part not closed: " + err.Error()
			return
		}
		if end := line(); end != "--" {
			r.ParseErr = fmt.Sprintf("after the file came %q, not the closing boundary", end)
		}
		return
	}
}

// copyUntil writes what br holds before delim to h (no copy kept) and
// consumes delim. delim starts with its only '\r', so a partial match
// that fails is all data.
func copyUntil(h hash.Hash, br *bufio.Reader, delim []byte) (int64, error) {
	var n int64
	var buf [4 << 10]byte
	fill := 0
	flush := func() {
		h.Write(buf[:fill])
		n += int64(fill)
		fill = 0
	}
	put := func(b byte) {
		if fill == len(buf) {
			flush()
		}
		buf[fill] = b
		fill++
	}
	matched := 0
	for {
		c, err := br.ReadByte()
		if err != nil {
			flush()
			return n, errors.New("no closing boundary")
		}
		if c == delim[matched] {
			if matched++; matched == len(delim) {
				flush()
				return n, nil
			}
			continue
		}
		for _, b := range delim[:matched] {
			put(b)
		}
		matched = 0
		if c == delim[0] {
			matched = 1
			continue
		}
		put(c)
	}
}

// Reply is a raw HTTP/1.1 answer with a Content-Length and
// Connection: close; headers are extra "Name: value" lines.
func Reply(status int, ctype, body string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, statusText(status))
	if ctype != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", ctype)
	}
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	return b.String()
}

func statusText(s int) string {
	switch s {
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 404:
		return "Not Found"
	case 500:
		return "Internal Server Error"
	}
	return "Status"
}
