package detect

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Answer is what a device answered one HTTP probe.
type Answer struct {
	// Status is the HTTP status; 0 when the answer was not HTTP or none.
	Status int
	// Header holds the response headers (canonical keys).
	Header http.Header
	// Body is the body, gunzipped when the device sent it gzip-encoded
	// (ElegantOTA always does), cut at maxBody.
	Body []byte
	// Gzip: the body came with Content-Encoding: gzip.
	Gzip bool
	// Raw holds the first bytes of an answer that is not HTTP.
	Raw []byte
	// None: no answer at all (refused, silence, or closed before a byte).
	None bool
	// Note says in a few words what went wrong, for logs.
	Note string
}

// maxBody bounds what is read (and gunzipped) of an answer: the pages
// fingerprinted are a few KiB; ElegantOTA's gzipped page is under 100 KiB.
const maxBody = 512 << 10

// request sends one probe to addr and reads the answer. It writes the
// request by hand so that what goes on the wire is exactly the probe:
// no Authorization, no cookies, no Accept-Encoding, no body, one request
// per connection. Redirects are not followed.
func request(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), addr string, p Probe, timeout time.Duration) Answer {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dial(rctx, "tcp", addr)
	if err != nil {
		return Answer{None: true, Note: "connect: " + PortAnswer{Kind: Failed, Err: err, TimedOut: rctx.Err() != nil}.Words()}
	}
	defer c.Close()
	if dl, ok := rctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(rctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	host, _, _ := net.SplitHostPort(addr)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ots-ota\r\nAccept: */*\r\nConnection: close\r\n", p.Method, p.Target, addr)
	if p.Referer {
		// Tasmota serves /cm only to a Referer naming the device
		// (uploaders.md §6).
		fmt.Fprintf(&b, "Referer: http://%s/\r\n", hostForURL(host))
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		return Answer{None: true, Note: "send: " + err.Error()}
	}
	br := bufio.NewReader(c)
	first, err := br.Peek(1)
	if err != nil {
		if rctx.Err() != nil {
			return Answer{None: true, Note: "no answer within " + timeout.String()}
		}
		return Answer{None: true, Note: "closed without an answer"}
	}
	if first[0] != 'H' {
		// Not HTTP: ESPHome's native OTA answers any 5 bytes that are not
		// its magic with one error byte (0x80) and closes.
		raw, _ := br.Peek(br.Buffered())
		return Answer{Raw: bytes.Clone(raw[:min(len(raw), 16)]), Note: "not an HTTP answer"}
	}
	method := p.Method
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		raw, _ := br.Peek(br.Buffered())
		return Answer{Raw: bytes.Clone(raw[:min(len(raw), 16)]), Note: "not an HTTP answer"}
	}
	defer resp.Body.Close()
	a := Answer{Status: resp.StatusCode, Header: resp.Header}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if strings.EqualFold(strings.TrimSpace(resp.Header.Get("Content-Encoding")), "gzip") {
		a.Gzip = true
		if zr, err := gzip.NewReader(bytes.NewReader(body)); err == nil {
			// A body cut at maxBody still gives its beginning.
			plain, _ := io.ReadAll(io.LimitReader(zr, maxBody))
			body = plain
		}
	}
	a.Body = body
	return a
}

// hostForURL puts an IPv6 literal in brackets.
func hostForURL(h string) string {
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		return "[" + h + "]"
	}
	return h
}
